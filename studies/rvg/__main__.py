"""`python -m studies.rvg --config studies/rvg/configs/cpu.toml`: retrieved against generated context for question
answering, ranking and language modelling; writes reports/retrieval-vs-generation.md, .json and .png (resumable)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from studies.cli import run_main, run_stages, staged_parser, write_report
from studies.rvg.config import RvgConfig
from studies.rvg.report import figure, markdown
from studies.rvg.study import KINDS, RvgStudy


def run(args: argparse.Namespace) -> None:
    """Run the plan, then write the report from whatever stages are done."""
    study = RvgStudy(RvgConfig.load(args.config), args.work_dir)
    results = run_stages(study, args, KINDS, width=24)
    drawn = figure(results, args.report.with_suffix(".png"))
    text = markdown(results, f"python -m studies.rvg --config {args.config}", drawn.name if drawn else None)
    write_report(args, study, results, text, config_key="config_file")


def main(argv: Sequence[str] | None = None) -> None:
    """The study's command line."""
    run_main(staged_parser("rvg", __doc__, "reports/retrieval-vs-generation.md", KINDS), run, argv)


if __name__ == "__main__":
    main()
