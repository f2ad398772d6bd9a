"""Fuzzing of everything that reads untrusted input: config files, the HTTP API, xDS requests (hypothesis).

The suite runs each target with a few dozen examples (tests/unit/test_fuzz_*.py); `python -m bench.fuzz` runs
thousands. Strategies are in strategies.py, the properties checked in targets.py.
"""
