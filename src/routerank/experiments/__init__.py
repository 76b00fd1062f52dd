"""Reproducible experiments that write reports/ (each one a `python -m routerank.experiments.<name>`)."""
