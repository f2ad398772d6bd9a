"""Istio's Go-side validation semantics (beyond the CRD schema), one module per API group."""
