"""Query decomposition: one query with several intents becomes several sub-queries, each retrieved on its own.

Two decomposers, and a `Decomposer` that picks between them:

- **rules** (`split_rules`) split what has a surface form, and nothing else:
  - two questions in one: "X? Y?", "X? Also, Y", "X; Y" (both sides a question or a clause of 3+ words);
  - two clauses joined by "and" whose right side opens with its own wh-word: "What is X and how does Y work?";
  - a coordination of two named entities, "A or B" / "A and B", inside a question that compares or pairs them:
    "Which battle occurred first, the Battle of Manila or the Battle of Guam?", "What pursuit did both A and B
    have in common?", "Were A and B released in the same year?". An entity is a run of capitalised (or quoted,
    or numbered) words, such as "277 Park Avenue" or "José Echegaray y Eizaguirre"; "salt and pepper" is none.
    Each sub-query keeps the shared frame and names one entity: the query with the coordination replaced by
    that entity and a "both"/"either" dropped ("What pursuit did Gevork Minaskanian have in common?"). The
    frame keeps the relation words a retriever needs, the entity picks the document.
  A pair of entities is split only when the query pairs them: it is a question (a "?" or an opening wh-word or
  auxiliary) and it has a pairing cue ("both", "either", "in common", "shared", "same", "compared") or the pair
  closes a comma-framed comparison ("Which came first, A or B?") or, for "or", the query is a question at all.
  A yes/no question that opens with an auxiliary and pairs two entities ("Are A and B coastal cities?") splits;
  a pair after "between" is a range ("between May 2019 and August 2019") and never splits.
- **llm** (`decompose_llm`) asks a causal LM for the independent sub-questions, one per line, through the
  project's `Generator` (so generations are cached on disk like answers) with `DECOMPOSE_PROMPT`, and reads its
  output with `parse_sub_queries`, which never raises. Fewer than two sub-questions means one intent: the query
  stays as it is, so a model that rephrases a one-intent query changes nothing.

A sub-query records the span of the original query it is about (a question's span, or one entity's span; None
when an LLM wrote it and its text is not in the query), whether its text differs from that span, and its source.

`Decomposer.understand` guarantees that a one-intent query comes back as exactly one sub-query equal to the
cleaned query (whitespace collapsed) and costs at most one LLM call; `routerank.understand.stage` then returns
the wrapped pipeline's ranking unchanged for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

from routerank.data.types import Query
from routerank.errors import RouterankError
from routerank.generate.generator import Generator
from routerank.generate.templates import CHAT_MARKUP, TEMPLATES, AnswerTemplate, Example, chatml_task
from routerank.models.llm import DEFAULT_LLM

MODES = ("rules", "llm", "auto", "off")
MAX_SUB_QUERIES = 4

WH_WORDS = frozenset(["what", "which", "who", "whom", "whose", "when", "where", "why", "how"])
AUXILIARIES = frozenset(
    ["is", "are", "was", "were", "do", "does", "did", "can", "could", "has", "have", "had", "will", "would", "should"]
)
# Capitalised words that start a question or a phrase but never a name.
NOT_NAMES = (
    WH_WORDS
    | AUXILIARIES
    | frozenset(["in", "on", "at", "for", "from", "by", "with", "between", "both", "either", "neither", "if"])
)
# Lowercase words that may sit inside a name: "Battle of Manila", "José Echegaray y Eizaguirre".
NAME_JOINERS = frozenset(["of", "the", "de", "y", "von", "van", "der", "da", "di", "la", "le", "du", "del", "des"])
PAIRING_CUES = re.compile(r"\b(both|either|in common|shared|same|compared)\b", re.IGNORECASE)
WORD = re.compile(r"\S+")
TRAILING = ".,;:?!"


@dataclass(frozen=True)
class SubQuery:
    """One intent of a query: its text, the span of the original query it came from (None when an LLM wrote
    text the query does not hold), whether the text differs from that span, and which decomposer made it
    ("rules", "llm", or "none" when the query was kept whole)."""

    text: str
    span: tuple[int, int] | None
    rewritten: bool
    source: str


@dataclass(frozen=True)
class Understanding:
    """What the decomposer made of one query: the original, the cleaned query (whitespace collapsed, and spelling
    corrected when a speller is set), its sub-queries (exactly one, equal to `cleaned`, for a one-intent query;
    their spans index `cleaned`), the LLM calls it cost, and the speller's edits (spans of the original)."""

    original: str
    cleaned: str
    sub_queries: tuple[SubQuery, ...]
    llm_calls: int
    corrections: tuple[Any, ...] = ()

    @property
    def split(self) -> bool:
        """Whether the query was split into two or more sub-queries."""
        return len(self.sub_queries) > 1


