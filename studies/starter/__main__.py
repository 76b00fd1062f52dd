"""`python -m studies.starter --config studies/starter/configs/cpu.toml`: train, measure and ship the starter bundle
(resumable: rerun the same command after a break).

Without `--ship` the build stops after measuring; `--ship` writes the manifest (checksums, training record,
figures) and copies the bundle into the package (`src/routerank/starter/bundle`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from studies.cli import parse_kinds, run_main, study_parser
from studies.starter.build import StarterBuild
from studies.starter.config import StarterConfig
from studies.starter.report import markdown

KINDS = ("train", "route", "tune", "test", "compare")
PACKAGE_BUNDLE = Path(__file__).resolve().parents[2] / "src" / "routerank" / "starter" / "bundle"


def run(args: argparse.Namespace) -> None:
    """Run the plan (or the `--only` kinds), then, with --ship, write the manifest and ship the bundle."""
    build = StarterBuild(StarterConfig.load(args.config), args.work_dir)
    stages = build.run(args.max_minutes, parse_kinds(args.only, KINDS))
    for stage in stages:
        print(f"{stage.name:24s} {stage.note}", file=sys.stderr)
    if not all(stage.done for stage in stages):
        print("the build is not finished: rerun the same command to go on", file=sys.stderr)
        return
    if args.ship:
        manifest = build.ship(args.ship_to)
        print(markdown(manifest["figures"]["test"]))
        print(f"shipped {manifest['size_mb']} MB to {args.ship_to}", file=sys.stderr)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        build.write_json(args.report, manifest)
        print(f"wrote {args.report}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line."""
    parser = study_parser(
        "python -m studies.starter",
        "Train, measure and ship the starter bundle; resumable.",
        config_example="studies/starter/configs/cpu.toml",
        work_dir_help="stages live here (default: cache/starter-build/PROFILE-HASH)",
        report="reports/starter.json",
        report_help="the shipped manifest, kept as the run's report",
        only_kinds=KINDS,
    )
    parser.add_argument("--ship", action="store_true", help="write the manifest and copy the bundle into the package")
    parser.add_argument("--ship-to", type=Path, default=PACKAGE_BUNDLE, help="where --ship copies the bundle")
    run_main(parser, run, argv)


if __name__ == "__main__":
    main()
