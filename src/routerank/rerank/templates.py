"""Prompt templates for yes/no LLM rerankers, as data: one per model family, tested for exact text.

A prompt is four segments, tokenized separately and concatenated, so the shared part is computed once:

    prefix (system + instruction)  |  query segment  |  document segment  |  suffix (answer cue)

Segment boundaries sit where a BPE pre-tokenizer splits anyway (before a space or a special token), so the
concatenated ids equal those of the whole prompt tokenized at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from routerank.errors import SpecError

JUDGE_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


@dataclass(frozen=True)
class YesNoTemplate:
    name: str
    prefix: str  # formatted with {instruction}
    query: str  # formatted with {query}
    document: str  # formatted with {document}
    suffix: str
    yes: str = "yes"
    no: str = "no"

    def segments(self, query: str, document: str, instruction: str = DEFAULT_INSTRUCTION) -> tuple[str, str, str, str]:
        return (
            self.prefix.format(instruction=instruction),
            self.query.format(query=query),
            self.document.format(document=document),
            self.suffix,
        )

    def render(self, query: str, document: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
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
}


def get_template(name: str) -> YesNoTemplate:
    if name not in TEMPLATES:
        raise SpecError(f"unknown prompt template {name!r}", fix=f"choose one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]
