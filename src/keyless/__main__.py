"""``python -m keyless`` runs the command line."""

from keyless.cli.entry import main

main()
