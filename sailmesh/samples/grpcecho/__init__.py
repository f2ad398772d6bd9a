"""A gRPC echo service for trying gRPC through the mesh (no generated stubs: raw bytes in, the same bytes out)."""
