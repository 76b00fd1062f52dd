"""The ranking losses every trainer uses, over a [groups, 1 + negatives] logit matrix whose column 0 holds the
positive and the rest its hard negatives.

Objectives (one set of names for the cross-encoder and the LLM experts):
    infonce   softmax cross-entropy of the positive against its group, logits / temperature (the contrastive loss)
    bce       binary cross-entropy per pair, label 1 for the positive and 0 for each negative (pointwise SFT)
The older names `contrastive` and `sft` are accepted and mean the same.

Distillation (DeAR stage 1, `routerank.train.dear`) scores whole candidate lists against a teacher instead:
    distill_ce    binary cross-entropy of each candidate against its judged label
    ranknet       pairwise logistic loss on every pair the teacher orders
    listwise_kl   KL between the teacher's and the student's softmax over the list
and `target_nll` is the SFT loss of stage 2 (a permutation string as the answer).
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
    # heavy: torch loads only when a model runs
    import torch

    targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return torch.nn.functional.cross_entropy(logits / temperature, targets)


def pointwise_bce(logits):
    """Binary cross-entropy on each pair: label 1 for the positive column, 0 for the negatives."""
    # heavy: torch loads only when a model runs
    import torch

    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)


def ranking_loss(objective: str, logits, temperature: float = 1.0):
    """The loss of `objective` over a [groups, 1 + negatives] logit matrix (column 0 = positives)."""
    if canonical_objective(objective) == "infonce":
        return infonce(logits, temperature)
    return pointwise_bce(logits)


# distillation ----------------------------------------------------------------------------------------------------
# Over a [lists, n] matrix: one row per query, one column per candidate, the same candidates for student and teacher.


def distill_ce(logits, labels):
    """Binary cross-entropy of each candidate's student logit (the yes/no score) against its judged label: 1 for
    grade >= 1, 0 otherwise. Mean over every candidate of every list."""
    # heavy: torch loads only when a model runs
    import torch

    targets = (labels >= 1).to(logits.dtype)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)


def ranknet(logits, teacher):
    """RankNet on the teacher's order: for every pair (i, j) of one list with teacher_i > teacher_j,
    log(1 + exp(s_j - s_i)). Mean over those pairs in the batch; ties carry no order and are skipped, and a batch
    without any ordered pair gives 0."""
    # heavy: torch loads only when a model runs
    import torch

    ordered = (teacher.unsqueeze(2) > teacher.unsqueeze(1)).to(logits.dtype)  # [lists, i, j]
    gaps = logits.unsqueeze(2) - logits.unsqueeze(1)  # s_i - s_j
    pairs = ordered.sum()
    if pairs == 0:
        return logits.sum() * 0.0
    return (torch.nn.functional.softplus(-gaps) * ordered).sum() / pairs


def listwise_kl(logits, teacher, temperature: float = 1.0, teacher_temperature: float = 1.0):
    """KL(p_teacher || p_student) over each candidate list, p_teacher = softmax(teacher / teacher_temperature) and
    p_student = softmax(logits / temperature), times temperature**2 (Hinton et al.: the gradient's scale stays put
    when the temperature changes). Mean over lists. The teacher has its own temperature because its scores need not
    share the student's scale: an interpolated teacher's lie in [0, 1]."""
    # heavy: torch loads only when a model runs
    import torch

    student = torch.log_softmax(logits / temperature, dim=-1)
    target = torch.log_softmax(teacher.to(logits.dtype) / teacher_temperature, dim=-1)
    kl = torch.nn.functional.kl_div(student, target, reduction="none", log_target=True).sum(-1)
    return kl.mean() * temperature**2


def distillation_loss(
    logits,
    teacher,
    labels,
    *,
    w_ce: float = 1.0,
    w_ranknet: float = 1.0,
    w_kl: float = 1.0,
    temperature: float = 1.0,
    teacher_temperature: float = 1.0,
):
    """DeAR's stage-1 loss, `w_ce * distill_ce + w_ranknet * ranknet + w_kl * listwise_kl`, and each term's value
    (a dict of floats, for the log). A term whose weight is 0 is not computed at all: that is its ablation."""
    total = logits.sum() * 0.0
    terms: dict[str, float] = {}
    if w_ce:
        value = distill_ce(logits, labels)
        total, terms["ce"] = total + w_ce * value, float(value.detach())
    if w_ranknet:
        value = ranknet(logits, teacher)
        total, terms["ranknet"] = total + w_ranknet * value, float(value.detach())
    if w_kl:
        value = listwise_kl(logits, teacher, temperature, teacher_temperature)
        total, terms["kl"] = total + w_kl * value, float(value.detach())
    return total, terms


def target_nll(logits, targets):
    """Mean negative log-likelihood of the target tokens (SFT on an answer): `logits` [rows, T, vocab] predict
    `targets` [rows, T], whose -100 entries (padding) are left out. DeAR stage 2 trains on permutations with it."""
    # heavy: torch loads only when a model runs
    import torch

    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
