from __future__ import annotations

import pytest

from routerank.data.beir import read_corpus
from routerank.data.tables import STYLES, linearise, looks_like_table, parse_table
from routerank.errors import RouterankError
from tests.conftest import shared_dataset

FIXED_PRICE = "t-3ffd9053-a45d-491c-957a-1b2fa0af0570"  # two header rows, the first with a spanning label
BROKEN_CELLS = (
    "t-637fab7088ea6c78a5dba55f17e833bd"  # header cells that hold line breaks, a section, an unlabelled total
)


@pytest.fixture(scope="module")
def tatqa_corpus():
    return read_corpus(shared_dataset("tatqa") / "corpus.jsonl")


def test_parse_a_real_table_keeps_empty_cells(tatqa_corpus):
    rows = parse_table(tatqa_corpus[FIXED_PRICE].text)
    assert rows[0] == ["", "", "Years Ended September 30,", ""]
    assert rows[1] == ["", "2019", "2018", "2017"]
    assert rows[2] == ["Fixed Price", "$  1,452.4", "$  1,146.2", "$  1,036.9"]
    assert len(rows) == 5 and {len(r) for r in rows} == {4}


def test_cells_with_line_breaks_are_put_back_together(tatqa_corpus):
    rows = parse_table(tatqa_corpus[BROKEN_CELLS].text)
    assert rows[0] == ["", "September 28,\n2019", "September 29,\n2018"]
    assert rows[1] == ["Total assets:", "", ""]
    assert len(rows) == 7 and {len(r) for r in rows} == {3}


def test_statements_read_like_the_report(tatqa_corpus):
    lines = linearise(tatqa_corpus[FIXED_PRICE].text, "statements").splitlines()
    assert lines[0] == (
        "Fixed Price, Years Ended September 30, 2019: $ 1,452.4. "
        "Fixed Price, Years Ended September 30, 2018: $ 1,146.2. "
        "Fixed Price, Years Ended September 30, 2017: $ 1,036.9."
    )
    assert lines[2].startswith("Total sales, Years Ended September 30, 2019: $1,496.5.")
    assert len(lines) == 3


def test_statements_carry_sections_and_name_unlabelled_totals(tatqa_corpus):
    lines = linearise(tatqa_corpus[BROKEN_CELLS].text, "statements").splitlines()
    assert lines[0] == (
        "Total assets: AMER, September 28, 2019: $751,990. Total assets: AMER, September 29, 2018: $645,791."
    )
    assert lines[-1] == "Total assets, September 28, 2019: $2,000,883. Total assets, September 29, 2018: $1,932,642."


def test_every_tatqa_table_gives_statements_and_a_markdown_grid(tatqa_corpus):
    tables = [d for d in tatqa_corpus.documents if d.id.startswith("t-")]
    for doc in tables:
        statements = linearise(doc.text, "statements")
        assert statements != doc.text and statements.endswith("."), doc.id
        grid = linearise(doc.text, "markdown").splitlines()
        assert len(grid) == len(parse_table(doc.text)) + 1, doc.id
        assert len({line.count(" | ") for line in grid}) == 1, doc.id


def test_pipe_is_unchanged_and_unknown_style_lists_styles():
    text = "a | b\nc | d"
    assert linearise(text, "pipe") is text
    with pytest.raises(RouterankError, match="unknown table style 'html'") as err:
        linearise(text, "html")
    assert all(style in str(err.value) for style in STYLES) and "\n" not in str(err.value)


def test_ragged_rows_are_padded():
    rows = parse_table("Item | 2019 | 2018\nRevenue | 10 | 9\nNote | see below\nCost | 4 | 3 | extra")
    assert rows == [
        ["Item", "2019", "2018", ""],
        ["Revenue", "10", "9", ""],
        ["Note", "see below", "", ""],
        ["Cost", "4", "3", "extra"],
    ]


def test_markdown_escapes_pipes_inside_cells_and_flattens_line_breaks():
    text = " | Plan A|B | Total\ncost\nCount | 1 | 2"
    assert parse_table(text) == [["", "Plan A|B", "Total\ncost"], ["Count", "1", "2"]]
    assert linearise(text, "markdown") == "|  | Plan A\\|B | Total cost |\n| --- | --- | --- |\n| Count | 1 | 2 |"


def test_one_row_table():
    text = "Revenue | 10 | 9"
    assert parse_table(text) == [["Revenue", "10", "9"]]
    assert linearise(text, "markdown") == "| Revenue | 10 | 9 |\n| --- | --- | --- |"
    assert linearise(text, "statements") == "Revenue: 10. Revenue: 9."
    assert not looks_like_table(text)


def test_a_table_of_words_reads_with_its_first_row_as_header():
    text = "Name | Role\nAda | Chair\nBo | Auditor"
    assert linearise(text, "statements") == "Ada, Role: Chair.\nBo, Role: Auditor."


def test_what_looks_like_a_table():
    assert looks_like_table("a | b\nc | d")
    assert not looks_like_table("a | b\nc | d | e")
    assert not looks_like_table("A paragraph that mentions a | once.\nAnd a second line.")
    assert not looks_like_table("plain text\non two lines")
    assert not looks_like_table("")
