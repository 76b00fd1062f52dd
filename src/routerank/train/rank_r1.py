"""Rank-R1: setwise reranking with reasoning, trained by GRPO (Zhuang et al., 2025).

The model reads a query and k labelled candidates in the `rank-r1` setwise template (`rerank.templates`, the labels
A, B, C, ... that the setwise reranker uses), reasons inside `<think> ... </think>`, and names the most relevant
candidate inside `<answer> ... </answer>`. The reward is 1 only when the format holds (`rerank.reasoning.
parse_answer`, the same check inference uses) and the named candidate is judged relevant, else 0; a second,
weight-0 reward logs how often the format alone holds.

Candidate sets are seeded: per training query, one judged-relevant document and k-1 of the miner's top non-relevant
ones, in a shuffled order, so every set holds a relevant document and its position carries no signal. Passages are
shown as the setwise reranker shows them (one line, cut to `max_doc_tokens`).

A 135M backbone never writes that format when sampled (measured: 43 steps, every reward 0, so every GRPO
advantage was 0 and the adapter never moved), so `sft_queries` > 0 first trains a short supervised format SFT, a
"cold start": per extra training query (the next `sft_queries` of each dataset, disjoint from GRPO's), the same kind
of candidate set and a target completion `<think>Passage B mentions w1, w2, as the query does.</think>
<answer>B</answer>` naming the judged-relevant candidate (`routerank.train.templates`). Its reasoning is templated
from facts that hold (the query's content words the relevant passage contains), not written by a stronger model: none
is available offline.

The adapter reranks as `setwise:<backbone>,adapter=<out>`: with reasoning by default (generate, read `<answer>`),
or with `think=0` from the label logits after an empty think block.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from routerank.errors import SpecError
from routerank.fsutil import cache_root, safe_name
from routerank.rerank.choice import one_line
from routerank.rerank.reasoning import parse_answer
from routerank.rerank.templates import get_choice_template
from routerank.train.grpo import FormatSFT, GRPOSettings, GRPOTask, config_json, load_pools, train_grpo
from routerank.train.templates import RANK_R1_GENERIC_REASON, RANK_R1_SHARED_REASON, RANK_R1_TARGET


@dataclass(frozen=True, kw_only=True)
class RankR1Config(GRPOSettings):
    """Rank-R1's GRPO run. k: candidates per prompt (4 at 64 tokens each keeps a CPU prompt near 420 tokens);
    template: a reasoning setwise template (`rank-r1`); other fields as in `GRPOSettings`. The defaults are the
    cpu sizes (configs/rank-r1-cpu.toml)."""

    template: str = "rank-r1"
    k: int = 4
    max_queries: int | None = 25
    max_doc_tokens: int = 64
    prompts_per_step: int = 1
    max_completion_length: int = 128
    sft_queries: int = 0
    sft_epochs: int = 2
    sft_lr: float = 2e-4
    sft_grad_accum: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sft_queries < 0 or self.sft_epochs < 1 or self.sft_grad_accum < 1 or self.sft_lr <= 0:
            raise SpecError(
                "sft_queries must be 0 or more, sft_epochs and sft_grad_accum at least 1, and sft_lr positive",
                fix="e.g. sft_queries = 50, sft_epochs = 2, sft_lr = 2e-4, sft_grad_accum = 4 (sft_queries = 0: none)",
            )
        if self.sft_queries and self.max_queries is None:
            raise SpecError(
                "the format SFT trains on queries GRPO does not use, and max_queries = 0 gives GRPO all of them",
                fix="set max_queries, or sft_queries = 0",
            )

        template = get_choice_template("setwise", self.template)
        if not template.reasons:
            raise SpecError(
                f"Rank-R1 trains a reasoning prompt; setwise template {self.template!r} asks for the label alone",
                fix='use template = "rank-r1"',
            )
        if not 2 <= self.k <= len(template.labels):
            raise SpecError(f"k must be between 2 and {len(template.labels)}, got {self.k}", fix="e.g. k = 4")


def candidate_records(config: RankR1Config, tokenizer, pools=None, *, targets: bool = False) -> list[dict]:
    """One prompt per training query: a judged-relevant document and k-1 hard negatives, shuffled (seeded).
    `relevant` holds the labels of the relevant candidates (here exactly one); with `targets`, `completion` is the
    format SFT's well-formed answer naming it (`target_completion`)."""
    template = get_choice_template("setwise", config.template)
    labels = template.labels[: config.k]
    rng = random.Random(config.seed)
    records = []
    for pool in pools if pools is not None else load_pools(config):
        negatives = pool.negatives_for(1)
        if not pool.positives or len(negatives) < config.k - 1:
            continue
        positive = rng.choice(pool.positives)[0]
        docs = [positive, *rng.sample(negatives, config.k - 1)]
        rng.shuffle(docs)
        passages = [one_line(tokenizer, pool.corpus[d].full_text, config.max_doc_tokens) for d in docs]
        relevant = "".join(label for label, d in zip(labels, docs, strict=True) if d == positive)
        record = {
            "prompt": template.render(pool.query, passages, cue=False),
            "relevant": relevant,
            "query_id": pool.query_id,
            "doc_ids": docs,
        }
        if targets:
            record["completion"] = target_completion(pool.query, passages[docs.index(positive)], relevant)
        records.append(record)
    rng.shuffle(records)
    return records


