"""An LLM judge of retrieved lists: R3AG's retrieval-quality label where qrels are missing, or a check on them.

For a question and a retriever's top k, the judge asks three yes/no questions of each document and reads each as
P(yes) against P(no) from one forward pass of the pointwise scorer (prefix reuse, batching and its on-disk score
cache, so a killed label build re-asks nothing it finished):

    relevance   is the document relevant to the question?
    coverage    does the document contain the information needed to answer it?
    redundancy  does the document only repeat what the earlier documents of the list already say?
                (the first document never does; the earlier ones are shown cut to `max_doc_tokens` each)

A list's quality is the mean over its k slots of (relevance + coverage) / 2 x (1 - redundancy), in [0, 1]: high
when every document is relevant and informative and none repeats another. A missing slot (a list shorter than k)
counts 0, and an empty list, R0's, scores 0. The prompts are data below, tested for exact text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from routerank.data.types import Document
from routerank.errors import RouterankError
from routerank.models.llm import load_causal_lm
from routerank.rerank.choice import one_line
from routerank.rerank.pointwise import PointwiseLLMReranker
from routerank.rerank.templates import YesNoTemplate

JUDGE_SYSTEM = (
    'Judge the Document against the Instruct, given the Question. Note that the answer can only be "yes" or "no".'
)
REDUNDANCY_SYSTEM = (
    "Judge the Document against the Instruct, given the Earlier documents. "
    'Note that the answer can only be "yes" or "no".'
)
INSTRUCTIONS = {
    "relevance": "Is the Document relevant to the Question?",
    "coverage": "Does the Document contain the information needed to answer the Question?",
    "redundancy": "Does the Document only repeat information that the Earlier documents already give?",
}
QUESTION_TEMPLATE = YesNoTemplate(
    name="r3ag-judge",
    prefix="<|im_start|>system\n"
    + JUDGE_SYSTEM
    + "<|im_end|>\n<|im_start|>user\n<Instruct>: {instruction}\n<Question>:",
    query=" {query}\n<Document>:",
    document=" {document}",
    suffix="<|im_end|>\n<|im_start|>assistant\n",
)
REDUNDANCY_TEMPLATE = YesNoTemplate(
    name="r3ag-judge-redundancy",
    prefix="<|im_start|>system\n"
    + REDUNDANCY_SYSTEM
    + "<|im_end|>\n<|im_start|>user\n<Instruct>: {instruction}\n<Earlier documents>:",
    query=" {query}\n<Document>:",
    document=" {document}",
    suffix="<|im_end|>\n<|im_start|>assistant\n",
)
CRITERIA = tuple(INSTRUCTIONS)


@dataclass(frozen=True)
class ListJudgement:
    """P(yes) per document slot for each criterion (redundancy is 0 for the first), and the list's quality."""

    relevance: tuple[float, ...]
    coverage: tuple[float, ...]
    redundancy: tuple[float, ...]
    quality: float


def list_quality(relevance: Sequence[float], coverage: Sequence[float], redundancy: Sequence[float], k: int) -> float:
    """Mean over k slots of (relevance + coverage) / 2 x (1 - redundancy); slots past the list count 0."""
    if k < 1:
        raise RouterankError(f"k must be at least 1, got {k}")
    if not len(relevance) == len(coverage) == len(redundancy) <= k:
        raise RouterankError("relevance, coverage and redundancy need one value per document, at most k")
    rel, cov, red = (np.asarray(v, dtype=np.float64) for v in (relevance, coverage, redundancy))
    return float(((rel + cov) / 2 * (1 - red)).sum() / k)


class LLMJudge:
    """Three pointwise yes/no scorers over one loaded causal LM (the generator's by default)."""

    def __init__(self, model: str = "smollm2", *, max_doc_tokens: int = 128, progress: bool = True, _loaded=None):
        self.model_spec, self.max_doc_tokens = model, int(max_doc_tokens)
        loaded = _loaded if _loaded is not None else load_causal_lm(model)
        self.tokenizer = loaded[1]
        self.scorers = {
            criterion: PointwiseLLMReranker(
                model,
                template=REDUNDANCY_TEMPLATE if criterion == "redundancy" else QUESTION_TEMPLATE,
                instruction=instruction,
                max_doc_tokens=self.max_doc_tokens,
                cache=True,  # on disk, keyed by the model's fingerprint and the prompt; none for a model without one
                progress=progress,
                _loaded=loaded,
            )
            for criterion, instruction in INSTRUCTIONS.items()
        }

    @classmethod
    def from_model(cls, model, tokenizer, *, name: str = "custom", **options) -> LLMJudge:
        """A judge over an already-loaded (model, tokenizer), e.g. a tiny test model (no disk cache)."""
        return cls(name, _loaded=(model, tokenizer), **options)

    def settings(self) -> dict:
        """The judge's settings as a JSON-ready record: model, document budget, each criterion's instruction and
        how quality is computed."""
        return {
            "model": self.model_spec,
            "max_doc_tokens": self.max_doc_tokens,
            "instructions": dict(INSTRUCTIONS),
            "quality": "mean over k of (relevance + coverage) / 2 x (1 - redundancy)",
        }

    def _earlier(self, documents: Sequence[Document]) -> str:
        return " | ".join(one_line(self.tokenizer, d.full_text, self.max_doc_tokens) for d in documents)

    def judge(self, questions: Sequence[str], lists: Sequence[Sequence[Document]], k: int) -> list[ListJudgement]:
        """One judgement per (question, list of at most k documents), every prompt of a criterion in one batch."""
        if len(questions) != len(lists):
            raise RouterankError(f"{len(questions)} questions but {len(lists)} document lists")
        if any(len(docs) > k for docs in lists):
            raise RouterankError(f"a list holds more than k={k} documents", fix="pass each list's top k")
        asks = [(q, d.full_text) for q, docs in zip(questions, lists, strict=True) for d in docs]
        relevance = self.scorers["relevance"].score_pairs(asks) if asks else np.zeros(0)
        coverage = self.scorers["coverage"].score_pairs(asks) if asks else np.zeros(0)
        repeats = [(self._earlier(docs[:i]), docs[i].full_text) for docs in lists for i in range(1, len(docs))]
        redundancy = iter(self.scorers["redundancy"].score_pairs(repeats).tolist() if repeats else [])
        out, at = [], 0
        for docs in lists:
            n = len(docs)
            rel, cov = relevance[at : at + n].tolist(), coverage[at : at + n].tolist()
            red = [0.0] + [next(redundancy) for _ in range(n - 1)] if n else []
            at += n
            out.append(ListJudgement(tuple(rel), tuple(cov), tuple(red), list_quality(rel, cov, red, k)))
        return out
