"""Istio's `istio-iptables` in Python: the nat rules that send a pod's traffic through its sidecar (rules.py) and
applying them with `iptables-restore` (apply.py); `sailmesh iptables` (alias `istio-iptables`) is the command."""
