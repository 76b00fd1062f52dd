"""LLM rewrites of a query: denoising by rewriting (`LLMRewriter`), and the multi-query baseline (`MultiQuery`).

`LLMRewriter` is the LLM alternative to the corpus speller: one generation per query asks for the question with its
typos fixed. It has the speller's interface (`correct(text)` returning a `Correction` with word-level `edits`), so a
`Decomposer` takes either. A 135M model sometimes answers instead of rewriting, or writes a new question; a rewrite
whose length strays from the query's by more than `max_growth` is refused and the query kept as typed.

`MultiQuery` is what LangChain's MultiQueryRetriever and Haystack's QueryExpander do: the LLM writes `n` rephrasings
of the query, one per line, each is searched, and the results are merged without duplicates. It rephrases the
whole query and routes nothing per intent, which is the baseline the per-intent pipeline is measured against.
The frameworks return the union in query order (every document of the first rephrasing, then the new ones of the
second, ...); `order="round-robin"` interleaves the lists instead, so each rephrasing reaches the top k.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from types import MappingProxyType

from routerank.data.types import Query, Ranking, Run
from routerank.errors import RouterankError
from routerank.generate.generator import Generator
from routerank.generate.templates import CHAT_MARKUP, TEMPLATES, Example, chatml_task
from routerank.models.llm import DEFAULT_LLM
from routerank.retrieve.base import as_query_list
from routerank.understand.decompose import TextGenerator, clean, parse_sub_queries
from routerank.understand.speller import Correction, Edit
from routerank.understand.stage import aggregate_round_robin

REWRITE_INSTRUCTION = (
    "Fix the spelling and typing mistakes in the question. Change nothing else. Write only the corrected question."
)
MULTI_QUERY_INSTRUCTION = (
    "Write {n} search queries that ask the same as the question in other words, to find more documents about it. "
    "Write one query per line, with no numbering."
)


# ChatML, the format of the offline SmolLM2-Instruct; the examples are invented, so no dataset leaks in.
REWRITE_PROMPT = chatml_task(
    "rewrite",
    REWRITE_INSTRUCTION,
    (
        Example(
            (),
            "Who desinged the Eifel Tower and wehn was it bulit?",
            "Who designed the Eiffel Tower and when was it built?",
        ),
        Example((), "What is the capital of France?", "What is the capital of France?"),
    ),
)
MULTI_QUERY_PROMPT = chatml_task(
    "multi-query",
    MULTI_QUERY_INSTRUCTION.format(n=3),
    (
        Example(
            (),
            "Does vitamin D lower the risk of fractures?",
            "vitamin D supplements and bone fracture risk\neffect of vitamin D on fractures in older adults\n"
            "can vitamin D prevent broken bones",
        ),
    ),
)
for _template in (REWRITE_PROMPT, MULTI_QUERY_PROMPT):
    TEMPLATES.setdefault(_template.name, _template)  # so `Generator(template=...)` finds them
REWRITE_STOPS = ("\n", "<|im_end|>")
MULTI_QUERY_STOPS = ("\n\n", "<|im_end|>", "\nQuestion:")
_LABEL = re.compile(r"^\s*(corrected question|question|answer)\s*:\s*", re.IGNORECASE)
_WORD = re.compile(r"\S+")


def rewrite_generator(model: str = DEFAULT_LLM, **options) -> Generator:
    """A `Generator` set up for rewriting: `REWRITE_PROMPT`, one line, room for a long query; `options` go to
    `Generator`."""
    settings = {"template": REWRITE_PROMPT.name, "stops": REWRITE_STOPS, "max_new_tokens": 64, "progress": False}
    return Generator(model, **{**settings, **options})


def multi_query_generator(model: str = DEFAULT_LLM, **options) -> Generator:
    """A `Generator` set up for the multi-query baseline: `MULTI_QUERY_PROMPT`, several lines; `options` go to
    `Generator`."""
    settings = {
        "template": MULTI_QUERY_PROMPT.name,
        "stops": MULTI_QUERY_STOPS,
        "max_new_tokens": 96,
        "progress": False,
    }
    return Generator(model, **{**settings, **options})


def levenshtein(a: str, b: str) -> int:
    """The edit distance between two words (insertions, deletions and substitutions)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def word_edits(original: str, text: str) -> tuple[Edit, ...]:
    """The words of `original` that `text` replaced, one `Edit` per replaced word span (count 0: no corpus counts
    here), with character spans of `original`."""
    old, new = list(_WORD.finditer(original)), _WORD.findall(text)
    matcher = difflib.SequenceMatcher(a=[m.group() for m in old], b=new, autojunk=False)
    edits = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or i1 == i2:
            continue
        start, end = old[i1].start(), old[i2 - 1].end()
        replacement = " ".join(new[j1:j2])
        edits.append(
            Edit(start, end, original[start:end], replacement, levenshtein(original[start:end], replacement), 0)
        )
    return tuple(edits)


