"""Query understanding (Omni-RAG, issue 30): make a messy user query fit for retrieval before it is searched.

Three steps, each its own module:

- **denoising** (`speller`): a spelling corrector whose vocabulary is the corpus itself, so it fixes only words the
  corpus does not know and proposes only words it does; `noise` injects seeded typos to measure it;
- **decomposition** (`decompose`): a query that asks several things is split into one sub-query per intent;
- **per-intent retrieval** (`stage`): each intent is searched on its own and the rankings are merged.

`benchmark` builds the evaluation data: noisy two-intent queries joined from two different datasets, with gold
relevance per intent. Importing this package loads no optional dependency; symspellpy is imported only when a
speller is built.
"""
