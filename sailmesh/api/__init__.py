"""Istio and core resource models, parsing and per-resource validation."""
