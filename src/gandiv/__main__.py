"""`python -m gandiv ...` is the `gandiv` command."""

from gandiv.cli import main

main()
