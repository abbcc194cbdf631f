"""The keyless benchmark: ``bench/run`` measures the limits, keyless, a peer and the CLI in one run."""
