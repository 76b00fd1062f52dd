from __future__ import annotations

from types import MappingProxyType

import pytest

from routerank.data.beir import read_qrels
from routerank.data.trec import read_run, write_run, write_trec_qrels
from routerank.data.types import Qrels, Ranking, Run
from routerank.errors import DataFormatError, DuplicateIdError, EmptyFileError


def make_run() -> Run:
    return Run(MappingProxyType({"q1": Ranking(("d2", "d1"), (2.5, 1.25)), "q2": Ranking(("d3",), (0.5,))}), "demo")


def test_run_round_trip(tmp_path):
    write_run(make_run(), tmp_path / "run.trec")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0] == "q1 Q0 d2 1 2.500000 demo"
    run = read_run(tmp_path / "run.trec")
    assert run.as_dict() == make_run().as_dict() and run.name == "demo"


def test_run_file_errors(tmp_path):
    path = tmp_path / "bad.trec"
    path.write_text("q1 Q0 d1 1 0.5\n")
    with pytest.raises(DataFormatError, match="expected 6 columns") as err:
        read_run(path)
    assert err.value.line == 1
    path.write_text("q1 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n")
    with pytest.raises(DuplicateIdError):
        read_run(path)
    path.write_text("q1 Q0 d1 1 high t\n")
    with pytest.raises(DataFormatError, match="not a number"):
        read_run(path)
    path.write_text("")
    with pytest.raises(EmptyFileError):
        read_run(path)


def test_trec_qrels_round_trip(tmp_path):
    qrels = Qrels({"q1": {"d1": 1, "d2": 0}})
    write_trec_qrels(qrels, tmp_path / "qrels.txt")
    assert read_qrels(tmp_path / "qrels.txt").as_dict() == qrels.as_dict()


def test_ranking_from_scores_sorts_and_breaks_ties_by_id():
    ranking = Ranking.from_scores({"b": 1.0, "a": 1.0, "c": 3.0}, k=2)
    assert ranking.doc_ids == ("c", "a")
    assert [d.rank for d in ranking] == [1, 2]
