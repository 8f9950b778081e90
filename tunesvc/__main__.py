"""`python -m tunesvc` is the `tunesvc` command."""

from tunesvc._cli import main

main()
