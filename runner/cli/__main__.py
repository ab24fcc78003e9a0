"""`python -m runner.cli` is `exprun`."""

from runner.cli.app import main

main()
