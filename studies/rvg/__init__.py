"""Retrieval vs generation: when does retrieved context beat an LLM's own (closed-book, GenRead, HyDE, mixed) for
question answering, ranking and language modelling (`python -m studies.rvg --config ...`)."""
