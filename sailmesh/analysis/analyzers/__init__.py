"""Every analyzer, one module per concern (mirroring Istio's pkg/config/analysis/analyzers)."""
