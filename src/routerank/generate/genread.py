"""Generated context: GenRead ("generate, then read") and HyDE, an LLM's own passages as a context source.

`GenRead` is a retriever whose documents the LLM writes: for each query it writes up to `passages` short
background passages, one per prompt variant, and returns them as a run. The passages are not in the corpus, so the
run carries them (`Run.documents`); their ids start with `gen:` and their metadata says `generated`. Anything that
takes a run's documents (a rerank stage, `retrieved_contexts`, a `mix(...)` of retrieved and generated passages, an
R3AG pool) finds them there.

`HyDE` wraps any retriever: the query plus a generated passage (or the passage alone) becomes its search query, so
the passage's vocabulary reaches documents the question's words miss (Gao et al., 2022).

Why one prompt variant per passage: decoding is greedy (cached and reproducible), so one prompt asked twice writes
the same passage twice. GenRead diversifies by clustering in-context examples; here each extra passage asks for
another kind of text (a background note, an encyclopedia entry, a textbook paragraph), which needs no sampling and
no example pool. Every passage is kept in the generator's on-disk cache, so a rerun (or HyDE and GenRead asking the
same query) costs nothing, and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from routerank.data.types import Corpus, Document, Query, Ranking, Run
from routerank.errors import RouterankError
from routerank.generate.generator import Generator
from routerank.generate.templates import CHAT_MARKUP, TEMPLATES, AnswerTemplate, Example, chatml_task
from routerank.models.llm import DEFAULT_LLM
from routerank.retrieve.base import as_query_list

PASSAGE_INSTRUCTIONS = (
    "Write a short background passage of facts that answers the question. Write plain prose, not a conversation.",
    "Write a short encyclopedia entry about the subject of the question.",
    "Write a short textbook paragraph that explains what the question asks about.",
)
PASSAGE_EXAMPLE = Example(
    (),
    "Who designed the Eiffel Tower?",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889 for the World's Fair. It was "
    "designed and built by the engineering company of Gustave Eiffel; the engineers Maurice Koechlin and Emile "
    "Nouguier drew its first plans.",
)
MAX_PASSAGES = len(PASSAGE_INSTRUCTIONS)
PASSAGE_STOPS = ("<|im_end|>", "<|im_start|>", "\nQuestion:")


def _passage_template(family: str, variant: int) -> AnswerTemplate:
    """The prompt for passage `variant` (0-based) in a model family: ChatML turns, or plain text after a cue."""
    instruction = PASSAGE_INSTRUCTIONS[variant]
    if family == "chatml":
        return chatml_task(f"genread{variant + 1}", instruction, (PASSAGE_EXAMPLE,))
    ask = "Question: {question}\nPassage:"
    return AnswerTemplate(
        name=f"genread{variant + 1}-plain",
        head="{instruction}\n\n",
        open_ask=ask,
        closed_ask=ask,
        reply=" {answer}\n\n",
        version=1,
        open_instruction=instruction,
        closed_instruction=instruction,
        open_examples=(),
        closed_examples=(PASSAGE_EXAMPLE,),
    )


for _family in ("chatml", "plain"):
    for _variant in range(MAX_PASSAGES):
        _template = _passage_template(_family, _variant)
        TEMPLATES.setdefault(_template.name, _template)  # so `Generator(template="genread1")` finds it


def clean_passage(raw: str) -> str:
    """A generated passage as a document's text: chat markup dropped, cut at its first blank line (after any
    leading whitespace), whitespace runs collapsed."""
    text = CHAT_MARKUP.sub(" ", raw).strip()
    text = text.split("\n\n", 1)[0]
    return " ".join(text.split())


@dataclass(frozen=True)
class Written:
    """One generated passage: the query text it was written for, the prompt variant, the text, and its cost."""

    query: str
    variant: int
    text: str
    tokens: int
    cached: bool


class PassageWriter:
    """Writes passages for query texts with one loaded LLM, a cached `Generator` per prompt variant.

    model: LLM spec (default: the packaged SmolLM2). max_new_tokens: a passage's length limit (96 tokens: a
    paragraph; longer costs time on a CPU and a 135M model drifts off topic). loaded: an already-loaded
    (model, tokenizer), e.g. a scripted test model. cache_dir: where generations are kept (default:
    ROUTERANK_CACHE/generations). Counters `llm_calls`, `generated_tokens` and `passages` add up what it wrote,
    cached or not (a cached passage costs what it cost when it was written); `cached` counts the cached ones.
    """

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        *,
        max_new_tokens: int = 96,
        batch_size: int = 8,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        progress: bool = False,
        loaded: tuple | None = None,
    ):
        self.model_spec = model
        first = Generator(
            model,
            template="genread1",
            max_new_tokens=max_new_tokens,
            stops=PASSAGE_STOPS,
            batch_size=batch_size,
            cache=cache,
            cache_dir=cache_dir,
            progress=progress,
            loaded=loaded,
        )
        family = "chatml" if "<|im_start|>" in first.tokenizer.get_vocab() else "plain"
        names = [_passage_template(family, v).name for v in range(MAX_PASSAGES)]
        self.generators = [first.with_template(name) for name in names]
        self.model, self.tokenizer = first.model, first.tokenizer  # the loaded LLM, e.g. to score with it too
        self.llm_calls = self.generated_tokens = self.passages = self.cached = 0

    def write(self, texts: Sequence[str], variant: int = 0) -> list[Written]:
        """One passage per text, from prompt `variant` (0 to MAX_PASSAGES - 1)."""
        if not 0 <= variant < MAX_PASSAGES:
            raise RouterankError(f"passage variant {variant} is outside 0..{MAX_PASSAGES - 1}")
        if not texts:
            return []
        answers = self.generators[variant].generate([Query(f"w{i}", t) for i, t in enumerate(texts)])
        out = []
        for text, answer in zip(texts, answers, strict=True):
            tokens = len(self.tokenizer(answer.raw, add_special_tokens=False)["input_ids"])
            out.append(Written(text, variant, clean_passage(answer.raw), tokens, answer.cached))
        self.llm_calls += len(out)
        self.generated_tokens += sum(w.tokens for w in out)
        self.passages += len(out)
        self.cached += sum(w.cached for w in out)
        return out

    def cost(self) -> dict[str, int]:
        """What it has written so far: LLM calls (one per passage), generated tokens, passages, and how many of
        those passages came from the cache (written before, so they cost no time now)."""
        return {
            "llm_calls": self.llm_calls,
            "generated_tokens": self.generated_tokens,
            "passages": self.passages,
            "cached": self.cached,
        }

    def reset_cost(self) -> None:
        """Start the counters again from zero."""
        self.llm_calls = self.generated_tokens = self.passages = self.cached = 0

    def key(self, variant: int) -> str:
        """The cache key of prompt `variant`'s generator: model, template and decoding settings."""
        return self.generators[variant].key


