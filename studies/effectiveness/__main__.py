"""`python -m studies.effectiveness --config studies/effectiveness/configs/effectiveness.toml [--markdown]`: every
reranker over BM25 and hybrid candidates, plain and dev-interpolated, with paired tests (resumable)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from studies.cli import parse_kinds, run_main, study_parser
from studies.effectiveness.config import EffectivenessConfig
from studies.effectiveness.experiment import EffectivenessExperiment
from studies.effectiveness.report import markdown, write_report

KINDS = ("dev", "first", "rerank", "alpha")


def run(args: argparse.Namespace) -> None:
    """Run the plan (or the `--only` kinds of it), write the JSON report, and print the table with --markdown."""
    kinds = parse_kinds(args.only, KINDS)
    experiment = EffectivenessExperiment(EffectivenessConfig.load(args.config), args.work_dir, ray=args.ray)
    stages = experiment.run(args.max_minutes, kinds)
    result = write_report(experiment, args.report, stages)
    if args.markdown:
        print(markdown(result))
    print(f"wrote {args.report}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line."""
    parser = study_parser(
        "python -m studies.effectiveness",
        "Every reranker over BM25 and hybrid candidates, plain and dev-interpolated, with paired tests; resumable.",
        config_example="studies/effectiveness/configs/effectiveness.toml",
        work_dir_help="stages live here (default: cache/effectiveness/HASH)",
        report="reports/effectiveness.json",
        report_help="JSON report",
        only_kinds=KINDS,
        ray=True,
    )
    parser.add_argument("--markdown", action="store_true", help="print the README table")
    run_main(parser, run, argv)


if __name__ == "__main__":
    main()
