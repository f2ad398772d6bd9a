"""MeshSnapshot: immutable indexes of config, services and endpoints; ProxyView: one proxy's scope."""
