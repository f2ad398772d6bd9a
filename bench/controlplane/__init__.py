"""Control-plane benchmark: push and convergence times, CPU and memory of `sailmesh controlplane` under load."""
