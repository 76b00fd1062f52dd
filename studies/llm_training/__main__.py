"""`python -m studies.llm_training --config studies/llm_training/configs/llm-training-cpu.toml`: issue 12's SFT,
contrastive, DeAR, ProRank and Rank-R1 on one backbone, scored and compared (resumable)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from studies.cli import run_main, study_parser
from studies.llm_training.collect import read_carried
from studies.llm_training.config import ONLY_KINDS, LLMTrainingConfig, parse_only
from studies.llm_training.experiment import LLMTrainingExperiment
from studies.llm_training.report import write_report


def run(args: argparse.Namespace) -> None:
    """Run the plan (or the `--systems` rows of it) and write the report; `--carry-from` names an earlier report's
    JSON whose rows fill in the systems that have no run in this work dir."""
    kinds = parse_only(args.only)
    experiment = LLMTrainingExperiment(LLMTrainingConfig.load(args.config), args.work_dir)
    picked = experiment.pick_systems(args.systems)
    carried = read_carried(experiment, Path(args.carry_from)) if args.carry_from is not None else None
    stages = experiment.run(args.max_minutes, kinds, picked)
    path = write_report(experiment, stages, Path(args.report), args.config, carried=carried)
    print(f"wrote {path}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line."""
    parser = study_parser(
        "python -m studies.llm_training",
        "Issue 12: SFT, contrastive, DeAR, ProRank and Rank-R1 on one backbone, scored and compared; resumable.",
        config_example="studies/llm_training/configs/llm-training-cpu.toml",
        work_dir_help="stages go here (default: cache/llm-training/PROFILE)",
        report="reports/llm-training.md",
        report_help="markdown report; JSON and figures beside it",
        only_kinds=ONLY_KINDS,
    )
    parser.add_argument("--systems", help="run only these rows' stages, e.g. rank-r1,zero-shot")
    parser.add_argument(
        "--carry-from",
        type=Path,
        help="an earlier report's JSON (same protocol): its rows fill the unscored ones",
    )
    run_main(parser, run, argv)


if __name__ == "__main__":
    main()
