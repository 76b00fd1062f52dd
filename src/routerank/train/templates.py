"""The trainers' own text: what a model is taught to write, as data, tested for exact text. The prompts they train
on are the rerankers' (`routerank.rerank.templates`), so training and inference read the same text.

Rank-R1's format SFT (`routerank.train.rank_r1.target_completion`): a short think block stating a fact of the prompt
(which of the query's content words the relevant passage contains), then the answer label, in the format
`routerank.rerank.reasoning.parse_answer` reads.
"""

from __future__ import annotations

RANK_R1_TARGET = "<think>{reason}</think>\n<answer>{label}</answer>"  # formatted with {reason} and {label}
RANK_R1_SHARED_REASON = "Passage {label} mentions {words}, as the query does."  # {words}: comma-separated
RANK_R1_GENERIC_REASON = "Passage {label} is about what the query asks."  # when no content word is shared
