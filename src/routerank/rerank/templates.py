"""Every prompt of the LLM rerankers, as data: one per model family, tested for exact text (scores and caches
depend on it, so a template's text never changes in place).

Yes/no templates (pointwise) and choice templates (setwise and pairwise: pick one labelled passage) live here,
and so do the prompts of the GRPO-trained rerankers: ProRank's 0/1 judgement (a yes/no template whose answer
tokens are "1" and "0") and Rank-R1's setwise prompt that asks for `<think>` reasoning and an `<answer>` label;
then the listwise prompt (`LISTWISE_TEMPLATE`), in-context reranking's (`ICR_TEMPLATE`) and query likelihood's
(`QLM_PROMPT`). The trainers reuse these; their own target texts are in `routerank.train.templates`.
A yes/no prompt is four segments, tokenized separately and concatenated, so the shared part is computed once:

    prefix (system + instruction)  |  query segment  |  document segment  |  suffix (answer cue)

Segment boundaries sit where a BPE pre-tokenizer splits anyway (before a space or a special token), so the
concatenated ids equal those of the whole prompt tokenized at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from routerank.errors import SpecError

JUDGE_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
PRORANK_SYSTEM = (
    "Judge whether the Document is relevant to the Query, given the Instruct. "
    "Answer with a single digit: 1 if it is relevant, 0 if it is not."
)


@dataclass(frozen=True)
class YesNoTemplate:
    """A yes/no prompt as four format strings (prefix, query, document, suffix), and the answer tokens whose
    next-token logits are compared."""

    name: str
    prefix: str  # formatted with {instruction}
    query: str  # formatted with {query}
    document: str  # formatted with {document}
    suffix: str
    yes: str = "yes"
    no: str = "no"

    def segments(self, query: str, document: str, instruction: str = DEFAULT_INSTRUCTION) -> tuple[str, str, str, str]:
        """The four segments, formatted: (prefix, query, document, suffix), to be tokenized separately."""
        return (
            self.prefix.format(instruction=instruction),
            self.query.format(query=query),
            self.document.format(document=document),
            self.suffix,
        )

    def render(self, query: str, document: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
        """The whole prompt as one text: the four segments joined."""
        return "".join(self.segments(query, document, instruction))


CHATML_PREFIX = (
    "<|im_start|>system\n" + JUDGE_SYSTEM + "<|im_end|>\n<|im_start|>user\n<Instruct>: {instruction}\n<Query>:"
)

TEMPLATES: dict[str, YesNoTemplate] = {
    # ChatML framing as SmolLM2-Instruct was tuned on; the Qwen3-Reranker judge wording.
    "chatml": YesNoTemplate(
        name="chatml",
        prefix=CHATML_PREFIX,
        query=" {query}\n<Document>:",
        document=" {document}",
        suffix="<|im_end|>\n<|im_start|>assistant\n",
    ),
    # Qwen3-Reranker's own prompt, with its empty think block before the answer.
    "qwen3": YesNoTemplate(
        name="qwen3",
        prefix=CHATML_PREFIX,
        query=" {query}\n<Document>:",
        document=" {document}",
        suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    ),
    # ProRank (ChatML framing): the model writes one digit, 1 (relevant) or 0. GRPO stage 1 trains on exactly this
    # text, stage 2 and the reranker read P("1") against P("0") after it.
    "prorank": YesNoTemplate(
        name="prorank",
        prefix=CHATML_PREFIX.replace(JUDGE_SYSTEM, PRORANK_SYSTEM),
        query=" {query}\n<Document>:",
        document=" {document}",
        suffix="<|im_end|>\n<|im_start|>assistant\n",
        yes="1",
        no="0",
    ),
}


def get_template(name: str | YesNoTemplate) -> YesNoTemplate:
    """A registered yes/no template by name; a YesNoTemplate passes through (e.g. the R3AG judge's prompts)."""
    if isinstance(name, YesNoTemplate):
        return name
    if name not in TEMPLATES:
        raise SpecError(f"unknown prompt template {name!r}", fix=f"choose one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]


@dataclass(frozen=True)
class ChoiceTemplate:
    """Labelled passages, then a cue after which the model's next token is the label of the passage it picks.

    The cue ends in "Passage", so the answer token is " A", " B", ... whatever the model would write first.
    A reasoning template (Rank-R1) ends its tail where the model starts to write, and keeps the cue that skips
    the reasoning in `cue`: `render(..., cue=False)` is the prompt a reasoning model generates from."""

    name: str
    head: str  # formatted with {query} and {count}
    passage: str  # formatted with {label} and {passage}
    tail: str  # formatted with {query}, {count} and {labels} ("A, B, C or D")
    answer: str = " {label}"  # the token read from the next-token logits
    labels: str = "ABCDEFGHIJKLMNOPQRST"
    cue: str = ""  # appended after the tail when the answer is read from logits, not generated

    @property
    def reasons(self) -> bool:
        """Whether the model was taught to reason before it answers (the prompt can be generated from)."""
        return bool(self.cue)

    def render(self, query: str, passages: list[str] | tuple[str, ...], *, cue: bool = True) -> str:
        """The prompt for 2 to len(labels) passages, labelled A, B, ...; `cue=False` leaves a reasoning template's
        answer cue off. A SpecError for another number of passages."""
        if not 2 <= len(passages) <= len(self.labels):
            raise SpecError(
                f"a choice prompt shows 2 to {len(self.labels)} passages, got {len(passages)}",
                fix=f"use a set size k between 2 and {len(self.labels)}",
            )
        labels = self.labels[: len(passages)]
        spoken = ", ".join(labels[:-1]) + f" or {labels[-1]}"
        fields = {"query": query, "count": len(passages), "labels": spoken}
        body = "".join(self.passage.format(label=label, passage=p) for label, p in zip(labels, passages, strict=True))
        return self.head.format(**fields) + body + self.tail.format(**fields) + (self.cue if cue else "")

    def answer_tokens(self, count: int) -> list[str]:
        """The answer token text of each of the first `count` labels (" A", " B", ... by default)."""
        return [self.answer.format(label=label) for label in self.labels[:count]]


CHOICE_SYSTEM = "You are a search relevance judge. You read a query and passages, and name the most relevant passage."
CHATML_CUE = "<|im_end|>\n<|im_start|>assistant\nPassage"
QWEN3_CUE = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nPassage"

# The setwise paper's wording (Zhuang et al., SIGIR 2024), in ChatML framing.
SETWISE_CHATML = ChoiceTemplate(
    name="chatml",
    head=(
        "<|im_start|>system\n" + CHOICE_SYSTEM + "<|im_end|>\n<|im_start|>user\n"
        'Given a query "{query}", which of the following passages is the most relevant one to the query?\n\n'
    ),
    passage='Passage {label}: "{passage}"\n\n',
    tail="Output only the passage label of the most relevant passage: {labels}." + CHATML_CUE,
)
# The pairwise ranking prompt of PRP (Qin et al., NAACL 2024 findings), in ChatML framing.
PAIRWISE_CHATML = ChoiceTemplate(
    name="chatml",
    head=(
        "<|im_start|>system\n" + CHOICE_SYSTEM + "<|im_end|>\n<|im_start|>user\n"
        'Given a query "{query}", which of the following two passages is more relevant to the query?\n\n'
    ),
    passage='Passage {label}: "{passage}"\n\n',
    tail="Output Passage A or Passage B." + CHATML_CUE,
)

# Rank-R1 (Zhuang et al., 2025), in ChatML framing with the setwise labels: reason inside <think>, then name the
# most relevant passage inside <answer>. GRPO trains on render(cue=False); with reasoning off, the reranker reads the
# label logits after an empty think block (the cue).
RANK_R1_SYSTEM = (
    "You are a search relevance judge. You first think about which passage best answers the query, "
    "then name it. The reasoning goes inside <think> </think> and the passage label inside <answer> </answer>."
)
RANK_R1 = ChoiceTemplate(
    name="rank-r1",
    head=(
        "<|im_start|>system\n" + RANK_R1_SYSTEM + "<|im_end|>\n<|im_start|>user\n"
        'Given a query "{query}", which of the following passages is the most relevant one to the query?\n\n'
    ),
    passage='Passage {label}: "{passage}"\n\n',
    tail=(
        "Think step by step inside <think> </think>, then write only the label of the most relevant passage "
        "({labels}) inside <answer> </answer>, e.g. <think> ... </think> <answer>A</answer>.<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    answer="{label}",
    cue="<think>\n\n</think>\n<answer>",
)

CHOICE_TEMPLATES: dict[str, dict[str, ChoiceTemplate]] = {
    "setwise": {
        "chatml": SETWISE_CHATML,  # SmolLM2-Instruct and other ChatML chat models
        "qwen3": replace(SETWISE_CHATML, name="qwen3", tail=SETWISE_CHATML.tail.replace(CHATML_CUE, QWEN3_CUE)),
        "rank-r1": RANK_R1,
    },
    "pairwise": {
        "chatml": PAIRWISE_CHATML,
        "qwen3": replace(PAIRWISE_CHATML, name="qwen3", tail=PAIRWISE_CHATML.tail.replace(CHATML_CUE, QWEN3_CUE)),
    },
}


def get_choice_template(kind: str, name: str) -> ChoiceTemplate:
    """The `kind` ("setwise" or "pairwise") prompt for one model family."""
    family = CHOICE_TEMPLATES.get(kind, {})
    if name not in family:
        raise SpecError(f"unknown {kind} prompt template {name!r}", fix=f"choose one of {sorted(family)}")
    return family[name]


# listwise (RankGPT-style sliding windows): the model answers with a permutation of bracketed ids, [2] > [1] > ...
@dataclass(frozen=True)
class ListwiseTemplate:
    """A system turn, then a numbered list of passages between a head and a tail that ask for a permutation."""

    name: str
    system: str
    head: str  # formatted with {count} and {query}
    passage: str  # formatted with {index} and {passage}
    tail: str  # formatted with {count} and {query}

    def render(self, query: str, passages: Sequence[str]) -> str:
        """The user turn: the head, the passages numbered [1]..[n], and the tail; the system turn is separate."""
        body = "".join(self.passage.format(index=i, passage=p) for i, p in enumerate(passages, start=1))
        count = len(passages)
        return self.head.format(count=count, query=query) + body + self.tail.format(count=count, query=query)


LISTWISE_TEMPLATE = ListwiseTemplate(
    name="rank-ids",
    system="You rank search results. You answer only with passage identifiers in order of relevance.",
    head="Below are {count} passages, each with an identifier in square brackets.\nQuery: {query}\n\n",
    passage="[{index}] {passage}\n",
    tail=(
        "\nOrder all {count} passages by how relevant they are to the query: {query}\n"
        "List the most relevant first, every identifier exactly once, in the form [2] > [1]. "
        "Write nothing else."
    ),
)


# in-context reranking (ICR): every document in one prompt before the query; the reranker reads the attention the
# query pays each document, calibrated by the same prompt with the content-free query below.
ICR_CALIBRATION_QUERY = "N/A"


@dataclass(frozen=True)
class ICRTemplate:
    """Prompt pieces, tokenized separately so the reranker knows where every document and the query sit."""

    name: str
    head: str
    marker: str  # formatted with {index}, 1-based within a prompt
    document: str  # formatted with {document}
    lead: str
    query: str  # formatted with {query}

    def render(self, query: str, documents: Sequence[str]) -> str:
        """The whole prompt as one text: the head, each document after its 1-based marker, the lead and the query."""
        parts = [self.head]
        for i, doc in enumerate(documents, start=1):
            parts += [self.marker.format(index=i), self.document.format(document=doc)]
        return "".join([*parts, self.lead, self.query.format(query=query)])


ICR_TEMPLATE = ICRTemplate(
    name="chatml",
    head="<|im_start|>user\nHere are some passages:\n",
    marker="\n[{index}]",
    document=" {document}",
    lead="\n\nFind the information relevant to this query in the passages above.\nQuery:",
    query=" {query}",
)


# query likelihood: the mean log-probability of the query's tokens after this prompt around the document
QLM_PROMPT = "Passage: {document}\nPlease write a question based on this passage.\nQuestion:"
