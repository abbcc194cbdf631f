"""The ``keyless`` command line."""
