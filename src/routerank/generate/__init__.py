"""RAG answer generation: a causal LM answers each query from its top-k documents, or from nothing (R0).

    from routerank.generate import Generator, retrieved_contexts, score_answers

    generator = Generator("smollm2")  # any LLM spec: hf:<folder-or-id>, gguf:<file>
    answers = generator.generate(queries, retrieved_contexts(queries, run, corpus, k=3))
    print(score_answers(queries, answers).em)

The design, one module per concern:
- `templates`: one prompt per model family (ChatML for SmolLM2/Qwen, plain otherwise), as exact strings with a
  version. Each has an open-book form (numbered documents, then the question) and a closed-book form for R0,
  both with a short-answer instruction and two invented worked examples, so a small model copies a short span
  rather than answering in a sentence.
- `context`: documents go in rank order until a token budget is spent; the last may be cut, the rest are
  dropped, and the result says which (`ContextFit`). Gold and retrieved context lists come from qrels or a Run.
- `generator`: batched greedy decoding through transformers' `generate`, left-padded, stopping at EOS, a stop
  string (default: newline) or `max_new_tokens`; the stop string is cut off and the answer cleaned (`stops`).
- `cache`: every generation is stored in SQLite, keyed by model fingerprint, template and version, settings,
  query text and the ordered context (ids and text hashes), one commit per batch: a killed run resumes.
- `scoring`: SQuAD EM and token F1 against the queries' gold `answers`, through `routerank.evaluate.qa`.
- `qa_run`: one QA condition end to end (`run_qa`): a split's queries or a seeded sample, their gold, retrieved
  or no context, generation and EM/F1, as a `QARun`.

Retrieval is not done here (this layer sits beside `rerank/`, below `pipeline`); the caller passes a retriever,
a Run or qrels. `routerank qa` and `studies.rag_qa` build the pipeline and hand it to `run_qa`.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Answer": "routerank.generate.generator",
    "Generator": "routerank.generate.generator",
    "AnswerTemplate": "routerank.generate.templates",
    "TEMPLATES": "routerank.generate.templates",
    "get_template": "routerank.generate.templates",
    "ContextFit": "routerank.generate.context",
    "fit_context": "routerank.generate.context",
    "gold_contexts": "routerank.generate.context",
    "retrieved_contexts": "routerank.generate.context",
    "GenerationCache": "routerank.generate.cache",
    "QAScores": "routerank.generate.scoring",
    "score_answers": "routerank.generate.scoring",
    "clean_answer": "routerank.generate.stops",
    "QARun": "routerank.generate.qa_run",
    "run_qa": "routerank.generate.qa_run",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'routerank.generate' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


__all__ = [
    "Answer",
    "AnswerTemplate",
    "ContextFit",
    "GenerationCache",
    "Generator",
    "QARun",
    "QAScores",
    "TEMPLATES",
    "clean_answer",
    "fit_context",
    "get_template",
    "gold_contexts",
    "retrieved_contexts",
    "run_qa",
    "score_answers",
]
