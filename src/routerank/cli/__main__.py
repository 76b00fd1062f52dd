"""`python -m routerank.cli`."""

from routerank.cli import main

main()
