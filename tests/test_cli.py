"""The real entry point, in a subprocess: exit codes and stderr are what users see."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import shared_dataset


def cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "routerank.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def assert_clean_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("routerank: error:") and needle in lines[0], result.stderr


def test_datasets_json_lists_shared_collections(scifact):
    result = cli("datasets", "--json", env_extra={"ROUTERANK_DATA": str(scifact.path.parent)})
    assert result.returncode == 0, result.stderr
    listed = {d["name"]: d for d in json.loads(result.stdout)}
    assert listed["scifact"]["splits"]["test"] == {"queries": 300, "pairs": 339}


def test_evaluate_bm25_on_scifact_json(scifact, tmp_path):
    result = cli(
        "evaluate",
        "-d",
        str(scifact.path),
        "--split",
        "test",
        "--pipeline",
        "bm25",
        "--json",
        "--save-run",
        str(tmp_path / "bm25.trec"),
    )
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)["runs"]["bm25"]
    assert scores["nDCG@10"] >= 0.67 and set(scores) == {"nDCG@10", "MRR@10", "R@100"}
    lines = (tmp_path / "bm25.trec").read_text().splitlines()
    assert 29_000 < len(lines) <= 300 * 100  # docs matching no query term are not retrieved
    assert len({line.split()[0] for line in lines}) == 300


@pytest.mark.slow  # ~5 s on 2 idle cores: out of the fast lane
def test_compare_reports_p_values(scifact, tmp_path):
    for name, spec in (("a", "bm25"), ("b", "bm25:k1=0.9,b=0.4")):
        assert (
            cli(
                "evaluate", "-d", str(scifact.path), "-p", spec, "--save-run", str(tmp_path / f"{name}.trec"), "--json"
            ).returncode
            == 0
        )
    result = cli(
        "compare",
        str(tmp_path / "a.trec"),
        str(tmp_path / "b.trec"),
        "-d",
        str(scifact.path),
        "--trials",
        "500",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    rows = {r["measure"]: r for r in json.loads(result.stdout)["measures"]}
    assert 0 < rows["nDCG@10"]["t_test_p"] <= 1 and rows["nDCG@10"]["queries"] == 300


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("evaluate", "-d", "no-such-dataset"), "no dataset 'no-such-dataset'"),
        (("evaluate", "-d", "{tiny}", "--split", "dev"), "no qrels for split 'dev'"),
        (("evaluate", "-d", "{tiny}", "-m", "nDCG@10 bogus@1"), "unknown measure 'bogus@1'"),
        (("evaluate", "-d", "{tiny}", "-p", "bm26"), "unknown retriever 'bm26'"),
        (("search", "-d", "{tiny}"), "exactly one of --query or --split"),
    ],
)
def test_bad_requests_are_one_line_and_exit_2(tiny_beir, args, needle):
    assert_clean_error(cli(*(a.format(tiny=tiny_beir) for a in args)), needle)


@pytest.mark.parametrize(
    ("breakage", "needle"),
    [
        (lambda f: (f / "corpus.jsonl").write_text('{"_id": "d1", "text": \n'), "corpus.jsonl:1: malformed JSON"),
        (lambda f: (f / "queries.jsonl").write_text('{"text": "x"}\n'), 'queries.jsonl:1: record has no "_id"'),
        (lambda f: (f / "corpus.jsonl").write_bytes(b'{"_id": "d1", "text": "\xff"}\n'), "not UTF-8"),
        (lambda f: (f / "corpus.jsonl").write_text(""), "file is empty"),
        (lambda f: (f / "qrels" / "test.tsv").write_text("q1\tghost\t1\n"), "1 judgments name unknown ids"),
    ],
)
def test_bad_files_are_one_line_and_exit_2(tiny_beir, breakage, needle):
    breakage(tiny_beir)
    assert_clean_error(cli("evaluate", "-d", str(tiny_beir)), needle)


def test_lenient_drops_and_says_what(tiny_beir):
    with open(tiny_beir / "qrels" / "test.tsv", "a") as handle:
        handle.write("q1\tghost\t1\n")
    result = cli("evaluate", "-d", str(tiny_beir), "--lenient", "--json")
    assert result.returncode == 0, result.stderr
    assert "dropped 1 judgments" in result.stderr and "q1/ghost" in result.stderr
    assert json.loads(result.stdout)["queries"] == 2


def test_corrupt_saved_index_is_refused_on_search(tiny_beir, tmp_path):
    assert cli("index", "-d", str(tiny_beir), "--out", str(tmp_path / "idx")).returncode == 0
    (tmp_path / "idx" / "doc_ids.json").write_text('["d2", "d1", "d3"]')
    code = (
        "import sys\nfrom routerank.retrieve import BM25Retriever\nfrom routerank.errors import CorruptIndexError\n"
        f"try:\n    BM25Retriever.load({str(tmp_path / 'idx')!r})\nexcept CorruptIndexError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 3 and "checksum" in result.stdout


def test_search_one_query_prints_a_table(tiny_beir):
    result = cli("search", "-d", str(tiny_beir), "-q", "aspirin heart", "-k", "2")
    assert result.returncode == 0, result.stderr
    assert "d1" in result.stdout


@pytest.mark.slow
def test_evaluate_a_rerank_pipeline_on_a_sample(scifact):
    result = cli(
        "evaluate",
        "-d",
        str(scifact.path),
        "-p",
        "bm25>>qlm@3",
        "--sample",
        "2",
        "--rerank-opt",
        "max_doc_tokens=32",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["queries"] == 2 and "bm25>>qlm" in out["runs"]


def test_unknown_rerank_option_is_one_line(tiny_beir):
    assert_clean_error(
        cli("evaluate", "-d", str(tiny_beir), "-p", "bm25>>pointwise@2", "--rerank-opt", "nope"), "bad --rerank-opt"
    )


@pytest.mark.slow
def test_train_expert_writes_an_expert_folder_the_bank_loads(scifact, tmp_path):
    out = tmp_path / "science"
    result = cli(
        "train",
        "expert",
        "-d",
        "scifact",
        "--domain",
        "science",
        "--max-queries",
        "2",
        "--dev-queries",
        "1",
        "--negatives",
        "1",
        "--max-doc-tokens",
        "24",
        "--grad-accum",
        "1",
        "--out",
        str(out),
        "--json",
        env_extra={"ROUTERANK_DATA": str(scifact.path.parent)},
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["domain"] == "science" and manifest["config"]["lora_r"] == 32
    assert manifest["metrics"]["steps"] == 2 and manifest["training_data"]["scifact"]["train_examples"] == 2
    assert (out / "adapter_model.safetensors").exists() and "trained expert 'science'" in result.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--eag", "--granularity", "none"], "granularity 'none' is plain training"),
        (["--objective", "ranknet"], "unknown objective"),
        (["--granularity", "words"], "unknown masking granularity"),
    ],
)
def test_train_expert_bad_settings_are_one_line(scifact, args, needle):
    result = cli(
        "train",
        "expert",
        "-d",
        "scifact",
        "--domain",
        "science",
        *args,
        env_extra={"ROUTERANK_DATA": str(scifact.path.parent)},
    )
    assert_clean_error(result, needle)


def test_version_prints_the_package_version_and_bare_command_prints_help():
    from routerank import __version__

    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"routerank {__version__}", result.stderr
    bare = cli()
    assert "Usage:" in bare.stdout + bare.stderr and "evaluate" in bare.stdout + bare.stderr


def test_evaluate_puts_several_pipelines_side_by_side_with_p_values(scifact):
    result = cli(
        "evaluate", "-d", str(scifact.path), "-p", "bm25", "-p", "bm25:k1=0.9,b=0.4", "--sample", "30", "--json"
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert list(out["runs"]) == ["bm25", "bm25:k1=0.9,b=0.4"] and out["queries"] == 30
    assert (
        set(out["p_vs_first"]) == {"bm25:k1=0.9,b=0.4"} and 0 <= out["p_vs_first"]["bm25:k1=0.9,b=0.4"]["nDCG@10"] <= 1
    )


def test_evaluate_saves_one_run_only(scifact, tmp_path):
    result = cli("evaluate", "-d", str(scifact.path), "-p", "bm25", "-p", "bm25", "--save-run", str(tmp_path / "r"))
    assert_clean_error(result, "--save-run writes one run")


def test_documents_summarises_tatqa_pages():
    tatqa = shared_dataset("tatqa")
    result = cli("documents", "-d", str(tatqa), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["documents"], summary["passages"], summary["tables"], summary["text"]) == (555, 3190, 555, 2635)
    assert summary["passages_per_document"] == {"min": 3, "median": 5, "max": 27}
    assert summary["splits"]["test"] == {"queries": 1663, "passage_pairs": 2241, "document_pairs": 1663}


@pytest.mark.parametrize(
    ("contents", "needle"),
    [
        (None, "has no documents.tsv"),
        ("document-id\tpassage-id\tposition\nX\td1\t0\nX\td2\t0\n", "documents.tsv:3: document 'X' has two passages"),
        ("document-id\tpassage-id\tposition\nX\tghost\t0\n", "documents.tsv:2: passage 'ghost' is not in the corpus"),
    ],
)
def test_documents_bad_file_is_one_line_and_exit_2(tiny_beir, contents, needle):
    if contents is not None:
        (tiny_beir / "documents.tsv").write_text(contents)
    assert_clean_error(cli("documents", "-d", str(tiny_beir)), needle)


def test_documents_prints_counts_and_lifted_pairs(tiny_beir):
    (tiny_beir / "documents.tsv").write_text("document-id\tpassage-id\tposition\nX\td2\t1\nX\td1\t0\n")
    result = cli("documents", "-d", str(tiny_beir))
    assert result.returncode == 0, result.stderr
    assert "tiny: 2 documents over 3 passages (0 tables, 3 text)" in result.stdout
    assert "passages per document: min 1, median 1.5, max 2" in result.stdout
    row = next(line for line in result.stdout.splitlines() if " test " in line)
    assert row.split()[1::2] == ["test", "2", "2", "2"]  # split, queries, passage pairs, document pairs
