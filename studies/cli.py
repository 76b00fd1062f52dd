"""The command line every study shares: `python -m studies.<name> --config ...`.

`study_parser` adds the common options (`--config`, `--work-dir`, `--report`, `--max-minutes`, `--only`, and `--ray`
where the study can run on Ray) with the defaults and help the old `routerank experiment <name>` commands had;
`run_main` turns a `RouterankError` into one line `routerank: error: ...` on stderr and exit code 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from routerank.errors import RouterankError, SpecError
from routerank.fsutil import atomic_write

RAY_HELP = (
    "run dense encoding and reranking in shards on Ray: alone, a local Ray on this machine's cores; with ADDRESS, "
    "that cluster"
)


def study_parser(
    prog: str,
    description: str | None,
    *,
    config_example: str,
    work_dir_help: str,
    report: str,
    report_help: str,
    only_kinds: Sequence[str],
    ray: bool = False,
) -> argparse.ArgumentParser:
    """A parser with the options every study has; `only_kinds` are the stage kinds `--only` may name."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help=f"TOML config, e.g. {config_example}")
    parser.add_argument("--work-dir", type=Path, help=work_dir_help)
    parser.add_argument("--report", type=Path, default=Path(report), help=f"{report_help} (default: {report})")
    parser.add_argument("--max-minutes", type=float, help="start no new stage after this long")
    parser.add_argument("--only", help=f"run only these stage kinds: {','.join(only_kinds)}")
    if ray:
        parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help=RAY_HELP)
    return parser


def parse_kinds(only: str | None, kinds: Sequence[str]) -> set[str] | None:
    """`--only train,score` as a set (None: every kind); a kind outside `kinds` is an error."""
    picked = {k.strip() for k in only.split(",") if k.strip()} if only else None
    if picked is not None and not picked <= set(kinds):
        stray = sorted(picked - set(kinds))
        raise SpecError(f"unknown stage kinds {stray} in --only {only!r}", fix=f"a comma list of {', '.join(kinds)}")
    return picked


def run_main(
    parser: argparse.ArgumentParser, action: Callable[[argparse.Namespace], None], argv: Sequence[str] | None
) -> None:
    """Parse `argv` and run `action`; bad input becomes one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    try:
        action(args)
    except RouterankError as exc:
        print(f"routerank: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("routerank: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def staged_parser(name: str, doc: str | None, report: str, kinds: Sequence[str], *, figure: bool = True):
    """The parser of a staged study `studies.<name>` with a `configs/cpu.toml`, a work dir under
    `<cache>/<name>/`, and a Markdown report (with its JSON, and its figure when `figure`, beside it)."""
    beside = "the JSON and the figure go beside it" if figure else "the JSON goes beside it"
    return study_parser(
        f"python -m studies.{name}",
        doc,
        config_example=f"studies/{name}/configs/cpu.toml",
        work_dir_help=f"where stages keep their results (default: <cache>/{name}/<profile>-<digest>)",
        report=report,
        report_help=f"the Markdown report; {beside}",
        only_kinds=kinds,
    )


def run_stages(study, args: argparse.Namespace, kinds: Sequence[str], width: int = 20) -> dict:
    """Run a study's plan (`--max-minutes`, `--only`), printing each stage's note, and return its results."""
    for stage in study.run(args.max_minutes, parse_kinds(args.only, kinds)):
        print(f"{stage.name:{width}s} {stage.note}", file=sys.stderr)
    return study.results()


def write_report(args: argparse.Namespace, study, results: dict, markdown: str, config_key: str = "config") -> None:
    """The report's JSON (the results, the config file and the work dir, cache root left out) and its Markdown,
    each written atomically beside `args.report`."""
    record = {config_key: str(args.config), "work_dir": f"<cache>/{study.FOLDER}/{study.work.name}", **results}
    with atomic_write(args.report.with_suffix(".json")) as out:
        json.dump(record, out, indent=1)
    with atomic_write(args.report) as out:
        out.write(markdown)
    print(f"wrote {args.report} and {args.report.with_suffix('.json')}", file=sys.stderr)
