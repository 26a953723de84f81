"""``python -m aiaas`` runs the CLI."""

from aiaas.cli import main

main()
