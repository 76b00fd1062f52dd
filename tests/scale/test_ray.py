"""Ray: a two-node cluster on this machine (head + worker on loopback, one CPU each, small object stores).

Each test checks a result against the in-process path, and placement on both nodes where the work allows it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from functools import partial

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

from routerank.errors import DataFormatError, RouterankError  # noqa: E402
from routerank.scale import InProcess, RayOptions, ShardStore, executor_for  # noqa: E402
from tests.scale.workers import Picky, SlowDoubler, where  # noqa: E402

STORE_MB = 80 * 2**20


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE_MB})
    nodes.add_node(num_cpus=1, object_store_memory=STORE_MB)
    ray.init(address=nodes.address, log_to_driver=False)
    nodes.wait_for_nodes()
    yield nodes
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture
def on_ray(cluster):
    return executor_for(RayOptions(address=cluster.address, max_restarts=2, max_task_retries=2), progress=False)


def test_cluster_has_two_nodes_and_tasks_run_on_both(on_ray):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    placed = on_ray.run_tasks(where, [(str(i),) for i in range(4)])
    assert [tag for tag, _ in placed] == ["0", "1", "2", "3"]
    assert len({node for _, node in placed}) == 2


def test_dense_index_is_byte_identical_to_in_process_and_uses_both_nodes(on_ray, scifact, tmp_path, monkeypatch):
    import routerank.retrieve.dense as dense
    from routerank.data.types import Corpus
    from routerank.retrieve.store import load_index, save_index

    monkeypatch.setattr(dense, "ENCODE_SHARD", 40)
    corpus = Corpus(scifact.corpus.documents[:200])
    here = dense.DenseRetriever(progress=False)
    here.index(corpus)
    there = dense.DenseRetriever(progress=False)
    there.index(corpus, executor=on_ray)
    assert there.embeddings.tobytes() == here.embeddings.tobytes()
    assert len({node for node, _ in on_ray.placements.values()}) == 2
    a, b = save_index(here, tmp_path / "a"), save_index(there, tmp_path / "b")
    assert (a / "manifest.json").read_text() == (b / "manifest.json").read_text()  # same file checksums
    query = scifact.split_queries("test")[:5]
    assert load_index(b).search(query, 10).as_dict() == here.search(query, 10).as_dict()


@pytest.mark.parametrize("stage", ["@20", "@20~0.5"])
def test_reranked_run_matches_in_process(cluster, scifact, fresh_ce, stage, monkeypatch, tmp_path):
    from routerank.pipeline import build

    monkeypatch.setenv("ROUTERANK_CACHE", str(tmp_path / "cache"))  # no shared score cache between the two paths
    queries = scifact.split_queries("test")[:10]
    spec = f"bm25>>ce:{fresh_ce}{stage}"
    here = build(spec, scifact.corpus, reranker_options={"cache": False}).search(queries, 30)
    options = RayOptions(address=cluster.address)
    there = build(spec, scifact.corpus, reranker_options={"cache": False}, ray=options).search(queries, 30)
    assert list(there.rankings) == list(here.rankings)
    for qid in here.rankings:
        assert there[qid].doc_ids == here[qid].doc_ids
        np.testing.assert_allclose(there[qid].scores, here[qid].scores, rtol=1e-5, atol=1e-5)


def test_killed_actor_is_restarted_and_nothing_is_lost_or_duplicated(on_ray, tmp_path):
    logs, store = tmp_path / "pids", ShardStore(tmp_path / "store")
    logs.mkdir()
    shards = list(range(16))
    killed: list[int] = []

    def kill_one_actor_mid_run() -> None:
        deadline = time.time() + 60
        while time.time() < deadline and len(store.done()) < 3:
            time.sleep(0.05)
        pid = int(sorted(logs.iterdir())[0].read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_one_actor_mid_run)
    killer.start()
    results = on_ray.map(partial(SlowDoubler, str(logs), 0.4), "run", shards, store=store)
    killer.join()
    assert killed, "the actor was never killed"
    assert [int(r[0]) for r in results] == [2 * x for x in shards]
    assert store.done() == shards  # each shard stored once
    assert len(list(logs.iterdir())) >= 3  # two actors, and the killed one came back


def test_finished_shards_are_not_redone(on_ray, tmp_path):
    logs, store = tmp_path / "pids", ShardStore(tmp_path / "store")
    logs.mkdir()
    for index in range(4):
        store.save(index, np.array([-1], dtype=np.int64))  # a sentinel no worker would return
    results = on_ray.map(partial(SlowDoubler, str(logs), 0.0), "run", list(range(6)), store=store)
    assert [int(r[0]) for r in results] == [-1, -1, -1, -1, 8, 10]
    assert set(on_ray.placements) == {4, 5}


def test_bad_input_fails_with_the_routerank_error_not_a_ray_traceback(on_ray):
    with pytest.raises(DataFormatError, match="negative input -2") as caught:
        on_ray.map(Picky, "run", [1, 2, -2, 3])
    assert not isinstance(caught.value, ray.exceptions.RayError)
    with pytest.raises(RouterankError, match="ValueError: zero is not allowed"):
        on_ray.map(Picky, "run", [1, 0])
    assert InProcess(progress=False).map(Picky, "run", [1, 2]) == on_ray.map(Picky, "run", [1, 2])


def test_r2r_experts_train_as_ray_tasks_and_label_scores_match_in_process(cluster, fresh_ce, tmp_path):
    from studies.r2r.experiment import R2RExperiment

    from tests.studies.test_r2r import tiny_config

    config = tiny_config(profile="ray-test", backbone=f"ce:{fresh_ce}", max_doc_tokens=48, test_queries=2, ablation=())
    experiment = R2RExperiment(config, tmp_path / "work", progress=False, ray=cluster.address)
    trained = experiment.train_on_ray(["eag-scifact", "eag-nfcorpus"])
    assert trained == ["eag-scifact", "eag-nfcorpus"]
    assert experiment.train_on_ray(["eag-scifact", "eag-nfcorpus"]) == []  # trained once, then cached
    queries = experiment.test_queries("scifact")
    docs = experiment.dataset("scifact").corpus.documents[:3]
    pairs = [(q.text, d.full_text) for q in queries for d in docs]
    adapters = ["eag-scifact", "eag-nfcorpus", "generalist"] * (len(pairs) // 3)
    on_ray = experiment.score_pairs(pairs, adapters)
    here = experiment.bank().score_pairs(pairs, adapters)
    np.testing.assert_allclose(on_ray, here, rtol=1e-5, atol=1e-5)
    assert len(set(np.round(on_ray, 6))) > 1  # the experts really differ