_WORD = re.compile(r"[a-z0-9][a-z0-9-]*[a-z0-9]")


def content_words(text: str) -> list[str]:
    """Lower-cased words of 3+ characters that are not English stop words (bm25s's list, as BM25 drops them),
    first occurrences in order."""
    # deferred: bm25s (and scipy) load only when a BM25 index is built or read
    from bm25s.stopwords import STOPWORDS_EN

    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if len(word) >= 3 and word not in STOPWORDS_EN:
            seen.setdefault(word, None)
    return list(seen)


def target_completion(query: str, passage: str, label: str, words: int = 4) -> str:
    """The format SFT's target: a short think block that states which of the query's content words (up to
    `words`) the relevant passage contains, then the answer. Every statement in it is true of the prompt."""
    present = set(content_words(passage))
    shared = [w for w in content_words(query) if w in present][:words]
    if shared:
        reason = RANK_R1_SHARED_REASON.format(label=label, words=", ".join(shared))
    else:
        reason = RANK_R1_GENERIC_REASON.format(label=label)
    return RANK_R1_TARGET.format(reason=reason, label=label)


def sft_records(config: RankR1Config, tokenizer) -> list[dict]:
    """The format SFT's records: `sft_queries` extra training queries per dataset, with target completions."""
    pools = load_pools(config, "extra", extra=config.sft_queries)
    return candidate_records(config, tokenizer, pools, targets=True)


def answer_reward(completions, relevant, **_) -> list[float]:
    """1 when the completion is well formed and its answer names a relevant candidate, else 0."""
    out = []
    for completion, labels in zip(completions, relevant, strict=True):
        label = parse_answer(completion)
        out.append(1.0 if label is not None and label in labels else 0.0)
    return out


def format_reward(completions, **_) -> list[float]:
    """1 when the completion is `<think>...</think><answer>X</answer>` (logged only: its weight is 0)."""
    return [1.0 if parse_answer(c) is not None else 0.0 for c in completions]


def rank_r1_task(config: RankR1Config) -> GRPOTask:
    """The Rank-R1 GRPO job: setwise candidate prompts rewarded for naming a relevant candidate in the format (a
    weight-0 reward logs the format alone), after a format SFT when `sft_queries` > 0."""
    return GRPOTask(
        kind="rank-r1",
        records=lambda tokenizer: candidate_records(config, tokenizer),
        rewards=(answer_reward, format_reward),
        reward_weights=(1.0, 0.0),
        settings=config,
        key={"rank_r1": config_json(config)},
        manifest={"reranker": "setwise", "template": config.template, "k": config.k},
        desc="rank-r1 GRPO",
        sft=FormatSFT(
            lambda tokenizer: sft_records(config, tokenizer),
            epochs=config.sft_epochs,
            lr=config.sft_lr,
            grad_accum=config.sft_grad_accum,
        )
        if config.sft_queries
        else None,
    )


def default_rank_r1_dir(config: RankR1Config):
    """The cache folder named by the backbone and a hash of the config: `<cache>/rank-r1/<backbone>-<digest>`."""
    digest = hashlib.sha256(json.dumps(config_json(config), sort_keys=True).encode()).hexdigest()[:10]
    return cache_root() / "rank-r1" / f"{safe_name(config.backbone)}-{digest}"


def train_rank_r1(config: RankR1Config, out=None, *, loaded=None, progress: bool = True, stop_after_steps=None):
    """Train (or resume, or find finished) the Rank-R1 adapter; returns its folder."""

    out = Path(out) if out is not None else default_rank_r1_dir(config)
    return train_grpo(rank_r1_task(config), out, loaded=loaded, progress=progress, stop_after_steps=stop_after_steps)
