"""`python -m studies.omni --config studies/omni/configs/cpu.toml`: query understanding on hotpotqa-500 and the
noisy multi-intent benchmark; writes reports/omni-rag.md, .json and .png (resumable)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from studies.cli import run_main, run_stages, staged_parser, write_report
from studies.omni.config import OmniConfig
from studies.omni.report import figure, markdown
from studies.omni.study import KINDS, OmniStudy


def run(args: argparse.Namespace) -> None:
    """Run the plan, then write the report from whatever stages are done."""
    study = OmniStudy(OmniConfig.load(args.config), args.work_dir)
    results = run_stages(study, args, KINDS, width=12)
    drawn = figure(results, args.report.with_suffix(".png"))
    text = markdown(results, f"python -m studies.omni --config {args.config}", drawn.name if drawn else None)
    write_report(args, study, results, text)


def main(argv: Sequence[str] | None = None) -> None:
    """The study's command line."""
    run_main(staged_parser("omni", __doc__, "reports/omni-rag.md", KINDS), run, argv)


if __name__ == "__main__":
    main()
