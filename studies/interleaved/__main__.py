"""`python -m studies.interleaved --config studies/interleaved/configs/cpu.toml`: document representations, coarse to
fine and table linearisation on TAT-QA report pages; writes reports/interleaved.md and .json (resumable)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from studies.cli import run_main, run_stages, staged_parser, write_report
from studies.interleaved.config import InterleavedConfig
from studies.interleaved.report import markdown
from studies.interleaved.study import KINDS, InterleavedStudy


def run(args: argparse.Namespace) -> None:
    """Run the plan, then write the report from whatever stages are done."""
    study = InterleavedStudy(InterleavedConfig.load(args.config), args.work_dir)
    results = run_stages(study, args, KINDS)
    write_report(args, study, results, markdown(results, f"python -m studies.interleaved --config {args.config}"))


def main(argv: Sequence[str] | None = None) -> None:
    """The study's command line."""
    run_main(staged_parser("interleaved", __doc__, "reports/interleaved.md", KINDS, figure=False), run, argv)


if __name__ == "__main__":
    main()
