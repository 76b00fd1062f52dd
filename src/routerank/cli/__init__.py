"""The `routerank` command. Bad input becomes one line on stderr and exit code 2, never a traceback.

One module per command group: `core` holds the root app and its own commands, `train` the trainers, `r3ag` R3AG's
labels; `common` the options and helpers they share. The studies (staged experiments that write reports/) are not
part of the installed package and are never imported here: they run from a checkout as `python -m studies.<name>`."""

from __future__ import annotations

import sys

from routerank.cli.core import app
from routerank.cli.r3ag import r3ag_app
from routerank.cli.train import train_app
from routerank.errors import RouterankError

app.add_typer(train_app, name="train")
app.add_typer(r3ag_app, name="r3ag")

__all__ = ["app", "main", "normalise_ray_flag"]


def normalise_ray_flag(argv: list[str]) -> list[str]:
    """`--ray` alone means a local Ray: give it the value `local` so that the option parser sees one."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--ray" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out[i] = "--ray=local"
    return out


def main() -> None:
    try:
        app(args=normalise_ray_flag(sys.argv[1:]), standalone_mode=True)
    except RouterankError as exc:
        print(f"routerank: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("routerank: interrupted", file=sys.stderr)
        sys.exit(130)
