"""``python -m keyless`` runs the command line."""

from keyless.cli.main import main

main()
