"""The per-workload agent: Envoy bootstrap, process lifecycle and drain, health and readiness."""
