"""Platforms that run workloads: the local process supervisor (embedded mode)."""
