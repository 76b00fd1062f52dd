from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from studies.rag_qa.experiment import markdown, measure

from routerank.errors import RouterankError
from routerank.generate.qa_run import run_qa
from routerank.pipeline import build
from tests.conftest import shared_dataset


@pytest.fixture(scope="module")
def squad():
    from routerank.data.registry import load_dataset

    return load_dataset(str(shared_dataset("squad-dev")), splits=["test"])


@pytest.fixture(scope="module")
def tiny_generator():
    from routerank.generate import Generator
    from routerank.models.llm import tiny_llm

    return Generator("tiny", loaded=tiny_llm(seed=0), max_new_tokens=2, cache=False, progress=False)


def cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "routerank.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=600)


def test_each_context_reaches_the_prompt(squad, tiny_generator):
    common = {"split": "test", "sample": 3, "seed": 1, "generator": tiny_generator, "progress": False}
    bm25 = build("bm25", squad.corpus)
    retrieved = run_qa(squad, context="retrieved", retriever=bm25, pipeline="bm25", k=2, **common)
    queries = [squad.queries[a.query_id] for a in retrieved.answers]
    run = bm25.search(queries, 2)
    assert [a.context.used for a in retrieved.answers] == [run[q.id].doc_ids for q in queries]
    gold = run_qa(squad, context="gold", k=1, **common)
    qrels = squad.split_qrels("test")
    assert [a.context.used for a in gold.answers] == [tuple(qrels[q.id]) for q in queries]
    none = run_qa(squad, context="none", k=3, **common)
    assert all(a.context.used == () for a in none.answers) and none.k == 0
    summary = retrieved.summary()
    assert summary["n"] == 3 and summary["pipeline"] == "bm25" and 0 <= summary["em"] <= summary["f1"] <= 1
    assert "| bm25 top 2 | 3 |" in markdown([{"label": retrieved.label, **summary}])


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_the_study_measures_gold_retrieved_and_none_on_the_same_queries(squad):
    from routerank.models.llm import tiny_llm

    report = measure(
        str(squad.path),
        "test",
        3,
        1,
        "bm25",
        2,
        1,
        model="tiny",
        loaded=tiny_llm(seed=0),
        max_new_tokens=2,
        cache=False,
        progress=False,
    )
    assert (report["sample"], report["seed"], report["split"]) == (3, 1, "test")
    rows = report["conditions"]
    assert [r["label"] for r in rows] == ["gold top 1", "bm25 top 2", "no context (R0)"]
    assert [(r["context"], r["pipeline"], r["k"], r["n"]) for r in rows] == [
        ("gold", None, 1, 3),
        ("retrieved", "bm25", 2, 3),
        ("none", None, 0, 3),
    ]
    table = markdown(rows).splitlines()
    assert len(table) == 5 and "| gold top 1 | 3 |" in table[2]


def test_the_study_runs_as_a_module():
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "studies.rag_qa", "--help"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "python -m studies.rag_qa" in result.stdout and "--gold-k" in result.stdout


def test_bad_requests_are_refused_before_a_model_loads(squad, tiny_beir):
    with pytest.raises(RouterankError, match="unknown context 'oracle'"):
        run_qa(squad, context="oracle")
    with pytest.raises(RouterankError, match="k must be 0 or more"):
        run_qa(squad, k=-1)
    with pytest.raises(RouterankError, match="1 of 2 queries in tiny .test split. have no gold answers"):
        run_qa(str(tiny_beir), context="none")
    with pytest.raises(RouterankError, match="needs a retriever"):
        run_qa(squad, context="retrieved", k=3)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--context", "none"), "have no gold answers"),
        (("-k", "-1"), "k must be 0 or more"),
        (("--context", "oracle"), "unknown context 'oracle'"),
        (("--template", "alpaca"), "unknown answer template 'alpaca'"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tiny_beir, args, needle):
    result = cli("qa", "-d", str(tiny_beir), *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr


@pytest.mark.slow
def test_smollm2_answers_three_squad_questions_from_gold_context_and_caches_them(squad, tmp_path):
    args = ("qa", "-d", str(squad.path), "--context", "gold", "--k", "1", "--sample", "3", "--json")
    first = cli(*args, "--save-answers", str(tmp_path / "answers.jsonl"))
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert (out["n"], out["generated"], out["cached"]) == (3, 3, 0)
    answers = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert any(a["answer"].strip() for a in answers) and all("\n" not in a["answer"] for a in answers)
    assert out["f1"] > 0  # with the gold paragraph in hand, SmolLM2 gets some words right on 3 questions
    again = json.loads(cli(*args).stdout)
    assert (again["generated"], again["cached"]) == (0, 3) and again["f1"] == out["f1"]
