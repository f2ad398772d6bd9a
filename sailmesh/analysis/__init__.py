"""Cross-resource analyzers with Istio's IST message codes (istioctl analyze)."""
