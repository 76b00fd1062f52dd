"""The figure generator: the README and the site match reports/, and markers fail loudly when they name nothing."""

from __future__ import annotations

import json

import pytest

from routerank.errors import RouterankError
from studies import figures


def test_readme_and_site_match_the_reports():
    assert figures.stale() == [], "run `python -m studies.figures` after changing reports/ or a figure marker"


def test_every_table_renders_from_the_committed_reports():
    for name, render in figures.TABLES.items():
        table = render()
        assert table.startswith("| ") and table.count("\n") >= 3, name


def test_a_stale_figure_is_rewritten_and_a_current_one_kept():
    routed = figures.lookup("starter.json", "figures.test.scifact.systems.routed.nDCG@10")
    stale = "SciFact: <!-- fig: starter.json figures.test.scifact.systems.routed.nDCG@10 .3f -->0.111<!-- /fig -->."
    fresh = figures.fill(stale)
    assert fresh == stale.replace("0.111", f"{routed:.3f}")
    assert figures.fill(fresh) == fresh


def test_list_indices_and_keys_with_dots_resolve():
    first = json.loads((figures.REPORTS / "r3ag.json").read_text())["headline"][0]["dataset"]
    assert figures.lookup("r3ag.json", "headline.0.dataset") == first
    assert figures.lookup("bench-cpu.json", "cross_encoder_ndcg@10.scifact.bm25") == pytest.approx(0.686)


def test_a_table_block_is_regenerated_between_its_markers():
    text = "before\n<!-- table: starter-router -->\nold rows\n<!-- /table -->\nafter\n"
    out = figures.fill(text)
    assert "old rows" not in out and out.startswith("before\n<!-- table: starter-router -->\n| router |")
    assert out.endswith("<!-- /table -->\nafter\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- fig: nowhere.json a.b -->1<!-- /fig -->", "does not exist"),
        ("<!-- fig: starter.json figures.nope -->1<!-- /fig -->", "no key 'nope'"),
        ("<!-- fig: r3ag.json headline.99.dataset -->1<!-- /fig -->", "out of range"),
        ("<!-- table: no-such-table -->\n<!-- /table -->", "unknown table"),
        ("<!-- fig: r3ag.json headline.0 a key .3f -->1<!-- /fig -->", "does not parse"),
    ],
)
def test_a_marker_that_names_nothing_is_one_clear_error(text, message):
    with pytest.raises(RouterankError, match=message):
        figures.fill(text, "page.md")


def test_check_mode_writes_nothing_and_exits_1_when_stale(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text("<!-- fig: starter.json size_mb -->0<!-- /fig -->\n")
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    monkeypatch.setattr(figures, "documents", lambda root=tmp_path: [page])
    assert figures.main(["--check"]) == 1
    assert page.read_text() == "<!-- fig: starter.json size_mb -->0<!-- /fig -->\n"
    assert figures.main([]) == 0
    assert figures.main(["--check"]) == 0
    size = figures.lookup("starter.json", "size_mb")
    assert page.read_text() == f"<!-- fig: starter.json size_mb -->{size}<!-- /fig -->\n"
