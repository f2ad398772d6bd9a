"""Istio standard metrics, tracing and access-log configuration."""
