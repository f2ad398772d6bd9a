"""The control-plane process: wires store, registry, snapshots, generators, the ADS server and debounce."""
