"""Public test helpers: process fixtures, free ports, polling with a deadline."""
