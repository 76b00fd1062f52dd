"""The shipped starter bundle: its files match the manifest, it loads offline, reproduces the scores the manifest
recorded, routes each domain's query to its expert, and answers to one name everywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import routerank
from routerank.errors import RouterankError
from routerank.pipeline import build
from routerank.starter import (
    BUNDLE,
    MANIFEST,
    BundleError,
    bank_folder,
    checksums,
    digest,
    generalist_folder,
    materialize,
    read_manifest,
    resolve_spec,
    verify,
)

LIMIT_BYTES = 30 * 2**20


@pytest.fixture(scope="module")
def manifest():
    return read_manifest()


def test_the_shipped_files_match_the_manifest_and_fit_the_size_limit(manifest):
    assert verify() == manifest
    files = manifest["files"]
    assert files == checksums(BUNDLE)
    assert sum((BUNDLE / name).stat().st_size for name in files) <= LIMIT_BYTES
    for part in ("generalist/weights.safetensors", "router/router.json"):
        assert part in files
    assert {name.split("/")[1] for name in files if name.startswith("experts/")} == set(manifest["domains"])
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pkl"))]  # safetensors only


def test_the_manifest_says_how_to_rebuild_and_what_was_measured(manifest):
    assert manifest["rebuild"].startswith("python -m studies.starter --config ")
    assert manifest["training"]["generalist"]["queries"] > 0
    test = manifest["figures"]["test"]
    assert set(test) == set(manifest["domains"])
    for entry in test.values():
        assert {"bm25", "first", "generalist", "expert", "routed"} <= set(entry["systems"])


def test_an_altered_or_unlisted_file_is_refused(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(BUNDLE, copy)
    weights = copy / "router" / "router.json"
    weights.write_text(weights.read_text() + " ")
    with pytest.raises(BundleError, match="altered: router/router.json"):
        verify(copy)
    weights.unlink()
    with pytest.raises(BundleError, match="missing: router/router.json"):
        verify(copy)
    shutil.copy(BUNDLE / "router" / "router.json", weights)
    (copy / "experts" / "stray.txt").write_text("x")
    with pytest.raises(BundleError, match="unlisted: experts/stray.txt"):
        verify(copy)


def test_a_missing_manifest_says_how_to_get_the_bundle(tmp_path):
    with pytest.raises(BundleError, match="not in this installation") as info:
        read_manifest(tmp_path)
    assert "studies.starter" in str(info.value)


@pytest.mark.slow  # the first unpack in a session: ~8 s on 2 cores
def test_the_starter_names_resolve_to_the_unpacked_bundle():
    bank, generalist = bank_folder(), generalist_folder()
    assert resolve_spec("starter") == resolve_spec("r2r:starter") == f"r2r:{bank}"
    assert resolve_spec("starter:generalist") == resolve_spec("ce:starter") == f"ce:{generalist}"
    assert resolve_spec("ce:/some/folder") == "ce:/some/folder"
    assert bank.name == digest() and (bank / "bank.json").is_file() and (generalist / "config.json").is_file()
    assert (
        json.loads((bank / "bank.json").read_text())["options"]["max_doc_tokens"]
        == read_manifest()["model"]["max_length"]
    )


def test_unpacking_is_done_once_and_its_weights_follow_the_bundle(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(BUNDLE, copy)
    first = materialize(copy, tmp_path / "unpacked")
    stamp = (first / "generalist" / "model.safetensors").stat().st_mtime_ns
    alphas = copy / "interpolation" / "routed.json"
    record = json.loads(alphas.read_text())
    first_stage = next(iter(record))
    record[first_stage]["pooled"]["alpha"] = 0.123
    alphas.write_text(json.dumps(record))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["files"]["interpolation/routed.json"] = checksums(copy)["interpolation/routed.json"]
    (copy / MANIFEST).write_text(json.dumps(manifest))
    again = materialize(copy, tmp_path / "unpacked")
    assert again == first  # the same model files: the same unpacked copy, not merged again
    assert (again / "generalist" / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((again / "interpolation.json").read_text())[first_stage]["pooled"]["alpha"] == 0.123
    assert not list((tmp_path / "unpacked").glob(".*tmp"))  # nothing half-written is left beside it


@pytest.mark.slow
def test_the_starter_loads_offline_and_reproduces_the_recorded_scores(manifest, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    rows = manifest["reference"]
    pairs = [(row["query"], row["document"]) for row in rows]
    generalist = routerank.Reranker("starter:generalist")
    assert np.allclose(generalist.score_pairs(pairs), [row["generalist"] for row in rows], atol=1e-4)
    routed = routerank.Reranker("starter")
    decisions = routed.route([row["query"] for row in rows])
    assert [d.choice for d in decisions] == [row["expert"] for row in rows]
    scores = routed.score_pairs(pairs, [d.choice for d in decisions])
    assert np.allclose(scores, [row["routed"] for row in rows], atol=1e-4)


@pytest.mark.slow
def test_the_router_sends_one_query_per_domain_to_its_expert(manifest):
    routed = routerank.Reranker("starter")
    first_per_domain = {}  # per domain, the first reference query the build saw routed to that domain's expert
    for row in manifest["reference"]:
        if row["expert"] == row["dataset"]:
            first_per_domain.setdefault(row["dataset"], row["query"])
    assert set(first_per_domain) == set(manifest["domains"])
    decisions = routed.route(list(first_per_domain.values()))
    assert [d.choice for d in decisions] == list(first_per_domain)


@pytest.mark.slow
def test_an_off_domain_query_can_go_to_the_generalist_and_still_ranks(manifest):
    routed = routerank.Reranker("starter")
    ranked = routed.rank(
        "does vitamin D lower the risk of cancer?",
        ["Cats purr when they are content.", "Vitamin D supplementation and cancer incidence: a randomised trial."],
    )
    assert ranked[0].index == 1


@pytest.mark.slow
def test_r2r_starter_runs_in_a_pipeline_with_its_dev_chosen_weight(scifact):
    queries = scifact.split_queries("test")[:3]
    pipeline = build("bm25>>r2r:starter@5~auto", scifact.corpus)
    run = pipeline.search(queries, k=5)
    assert set(run) == {q.id for q in queries} and all(len(run[q.id]) == 5 for q in queries)


def test_a_bad_spec_next_to_the_starter_is_still_a_clear_error():
    with pytest.raises(RouterankError):
        routerank.Reranker("ce:/no/such/folder")


def test_the_cli_checks_the_bundle_and_shows_its_figures():
    result = subprocess.run(
        [sys.executable, "-m", "routerank.cli", "starter", "--json"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["domains"] == read_manifest()["domains"] and "test" in shown["figures"]
    assert "files" not in shown  # the checksums were checked, not printed
