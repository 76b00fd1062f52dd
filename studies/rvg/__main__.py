"""`python -m studies.rvg --config studies/rvg/configs/cpu.toml`: retrieved against generated context for question
answering, ranking and language modelling; writes reports/retrieval-vs-generation.md, .json and .png (resumable)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from routerank.fsutil import atomic_write
from studies.cli import parse_kinds, run_main, study_parser
from studies.rvg.config import RvgConfig
from studies.rvg.report import figure, markdown
from studies.rvg.study import KINDS, RvgStudy


def run(args: argparse.Namespace) -> None:
    """Run the plan, then write the report from whatever stages are done."""
    study = RvgStudy(RvgConfig.load(args.config), args.work_dir)
    for stage in study.run(args.max_minutes, parse_kinds(args.only, KINDS)):
        print(f"{stage.name:24s} {stage.note}", file=sys.stderr)
    results = study.results()
    drawn = figure(results, args.report.with_suffix(".png"))
    with atomic_write(args.report.with_suffix(".json")) as out:
        json.dump(
            {"config_file": str(args.config), "work_dir": "<cache>/rvg/" + study.work.name, **results}, out, indent=1
        )
    with atomic_write(args.report) as out:
        out.write(markdown(results, f"python -m studies.rvg --config {args.config}", drawn.name if drawn else None))
    print(f"wrote {args.report}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    """The study's command line."""
    parser = study_parser(
        "python -m studies.rvg",
        __doc__,
        config_example="studies/rvg/configs/cpu.toml",
        work_dir_help="where stages keep their results (default: <cache>/rvg/<profile>-<digest>)",
        report="reports/retrieval-vs-generation.md",
        report_help="the Markdown report; the JSON and the figure go beside it",
        only_kinds=KINDS,
    )
    run_main(parser, run, argv)


if __name__ == "__main__":
    main()
