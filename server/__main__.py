"""`python -m server` is the `extension-server` command."""

from server.cli import main

main()
