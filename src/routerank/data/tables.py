"""Tables stored as text, and three ways to show them to a model.

A table passage holds one row per line with its cells joined by " | " (TAT-QA's corpus, and the form most table QA
sets flatten to). Some cells hold a line break of their own ("September 28,\\n2019"), which splits a row over two
lines, so `parse_table` rebuilds rows before it splits cells: a line without a separator continues the last cell
above it, and a row short of the table's usual width (the most common number of cells in a line) joins the next line
when the two together make exactly that width.

`linearise` then writes the table as it is (`pipe`), as a GitHub table (`markdown`), or as one sentence per value
cell (`statements`: "Fixed Price, Years Ended September 30, 2019: $ 1,452.4."), where every number carries its row
and column names into the text a model reads.

How `statements` names a value (TAT-QA's report tables guided each rule). Header rows are the top rows before the
first row that has a row label and a number; a row label alone ("Net sales:", "Assets") is a caption. A header cell
spanning several columns sits in only one of them, so in each header row but the fullest an empty cell takes the
nearest header of its row. A column's name joins its header cells top to bottom ("Years Ended September 30, 2019").
A row's name is its first non-empty cell unless that cell holds no letters (a totals row without a label), prefixed
by the caption above it ("Net sales: United States"). Inside the body, a row of labels without numbers starts new
column headers, unless it is a single label, which is then a caption. A cell holds a number when it has digits and
no letters and is not a year.
"""

from __future__ import annotations

import re
from collections import Counter

from routerank.errors import RouterankError

STYLES = ("pipe", "markdown", "statements")
SEPARATOR = " | "
_YEAR = re.compile(r"^(?:19|20)\d\d$")
_TRAILING = " ,:;"


def _split_line(line: str) -> list[str]:
    # a stripped line lost the spaces around its outer separators: " | a" became "| a"
    if line.startswith("|"):
        line = " " + line
    if line.endswith("|"):
        line = line + " "
    return line.split(SEPARATOR)


def _raw_rows(text: str) -> list[list[str]]:
    """The rows of a pipe table, unpadded, with cells that held line breaks put back together (cells not stripped)."""
    lines = [_split_line(line) for line in text.splitlines() if line.strip()]
    counts = Counter(len(cells) for cells in lines if len(cells) > 1)
    width = max(counts, key=lambda n: (counts[n], n)) if counts else 1  # the usual width: a ragged row is no guide
    rows: list[list[str]] = []
    for cells in lines:
        if rows and width > 1 and len(cells) == 1:
            rows[-1][-1] += "\n" + cells[0]
        elif rows and len(rows[-1]) < width and len(rows[-1]) + len(cells) - 1 == width:
            rows[-1][-1] += "\n" + cells[0]
            rows[-1].extend(cells[1:])
        else:
            rows.append(list(cells))
    return rows


def parse_table(text: str) -> list[list[str]]:
    """The rows of a " | " pipe table as lists of stripped cells, ragged rows padded with "" to the widest row.

    A cell that held a line break keeps it ("September 28,\\n2019"); see the module docstring for how such rows
    are put back together."""
    rows = [[cell.strip() for cell in row] for row in _raw_rows(text)]
    width = max((len(row) for row in rows), default=0)
    return [row + [""] * (width - len(row)) for row in rows]


def looks_like_table(text: str) -> bool:
    """Whether text reads as a pipe table: at least two rows, each of two or more cells, all of one width."""
    rows = _raw_rows(text)
    return len(rows) >= 2 and len(rows[0]) >= 2 and all(len(row) == len(rows[0]) for row in rows)


def linearise(text: str, style: str) -> str:
    """A pipe table written in `style`: `pipe` (unchanged), `markdown` (a GitHub table whose first row is the
    header) or `statements` (one sentence per value cell, "<row>, <column>: <value>.", one line per table row; a table
    that gives no sentence comes back unchanged). An unknown style raises `RouterankError` naming the styles."""
    if style == "pipe":
        return text
    if style == "markdown":
        return _markdown(parse_table(text))
    if style == "statements":
        return _statements(parse_table(text)) or text
    raise RouterankError(f"unknown table style {style!r}", fix=f"choose one of {', '.join(STYLES)}")


def _flat(cell: str) -> str:
    return " ".join(cell.split())


def _markdown(rows: list[list[str]]) -> str:
    if not rows:
        return ""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(_flat(c).replace("|", "\\|") for c in cells) + " |"

    width = len(rows[0])
    return "\n".join([line(rows[0]), "| " + " | ".join(["---"] * width) + " |", *(line(r) for r in rows[1:])])


