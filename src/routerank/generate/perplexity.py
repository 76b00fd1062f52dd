"""How well a context predicts a text: the negative log-likelihood of target tokens after a prefix, under a causal LM.

This is the language-modelling test of retrieval against generation: the perplexity of a passage's second half
given nothing, retrieved passages, or generated ones before its first half. Only the target's tokens are scored;
the prefix is conditioning. Prefixes that run past `max_prefix_tokens` keep their last tokens (what sits next to
the target), so long retrieved contexts are cut from the front.

Rows are scored in right-padded batches, longest first: a causal row's logits never see the padding after it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tqdm.auto import tqdm

from routerank.errors import RouterankError
from routerank.models.llm import pad_batch


def conditional_nll(
    model,
    tokenizer,
    prefixes: Sequence[str],
    targets: Sequence[str],
    *,
    batch_size: int = 4,
    max_prefix_tokens: int = 768,
    max_target_tokens: int = 256,
    progress: bool = False,
) -> list[tuple[float, int]]:
    """For each (prefix, target): the summed NLL in nats of the target's tokens given the prefix, and how many
    target tokens there were (the target is cut to `max_target_tokens`). A target of no tokens is an error."""
    import torch  # local: torch is heavy, and `import routerank` must not load it

    if len(prefixes) != len(targets):
        raise RouterankError(f"{len(prefixes)} prefixes for {len(targets)} targets; give one prefix per target")
    rows = []
    for prefix, target in zip(prefixes, targets, strict=True):
        head = tokenizer(prefix, add_special_tokens=False)["input_ids"][-max_prefix_tokens:] if prefix else []
        tail = tokenizer(target, add_special_tokens=False)["input_ids"][:max_target_tokens]
        if not tail:
            raise RouterankError(f"the target {target[:40]!r} has no tokens to score")
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and not head else []
        if not head and not bos:
            raise RouterankError("an empty prefix needs a tokenizer with a BOS token to condition on")
        rows.append((bos + head, tail))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: -sum(map(len, rows[i])))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    for start in tqdm(range(0, len(order), batch_size), desc="perplexity", disable=not progress, leave=False):
        batch = order[start : start + batch_size]
        ids, mask = pad_batch([rows[i][0] + rows[i][1] for i in batch], pad)
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        for row, i in enumerate(batch):
            head, tail = rows[i]
            positions = torch.arange(len(head) - 1, len(head) + len(tail) - 1)
            picked = logprobs[row, positions, torch.tensor(tail)]
            out[i] = (float(-picked.sum()), len(tail))
    return out


def perplexity(scored: Sequence[tuple[float, int]]) -> float:
    """The corpus-level perplexity of `conditional_nll` results: exp(total NLL / total tokens)."""
    tokens = sum(n for _, n in scored)
    if tokens == 0:
        raise RouterankError("no scored tokens to take a perplexity of")
    return math.exp(sum(nll for nll, _ in scored) / tokens)
