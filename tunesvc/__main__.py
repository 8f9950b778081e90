"""`python -m tunesvc` is the `tunesvc` command."""

from tunesvc.cli._app import main

main()
