"""Native components for RAG frameworks: a reranker and a retriever each, over any routerank spec.

Three modules, one per framework; each imports its framework at the top, so import only the one you use, after
installing its extra:

- `routerank.integrations.langchain` (`pip install 'routerank[langchain]'`): `RouterankReranker`, a
  `BaseDocumentCompressor` for `ContextualCompressionRetriever` or any chain, and `RouterankRetriever`, a
  `BaseRetriever` over a routerank pipeline spec.
- `routerank.integrations.llamaindex` (`pip install 'routerank[llamaindex]'`): `RouterankRerank`, a node
  postprocessor, and `RouterankRetriever`, a `BaseRetriever` that returns `NodeWithScore`.
- `routerank.integrations.haystack` (`pip install 'routerank[haystack]'`): `RouterankRanker` and
  `RouterankRetriever`, two `@component`s for a `haystack.Pipeline`.

A module whose framework is missing raises `routerank.errors.MissingDependencyError` with the install line.
The framework-independent part (building a pipeline over a corpus or a list of texts, searching one query,
collecting routing decisions, reranking texts) lives in `routerank.integrations.common`, so the three modules are
thin adapters and behave alike. The metadata they add to documents is named in `common` (`routerank_score`,
`routerank_rank`, `routerank_id`, `routerank_expert`, `routerank_route`, ...). This package itself imports nothing.
"""