_WRITERS: dict[tuple, PassageWriter] = {}


def passage_writer(model: str = DEFAULT_LLM, **options) -> PassageWriter:
    """A `PassageWriter` shared in this process by every GenRead and HyDE with the same model and options, so a
    pipeline that both generates and searches with HyDE loads the LLM once."""
    key = (model, tuple(sorted(options.items())))
    if key not in _WRITERS:
        _WRITERS[key] = PassageWriter(model, **options)
    return _WRITERS[key]


def passage_id(key: str, query: str) -> str:
    """The id of the passage a generator (by cache key) wrote for a query text: `gen:` and 16 hex digits."""
    return "gen:" + hashlib.sha256(f"{key}\n{query}".encode()).hexdigest()[:16]


class WriterCost:
    """What a context source built on a shared `PassageWriter` has cost: the writer's counters since the source was
    made (or `reset_cost`), so sources sharing one writer each count their own."""

    writer: PassageWriter
    _cost_base: dict[str, int]

    def cost(self) -> dict[str, int]:
        """LLM calls, generated tokens, passages and cached passages since this source was made (or `reset_cost`)."""
        now = self.writer.cost()
        return {key: now[key] - self._cost_base.get(key, 0) for key in now}

    def reset_cost(self) -> None:
        """Count cost from now on."""
        self._cost_base = self.writer.cost()


