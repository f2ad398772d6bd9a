"""Admission webhooks on :15017: validation of Istio config and sidecar injection (Istio's istiod webhooks)."""
