"""Ranking losses over relevance logits s(q, d) = logit("yes") - logit("no").

Each row of `logits` is one query's group: column 0 the positive, the rest its hard negatives.
"""

from __future__ import annotations

OBJECTIVES = ("contrastive", "sft")


def infonce(logits, temperature: float = 1.0):
    """InfoNCE: cross-entropy of the positive against its negatives, softmax over logits / temperature."""
    import torch

    targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return torch.nn.functional.cross_entropy(logits / temperature, targets)


def pointwise_bce(logits):
    """SFT: binary cross-entropy on yes/no, label 1 for the positive column and 0 for the negatives."""
    import torch

    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)


def ranking_loss(objective: str, logits, temperature: float = 1.0):
    if objective == "contrastive":
        return infonce(logits, temperature)
    if objective == "sft":
        return pointwise_bce(logits)
    from routerank.errors import SpecError

    raise SpecError(f"unknown objective {objective!r}", fix=f"choose one of {OBJECTIVES}")