class GenRead(WriterCost):
    """A context source whose documents an LLM writes: up to `passages` passages per query (see the module
    docstring). It searches like a retriever, so it fits wherever one does: a pipeline spec (`genread`,
    `genread:n=2`, `mix(2*hybrid,1*genread)`), an R3AG pool member, or `run_qa(retriever=...)`.

    model: LLM spec, default the packaged SmolLM2. passages: passages per query (1 to 3, one per prompt variant);
    `search(queries, k)` returns min(k, passages). writer: a `PassageWriter` to use instead of the shared one.
    Other options (max_new_tokens, cache_dir, loaded, ...) go to the writer.
    """

    def __init__(
        self, model: str = DEFAULT_LLM, *, passages: int = 1, writer: PassageWriter | None = None, **writer_options
    ):
        if not 1 <= passages <= MAX_PASSAGES:
            raise RouterankError(f"genread writes 1 to {MAX_PASSAGES} passages per query, got {passages}")
        self.passages = passages
        self.writer = writer if writer is not None else passage_writer(model, **writer_options)
        self.name = "genread" if model == DEFAULT_LLM else f"genread:{model}"
        self._cost_base = self.writer.cost()

    def index(self, corpus: Corpus) -> None:
        """Nothing to index: the passages come from the LLM, not the corpus."""

    def search(self, queries: Iterable[Query] | Mapping[str, Query], k: int = 100) -> Run:
        """Each query's generated passages, first variant first, as a run that carries them (`Run.documents`). A
        passage that came out empty, or the same as an earlier variant's, is left out of its ranking: it adds
        nothing to read."""
        query_list = as_query_list(queries)
        count = max(0, min(k, self.passages))
        texts = [q.text for q in query_list]
        rankings: dict[str, list[str]] = {q.id: [] for q in query_list}
        documents: dict[str, Document] = {}
        for variant in range(count):
            key = self.writer.key(variant)
            for query, written in zip(query_list, self.writer.write(texts, variant), strict=True):
                if not written.text or any(documents[d].text == written.text for d in rankings[query.id]):
                    continue  # nothing written, or the same passage as an earlier variant's
                doc_id = passage_id(key, query.text)
                documents[doc_id] = Document(
                    doc_id,
                    written.text,
                    metadata={"generated": True, "source": self.name, "variant": variant, "query": query.text},
                )
                rankings[query.id].append(doc_id)
        out = {q: Ranking(tuple(ids), tuple(float(-i) for i in range(len(ids)))) for q, ids in rankings.items()}
        return Run(MappingProxyType(out), self.name, MappingProxyType(documents))

    def write(self, texts: Sequence[str]) -> list[Document]:
        """One passage (the first variant) for each text: e.g. a continuation context for a passage's first half."""
        key = self.writer.key(0)
        return [
            Document(passage_id(key, w.query), w.text, metadata={"generated": True, "source": self.name})
            for w in self.writer.write(list(texts), 0)
        ]

    def save(self, path: str | Path) -> None:
        """Nothing to save: passages live in the generation cache."""


HYDE_MODES = ("query+passage", "passage")


class HyDE(WriterCost):
    """Hypothetical document embeddings, for any retriever: the LLM writes a passage that would answer the query,
    and `retriever` searches with the query plus that passage (`mode="query+passage"`) or the passage alone
    (`"passage"`; the query itself when the passage came out empty). Spec: `hyde(bm25)`, `hyde(dense,mode=passage)`.

    The passage is GenRead's first variant for the same query, from the same cache: HyDE over two retrievers and
    GenRead on the same queries share one generation.
    """

    def __init__(
        self,
        retriever,
        model: str = DEFAULT_LLM,
        *,
        mode: str = "query+passage",
        writer: PassageWriter | None = None,
        **writer_options,
    ):
        if mode not in HYDE_MODES:
            raise RouterankError(f"unknown hyde mode {mode!r}", fix=f"choose one of {', '.join(HYDE_MODES)}")
        self.retriever, self.mode = retriever, mode
        self.writer = writer if writer is not None else passage_writer(model, **writer_options)
        self.name = f"hyde({retriever.name})"
        self._cost_base = self.writer.cost()
        self.last_queries: list[Query] = []

    @property
    def retrievers(self) -> list:
        """The wrapped retriever, as a one-item list, so pipelines ready its index from the cache."""
        return [self.retriever]

    @retrievers.setter
    def retrievers(self, value: list) -> None:
        (self.retriever,) = value

    def index(self, corpus: Corpus) -> None:
        """Index the corpus with the wrapped retriever."""
        self.retriever.index(corpus)

    def expand(self, queries: Iterable[Query] | Mapping[str, Query]) -> list[Query]:
        """The queries the wrapped retriever searches with: same ids, the text per `mode`."""
        query_list = as_query_list(queries)
        written = self.writer.write([q.text for q in query_list], 0)
        out = []
        for query, passage in zip(query_list, written, strict=True):
            if not passage.text:
                text = query.text
            elif self.mode == "passage":
                text = passage.text
            else:
                text = f"{query.text} {passage.text}"
            out.append(Query(query.id, text, query.answers, query.metadata))
        return out

    def search(self, queries: Iterable[Query] | Mapping[str, Query], k: int = 100) -> Run:
        """The wrapped retriever's run for the expanded queries (kept in `last_queries`), named `hyde(...)`."""
        self.last_queries = self.expand(queries)
        run = self.retriever.search(self.last_queries, k)
        return Run(run.rankings, self.name, run.documents)

    def save(self, path: str | Path) -> None:
        """Save the wrapped retriever's index to `path`."""
        self.retriever.save(path)