def parse_rewrite(raw: str, original: str, max_growth: float = 1.5) -> str:
    """The corrected query in an LLM's output: its first non-empty line, labels, markup and quotes removed; the
    original (cleaned) when that line is empty or its length strays beyond `max_growth` times the original's."""
    cleaned = clean(original)
    lines = [clean(CHAT_MARKUP.sub(" ", line)) for line in str(raw).splitlines()]
    first = next((line for line in lines if line), "")
    first = _LABEL.sub("", first).strip().strip("\"'“”").strip()
    if not first or not cleaned:
        return cleaned
    ratio = len(first) / len(cleaned)
    return first if 1 / max_growth <= ratio <= max_growth else cleaned


class LLMRewriter:
    """Denoising by an LLM rewrite, with the corpus speller's interface (`correct(text) -> Correction`).

    generator: e.g. `rewrite_generator("smollm2")`; anything with `generate(queries) -> [answer with .raw]`.
    max_growth: a rewrite longer or shorter than the query by more than this factor is refused (the model answered
    or wrote a new question), and the query kept as typed. `llm_calls` counts the generations asked for.
    """

    def __init__(self, generator: TextGenerator, max_growth: float = 1.5):
        if max_growth < 1:
            raise RouterankError(f"max_growth must be at least 1, got {max_growth}")
        self.generator, self.max_growth = generator, max_growth
        self.llm_calls = 0

    def correct_many(self, texts: Sequence[str]) -> list[Correction]:
        """Each text rewritten, in one batched generation (cached by the generator)."""
        if not texts:
            return []
        answers = self.generator.generate([Query(f"r{i}", clean(t)) for i, t in enumerate(texts)])
        self.llm_calls += len(texts)
        out = []
        for text, answer in zip(texts, answers, strict=True):
            fixed = parse_rewrite(str(getattr(answer, "raw", "")), text, self.max_growth)
            edits = word_edits(text, fixed) if fixed != clean(text) else ()
            out.append(Correction(text, fixed if edits else clean(text), edits))
        return out

    def correct(self, text: str) -> Correction:
        """The text rewritten by the LLM, with the replaced words as edits."""
        return self.correct_many([text])[0]


ORDERS = ("round-robin", "concat")


class MultiQuery:
    """The multi-query baseline over any pipeline: `n` LLM rephrasings per query, each searched, merged without
    duplicates (see the module docstring).

    pipeline: what `routerank.pipeline.build` returns. generator: e.g. `multi_query_generator("smollm2")`.
    n: rephrasings kept per query (3, as the frameworks ask for). include_original: search the query itself too,
    first. order: "round-robin" (interleaved) or "concat" (the frameworks' union in query order). k_per_query:
    documents each rephrasing retrieves. After `search`, `last_queries` maps each query id to what was searched.
    """

    def __init__(
        self,
        pipeline,
        generator: TextGenerator,
        n: int = 3,
        include_original: bool = False,
        order: str = "round-robin",
        k_per_query: int = 100,
    ):
        if order not in ORDERS:
            raise RouterankError(f"unknown multi-query order {order!r}", fix=f"choose one of {', '.join(ORDERS)}")
        if n < 1 or k_per_query < 1:
            raise RouterankError("n and k_per_query must be at least 1")
        self.pipeline, self.generator, self.n = pipeline, generator, n
        self.include_original, self.order, self.k_per_query = include_original, order, k_per_query
        self.name = f"multi-query:{n}:{order}({pipeline.name})"
        self.llm_calls = 0
        self.last_queries: dict[str, list[str]] = {}

    def rephrasings(self, queries: Sequence[Query]) -> dict[str, list[str]]:
        """Each query's searched texts: the original (when included), then up to `n` rephrasings."""
        answers = self.generator.generate([Query(q.id, clean(q.text)) for q in queries]) if queries else []
        self.llm_calls += len(queries)
        out = {}
        for query, answer in zip(queries, answers, strict=True):
            variants = parse_sub_queries(str(getattr(answer, "raw", "")), clean(query.text), max_items=self.n)
            texts = [clean(query.text)] if self.include_original else []
            out[query.id] = list(dict.fromkeys([*texts, *variants]))
        return out

    def search(self, queries, k: int = 100) -> Run:
        """Each query's merged top `k` over its rephrasings."""
        query_list = as_query_list(queries)
        self.last_queries = self.rephrasings(query_list)
        flat = [Query(f"{q}#{i}", text) for q, texts in self.last_queries.items() for i, text in enumerate(texts)]
        run = self.pipeline.search(flat, max(k, self.k_per_query))
        rankings = {}
        for query in query_list:
            parts = [
                run[f"{query.id}#{i}"] for i in range(len(self.last_queries[query.id])) if f"{query.id}#{i}" in run
            ]
            if self.order == "round-robin":
                merged, _ = aggregate_round_robin(parts)
            else:
                ids = tuple(dict.fromkeys(d for part in parts for d in part.doc_ids))
                merged = Ranking(ids, tuple(1.0 / position for position in range(1, len(ids) + 1)))
            rankings[query.id] = merged.top(k)
        return Run(MappingProxyType(rankings), self.name)
