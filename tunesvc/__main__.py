"""`python -m tunesvc` is the `tunesvc` command."""

from tunesvc.cli import main

main()
