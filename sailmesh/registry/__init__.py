"""Service registry: core Services, ServiceEntry, WorkloadEntry/Group and local workloads."""
