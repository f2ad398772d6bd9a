"""The `sailmesh` command line (istioctl/kubectl-style verbs)."""
