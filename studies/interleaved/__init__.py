"""The interleaved-documents study: document representations, coarse-to-fine passage retrieval and table
linearisation on TAT-QA's report pages (`python -m studies.interleaved --config ...`)."""
