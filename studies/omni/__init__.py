"""The Omni-RAG study: query understanding (denoising, decomposition, per-intent retrieval and routing) on
hotpotqa-500 and on the noisy multi-intent benchmark (`python -m studies.omni --config ...`)."""
