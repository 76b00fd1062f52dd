"""`python -m studies.interleaved --config studies/interleaved/configs/cpu.toml`: document representations, coarse to
fine and table linearisation on TAT-QA report pages; writes reports/interleaved.md and .json (resumable)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from routerank.fsutil import atomic_write
from studies.cli import parse_kinds, run_main, study_parser
from studies.interleaved.config import InterleavedConfig
from studies.interleaved.report import markdown
from studies.interleaved.study import KINDS, InterleavedStudy


def run(args: argparse.Namespace) -> None:
    """Run the plan, then write the report from whatever stages are done."""
    study = InterleavedStudy(InterleavedConfig.load(args.config), args.work_dir)
    for stage in study.run(args.max_minutes, parse_kinds(args.only, KINDS)):
        print(f"{stage.name:20s} {stage.note}", file=sys.stderr)
    results = study.results()
    command = f"python -m studies.interleaved --config {args.config}"
    with atomic_write(args.report.with_suffix(".json")) as out:
        json.dump(
            {"config": str(args.config), "work_dir": "<cache>/interleaved/" + study.work.name, **results}, out, indent=1
        )
    with atomic_write(args.report) as out:
        out.write(markdown(results, command))
    print(f"wrote {args.report} and {args.report.with_suffix('.json')}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    """The study's command line."""
    parser = study_parser(
        "python -m studies.interleaved",
        __doc__,
        config_example="studies/interleaved/configs/cpu.toml",
        work_dir_help="where stages keep their results (default: <cache>/interleaved/<profile>-<digest>)",
        report="reports/interleaved.md",
        report_help="the Markdown report; the JSON goes beside it",
        only_kinds=KINDS,
    )
    run_main(parser, run, argv)


if __name__ == "__main__":
    main()