def clean(query: str) -> str:
    """The query with its whitespace collapsed to single spaces and trimmed."""
    return " ".join(query.split())


def whole(query: str, source: str = "none") -> SubQuery:
    """The one sub-query of a query kept whole: the cleaned query, spanning all of the original."""
    cleaned = clean(query)
    return SubQuery(cleaned, (0, len(query)), cleaned != query, source)


# ----------------------------------------------------------------------------------------------------- rules


def _first_word(text: str) -> str:
    match = WORD.search(text)
    return match.group().strip(TRAILING + "\"'“”").lower() if match else ""


def _is_question(text: str) -> bool:
    return text.rstrip().endswith("?") or _first_word(text) in WH_WORDS | AUXILIARIES


LEADS = re.compile(r"[\s,]*(?:(?:and also|and separately|also|and|in addition|separately)\s*[,:]?\s+)?", re.IGNORECASE)
SENTENCE_CUT = re.compile(
    r"(?<=[A-Za-z0-9%)\]]{2})[.!](?=\s+(?:also|in addition|separately|and|"
    + "|".join(sorted(WH_WORDS | AUXILIARIES))
    + r")\b)|\?(?=\s+\S)|;(?=\s*\S)",
    re.IGNORECASE,
)
DASH_CUT = re.compile(r"\s[-\u2013\u2014]\s(?=(?:and|also)\b)", re.IGNORECASE)
WH_CLAUSE_CUT = re.compile(r",?\s+and\s+(?=(?:what|which|who|when|where|why|how)\s+\w+\s+\w)")


def _part(query: str, start: int, end: int) -> SubQuery | None:
    """The sub-query of `query[start:end]` with surrounding space and a leading connective ("Also,", "And",
    "In addition,", "and separately,") dropped; None when fewer than three words are left."""
    lead = LEADS.match(query[start:end])
    start += lead.end() if lead else 0
    text = query[start:end].rstrip().rstrip(";,").rstrip()
    end = start + len(text)
    if len(text.split()) < 3:
        return None
    cleaned = clean(text)
    return SubQuery(cleaned, (start, end), cleaned != text, "rules")


def split_questions(query: str) -> list[SubQuery]:
    """Two or more questions or requests in one: split after "?" before more text, at ";", at "." or "!" before a
    connective ("Also", "In addition", "And") or a new question (a wh-word or an auxiliary), at a dash before
    "and"/"also", and at "and" before a clause with its own wh-word. A plain sentence end does not split, so a
    one-intent query told in several sentences stays whole. Each part needs three words or more, else the query
    stays whole (one item)."""
    cuts = [m.end() for m in SENTENCE_CUT.finditer(query)] + [m.start() for m in DASH_CUT.finditer(query)]
    cuts += [m.start() for m in WH_CLAUSE_CUT.finditer(query)]
    bounds = [0, *sorted(set(cuts)), len(query)]
    parts = [_part(query, a, b) for a, b in zip(bounds, bounds[1:], strict=False)]
    if len(parts) < 2 or any(p is None for p in parts):
        return [whole(query)]
    return [p for p in parts if p is not None]


def _name_word(word: str) -> bool:
    core = word.strip(TRAILING + "\"'“”()")
    if not core or core.lower() in NOT_NAMES:
        return False
    return core[0].isupper() or core[0].isdigit() or word[0] in "\"“'"


