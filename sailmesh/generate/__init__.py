"""Pure translators from (MeshSnapshot, ProxyView) to Envoy protos."""
