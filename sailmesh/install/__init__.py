"""Installing sailmesh on Kubernetes: Istio's CRDs, the control plane, gateways and webhook configurations."""
