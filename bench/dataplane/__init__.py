"""The data-plane benchmark harness: set-ups (1)-(4), load generators, measurements, report."""