def _is_value(cell: str) -> bool:
    """A number (not a year): what a body row holds and a header row does not."""
    return any(ch.isdigit() for ch in cell) and not any(ch.isalpha() for ch in cell) and not _YEAR.match(cell)


def _filled(row: list[str]) -> list[str]:
    return [cell for cell in row if cell]


def _is_caption(row: list[str]) -> bool:
    """One label alone in the first column, or one ending in a colon: the name of the rows below it."""
    cells = _filled(row)
    return len(cells) == 1 and (bool(row[0]) or cells[0].endswith(":"))


def _is_label_row(row: list[str]) -> bool:
    """Column labels inside the body: no numbers and no row label (or a note such as "(in millions)"), or a row label
    over nothing but years ("Number of shares | 2019 | 2018")."""
    first, rest = row[0], _filled(row[1:])
    if first and rest and all(_YEAR.match(cell) for cell in rest):
        return True
    plain_first = not first or (first.startswith("(") and first.endswith(")"))
    return plain_first and bool(rest) and not any(_is_value(cell) for cell in rest)


def _fill_spans(row: list[str]) -> list[str]:
    """Each empty cell after the first takes the nearest non-empty cell of the row (the left one on a tie)."""
    labelled = [col for col in range(1, len(row)) if row[col]]
    if not labelled:
        return list(row)
    return [row[0]] + [row[col] or row[min(labelled, key=lambda c: (abs(c - col), c))] for col in range(1, len(row))]


def _column_headers(header_rows: list[list[str]], width: int) -> list[str]:
    fullest = max(range(len(header_rows)), key=lambda i: (len(_filled(header_rows[i][1:])), i))
    rows = [row if i == fullest else _fill_spans(row) for i, row in enumerate(header_rows)]
    headers = []
    for col in range(width):
        parts: list[str] = []
        for row in rows:
            cell = _flat(row[col])
            if cell and (not parts or parts[-1] != cell):
                parts.append(cell)
        headers.append(" ".join(parts).rstrip(_TRAILING))
    return headers


def _with_section(section: str, label: str) -> str:
    if not section or not label:
        return (section or label).rstrip(_TRAILING)
    return f"{section.rstrip(_TRAILING)}: {label}"


def _row_statements(row: list[str], headers: list[str], section: str) -> str:
    cols = [c for c, cell in enumerate(row) if cell]
    label = ""
    if cols and any(ch.isalpha() for ch in row[cols[0]]):
        label = _flat(row[cols[0]]).rstrip(_TRAILING)
        cols = cols[1:]
    label = _with_section(section, label)
    sentences = []
    for col in cols:
        name = ", ".join(part for part in (label, headers[col]) if part)
        value = _flat(row[col])
        sentences.append(f"{name}: {value}." if name else f"{value}.")
    return " ".join(sentences)


def _leading_headers(rows: list[list[str]]) -> tuple[list[list[str]], str, int]:
    """The header rows at the top, the caption above or among them, and where the body starts."""
    header_rows: list[list[str]] = []
    section = ""
    for index, row in enumerate(rows):
        if _is_caption(row):
            section = _flat(_filled(row)[0])
        elif row[0] and not (row[0].startswith("(") and row[0].endswith(")")) and any(map(_is_value, row)):
            return header_rows, section, index
        elif _filled(row):
            header_rows.append(row)
    # no row holds a number: a table of words, read with its first row as the header
    body = next((i for i, row in enumerate(rows) if _filled(row) and not _is_caption(row)), len(rows))
    return rows[body : body + 1], "", body + 1


def _statements(rows: list[list[str]]) -> str:
    width = len(rows[0]) if rows else 0
    header_rows, section, start = _leading_headers(rows)
    headers = _column_headers(header_rows, width) if header_rows else [""] * width
    block: list[list[str]] = []
    lines = []
    for row in rows[start:]:
        if _is_label_row(row) and not _is_caption(row):
            block.append(row)
            continue
        if len(block) == 1 and len(_filled(block[0])) == 1:
            section = _flat(_filled(block[0])[0])  # a lone label mid-table names a section, not the columns
        elif block:
            headers = _column_headers(block, width)
        block = []
        if _is_caption(row):
            section = _flat(_filled(row)[0])
        elif _filled(row):
            lines.append(_row_statements(row, headers, section))
    return "\n".join(line for line in lines if line)
