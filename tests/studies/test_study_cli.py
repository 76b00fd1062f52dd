"""`python -m studies.<name>`: the common options, and bad input as one line `routerank: error: ...` with exit code 2.
The installed `routerank` command never imports the studies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from studies.effectiveness.__main__ import main as effectiveness
from studies.llm_training.__main__ import main as llm_training
from studies.r2r.__main__ import main as r2r
from studies.r3ag.__main__ import main as r3ag

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("main", [r2r, r3ag, llm_training, effectiveness], ids=lambda m: m.__module__)
def test_a_missing_config_is_one_line_and_exit_code_2(main, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--config", str(tmp_path / "nope.toml")])
    assert caught.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("routerank: error:") and "no such config file" in lines[0]


@pytest.mark.parametrize("main", [r2r, r3ag, llm_training], ids=lambda m: m.__module__)
def test_an_unknown_stage_kind_is_refused_before_anything_runs(main, capsys):
    config = {
        r2r: "studies/r2r/configs/r2r-cpu.toml",
        r3ag: "studies/r3ag/configs/r3ag-cpu.toml",
        llm_training: "studies/llm_training/configs/llm-training-cpu.toml",
    }[main]
    with pytest.raises(SystemExit) as caught:
        main(["--config", str(ROOT / config), "--only", "nothing"])
    assert caught.value.code == 2 and "unknown stage kinds ['nothing']" in capsys.readouterr().err


def test_the_module_runs_from_the_checkout_and_the_routerank_command_has_no_studies():
    result = subprocess.run(
        [sys.executable, "-m", "studies.r2r", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "--config" in result.stdout and "--ray [ADDRESS]" in result.stdout
    probe = "import sys, routerank.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'studies'))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "routerank.cli", "experiment", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0 and "No such command 'experiment'" in result.stdout + result.stderr
