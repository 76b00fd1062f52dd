"""The ranking losses every trainer uses, over a [groups, 1 + negatives] logit matrix whose column 0 holds the
positive and the rest its hard negatives.

Objectives (one set of names for the cross-encoder and the LLM experts):
    infonce   softmax cross-entropy of the positive against its group, logits / temperature (the contrastive loss)
    bce       binary cross-entropy per pair, label 1 for the positive and 0 for each negative (pointwise SFT)
The older names `contrastive` and `sft` are accepted and mean the same.
"""

from __future__ import annotations

from routerank.errors import SpecError

OBJECTIVES = ("infonce", "bce")
ALIASES = {"contrastive": "infonce", "sft": "bce"}


def canonical_objective(name: str) -> str:
    """`infonce` or `bce` for any accepted name; a SpecError that lists them otherwise."""
    name = ALIASES.get(name, name)
    if name not in OBJECTIVES:
        raise SpecError(f"unknown objective {name!r}", fix=f"choose one of {', '.join(OBJECTIVES)}")
    return name


def infonce(logits, temperature: float = 1.0):
    """InfoNCE: cross-entropy of the positive against its negatives, softmax over logits / temperature."""
    import torch

    targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return torch.nn.functional.cross_entropy(logits / temperature, targets)


def pointwise_bce(logits):
    """Binary cross-entropy on each pair: label 1 for the positive column, 0 for the negatives."""
    import torch

    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)


def ranking_loss(objective: str, logits, temperature: float = 1.0):
    """The loss of `objective` over a [groups, 1 + negatives] logit matrix (column 0 = positives)."""
    if canonical_objective(objective) == "infonce":
        return infonce(logits, temperature)
    return pointwise_bce(logits)