def _has_letter(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


QUOTES = "\"“”'"


def _closes_quote(word: str) -> bool:
    return word.rstrip(TRAILING)[-1:] in '"”' and len(word.rstrip(TRAILING)) > 0


def _name_left(words: list[re.Match], end: int, floor: int) -> int | None:
    """Index of the first word of the name ending at words[end], scanning back no further than `floor`."""
    i = end
    if words[i].group()[-1] in ",;":
        return None
    if _closes_quote(words[i].group()):  # a quoted title: back to its opening quote
        for start in range(end, max(floor, end - 12) - 1, -1):
            if words[start].group()[0] in '"“':
                return start
        return None
    if not _name_word(words[i].group()):
        return None
    while i - 1 >= floor:
        prev = words[i - 1].group()
        if prev[-1] in ",;:":
            break
        if _name_word(prev) or prev.lower() in NAME_JOINERS and i - 2 >= floor and _name_word(words[i - 2].group()):
            i -= 1
        elif prev.lower() == "the":
            i -= 1
            break
        else:
            break
    while words[i].group().lower() in NAME_JOINERS - {"the"}:  # a name does not start with "of"
        i += 1
    return i if i <= end else None


def _ends_name(word: str) -> bool:
    """Whether a word closes a name: it ends with punctuation other than an initial's or abbreviation's dot."""
    if word[-1] in ",;:?!":
        return True
    return word[-1] == "." and len(word.strip(".")) > 3


def _name_right(words: list[re.Match], start: int) -> int | None:
    """Index of the last word of the name starting at words[start]."""
    i = start
    if words[i].group()[0] in '"“':  # a quoted title: on to its closing quote
        for end in range(start, min(len(words), start + 12)):
            if _closes_quote(words[end].group()) and (end > start or len(words[end].group().strip(TRAILING)) > 1):
                return end
        return None
    if words[i].group().lower() == "the" and i + 1 < len(words):
        i += 1
    if not _name_word(words[i].group()):
        return None
    while i + 1 < len(words) and not _ends_name(words[i].group()):
        nxt = words[i + 1].group()
        if _name_word(nxt) or (nxt.lower() in NAME_JOINERS and i + 2 < len(words) and _name_word(words[i + 2].group())):
            i += 1
        else:
            break
    return i


def _comma_pair(words: list[re.Match], j: int, floor: int) -> tuple[int, int] | None:
    """(first, last) word of a comma-framed pair, "FRAME, A or B[, REST]": A is all of the words from the comma
    to the joiner and B all up to the next comma or the end, when neither holds a wh-word and each is short."""
    if floor == 0:
        return None
    right_end = next((i for i in range(j + 1, len(words)) if words[i].group()[-1] in ",;:"), len(words) - 1)
    sides = (words[floor:j], words[j + 1 : right_end + 1])
    for side in sides:
        plain = [w.group().strip(TRAILING + QUOTES).lower() for w in side]
        if not 1 <= len(side) <= 8 or any(w in NOT_NAMES for w in plain):
            return None
        if not (_name_word(side[0].group()) or plain[0] == "the"):
            return None
    return floor, right_end


def _span_of(words: list[re.Match], first: int, last: int, query: str) -> tuple[int, int]:
    start, end = words[first].start(), words[last].end()
    while end > start and query[end - 1] in TRAILING:
        end -= 1
    return start, end


def _frame(query: str, span: tuple[int, int], entity: str) -> str:
    """The query with the coordination at `span` replaced by one entity and "both"/"either" dropped."""
    text = f"{query[: span[0]]}{entity}{query[span[1] :]}"
    text = re.sub(r"\b(both|either)\s+", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\s+([,?!.])", r"\1", clean(text))
    return re.sub(r",\s*([?!.]|$)", r"\1", text)


def _pairing(query: str, joiner: str, comma_framed: bool) -> bool:
    if not _is_question(query):
        return False
    if joiner == "or" or comma_framed or PAIRING_CUES.search(query):
        return True
    return _first_word(query) in AUXILIARIES


def split_entities(query: str) -> list[SubQuery]:
    """A question that pairs two named entities ("A or B", "both A and B") as one sub-query per entity, each
    keeping the shared frame; the whole query when there is no such pair."""
    words = list(WORD.finditer(query))
    joiners = [j for w in ("or", "and") for j, m in enumerate(words) if m.group().lower() == w]
    for j in joiners:
        if j == 0 or j + 1 >= len(words):
            continue
        floor = next((i + 1 for i in range(j - 1, -1, -1) if words[i].group()[-1] in ",;:"), 0)
        pair = _comma_pair(words, j, floor)
        if pair is None:
            first, last = _name_left(words, j - 1, floor), _name_right(words, j + 1)
        else:
            first, last = pair
        if first is None or last is None or (first > 0 and words[first - 1].group().lower() == "between"):
            continue
        if not _pairing(query, words[j].group().lower(), pair is not None):
            continue
        left = _span_of(words, first, j - 1, query)
        right = _span_of(words, j + 1, last, query)
        names = [query[left[0] : left[1]], query[right[0] : right[1]]]
        if not all(_has_letter(n) for n in names):
            continue
        pair = (left[0], right[1])
        out = []
        for name, span in zip(names, (left, right), strict=True):
            text = _frame(query, pair, name)
            out.append(SubQuery(text, span, text != name, "rules"))
        return out
    return [whole(query)]


def split_rules(query: str) -> list[SubQuery]:
    """The rule-based decomposition (see the module docstring): questions first, then an entity pair inside each
    question; at most `MAX_SUB_QUERIES`. A query with nothing to split gives one sub-query, the cleaned query."""
    questions = split_questions(query)
    if len(questions) > 1:
        return questions[:MAX_SUB_QUERIES]
    return split_entities(query)[:MAX_SUB_QUERIES]


# ------------------------------------------------------------------------------------------------------- LLM

DECOMPOSE_INSTRUCTION = (
    "Split the question into the independent sub-questions that must be answered to answer it. "
    "Write one sub-question per line, with no numbering. "
    "If the question asks only one thing, write it back unchanged on one line."
)

# ChatML, the format of the offline SmolLM2-Instruct; the examples are invented, so no dataset leaks in.
DECOMPOSE_PROMPT = chatml_task(
    "decompose",
    DECOMPOSE_INSTRUCTION,
    (
        Example(
            (),
            "Who designed the Eiffel Tower and when was the Statue of Liberty built?",
            "Who designed the Eiffel Tower?\nWhen was the Statue of Liberty built?",
        ),
        Example((), "What is the capital of France?", "What is the capital of France?"),
    ),
)
TEMPLATES.setdefault(DECOMPOSE_PROMPT.name, DECOMPOSE_PROMPT)  # so `Generator(template="decompose")` finds it
DECOMPOSE_STOPS = ("\n\n", "<|im_end|>", "\nQuestion:")

_LABEL = re.compile(r"^(sub-?\s*questions?|questions?|answer|output|assistant|user)\s*[:\-]\s*", re.IGNORECASE)
_BULLET = re.compile(r"^(?:[-*•·‣▪>]+|\(?\d{1,3}[.):\]]|\([a-zA-Z]\)|[a-zA-Z][.)](?=\s)|q\d{1,2}[.:)])\s*", re.I)
_QUOTED = re.compile(r'^["“\'](.*)["”\']$')


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


def _clean_line(line: str) -> tuple[str, str]:
    """(label, text) of one output line: markup, a label, bullets, numbering and enclosing quotes removed."""
    text = CHAT_MARKUP.sub(" ", line).strip()
    label = ""
    for _ in range(4):
        before = text
        found = _LABEL.match(text)
        if found:
            label = label or found.group(1).lower()
            text = text[found.end() :].strip()
        text = _BULLET.sub("", text).strip()
        quoted = _QUOTED.match(text)
        if quoted:
            text = quoted.group(1).strip()
        if text == before:
            break
    return label, text


def parse_sub_queries(output: str, original: str, max_items: int = MAX_SUB_QUERIES, max_chars: int = 300) -> list[str]:
    """The sub-questions in an LLM's output: one per line, numbering, bullets, labels ("Question:",
    "Sub-questions:"), chat markup and quotes removed, duplicates (case and spacing aside) and punctuation-only
    lines dropped, at most `max_items` of at most `max_chars` characters each. A "Question:" line after the
    first sub-question starts a new example and ends the list. An echo of `original` is dropped when other
    sub-questions follow. Nothing usable gives `[original]` (cut to `max_chars`). Never raises."""
    max_items, max_chars = max(1, int(max_items)), max(1, int(max_chars))
    fallback = [clean(original)[:max_chars].strip() or original[:max_chars]]
    items: list[str] = []
    seen: set[str] = set()
    for line in str(output).splitlines():
        label, text = _clean_line(line)
        if label.startswith("question") and not label.startswith("questions") and items:
            break
        text = clean(text)[:max_chars].strip()
        if not any(ch.isalnum() for ch in text) or _key(text) == _key(DECOMPOSE_INSTRUCTION):
            continue
        if _key(text) not in seen:
            seen.add(_key(text))
            items.append(text)
    if len(items) > 1:
        items = [item for item in items if _key(item) != _key(original)] or items
    return items[:max_items] or fallback


class TextGenerator(Protocol):
    """What `decompose_llm` needs of a generator: `generate` a list of queries into answers with a `.raw` text
    (`routerank.generate.Generator` is one)."""

    def generate(self, queries, contexts=None) -> list:
        """One answer per query, each with the decoded text as `.raw`."""
        ...


def decomposition_generator(model: str = DEFAULT_LLM, **options) -> Generator:
    """A `Generator` set up for decomposition: `DECOMPOSE_PROMPT`, stopping at a blank line rather than at the
    first newline, room for four sub-questions, and its own generation cache; `options` go to `Generator`."""
    settings = {"template": DECOMPOSE_PROMPT.name, "stops": DECOMPOSE_STOPS, "max_new_tokens": 96, "progress": False}
    return Generator(model, **{**settings, **options})


def decompose_llm(query: str, generator: TextGenerator, max_items: int = MAX_SUB_QUERIES) -> list[SubQuery]:
    """The sub-queries an LLM finds in `query` (one generation, cached by the generator). Fewer than two means one
    intent: the query kept whole. A sub-query found verbatim in the query carries its span."""
    template = getattr(generator, "template", None)
    if isinstance(template, AnswerTemplate) and template.name != DECOMPOSE_PROMPT.name:
        raise RouterankError(
            f"the generator answers with the {template.name!r} template, not the decomposition prompt",
            fix="build it with routerank.understand.decompose.decomposition_generator(model)",
        )
    answers = generator.generate([Query("decompose", clean(query))])
    raw = str(getattr(answers[0], "raw", "")) if answers else ""
    texts = parse_sub_queries(raw, clean(query), max_items)
    if len(texts) < 2:
        return [whole(query, "none")]
    out = []
    for text in texts:
        start = query.find(text)
        span = (start, start + len(text)) if start >= 0 else None
        out.append(SubQuery(text, span, span is None, "llm"))
    return out


class Decomposer:
    """Turns a query into its intents.

    mode: "rules" (`split_rules`, no LLM), "llm" (one LLM call per query), "auto" (the rules when they split,
        else one LLM call: the rules are free and precise on what they recognise, the LLM covers the rest), or
        "off" (every query kept whole).
    generator: what "llm" and "auto" call, e.g. `decomposition_generator("smollm2")`; unused otherwise.
    speller: denoising before decomposition, e.g. `routerank.understand.speller.speller_for(corpus)`: anything with
        `correct(text)` returning `.text` and `.edits`; None (the default) leaves the query's words as typed.

    A one-intent query costs at most one LLM call and comes back as one sub-query equal to the cleaned query.
    """

    def __init__(self, mode: str = "rules", generator: TextGenerator | None = None, speller: Any | None = None):
        if mode not in MODES:
            raise RouterankError(f"unknown decomposition mode {mode!r}", fix=f"choose one of {', '.join(MODES)}")
        if mode in ("llm", "auto") and generator is None:
            raise RouterankError(
                f"decomposition mode {mode!r} needs an LLM generator",
                fix='pass generator=decomposition_generator("smollm2"), or use mode="rules"',
            )
        self.mode, self.generator, self.speller = mode, generator, speller

    def understand(self, query: Query | str) -> Understanding:
        """The query's sub-queries under this decomposer's mode, and the LLM calls they cost."""
        original = query.text if isinstance(query, Query) else query
        text, corrections = clean(original), ()
        if self.speller is not None:
            correction = self.speller.correct(text)
            text, corrections = correction.text, tuple(correction.edits)
        calls = 0
        if self.mode == "off":
            parts = [whole(text)]
        else:
            parts = split_rules(text) if self.mode in ("rules", "auto") else [whole(text)]
            if len(parts) < 2 and self.mode in ("llm", "auto"):
                parts, calls = decompose_llm(text, self.generator), 1
        if len(parts) < 2:
            parts = [whole(text)]
        return Understanding(original, clean(text), tuple(parts), calls, corrections)
