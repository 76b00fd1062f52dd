"""The trainer's dev selection: a rank measure that equal scores cannot fool, and the start as a candidate."""

import pytest

from routerank.errors import SpecError
from routerank.train.groups import TrainGroup
from routerank.train.loop import GroupTrainer, TrainerConfig, positive_reciprocal_rank


class OneWeight:
    """logit = w * float(document text): the smallest model whose training can hurt its dev ranking."""

    def __init__(self, start: float):
        import torch

        self.w = torch.nn.Parameter(torch.tensor(start))

    def group_logits(self, groups):
        import torch

        features = torch.tensor([[float(doc) for _, doc in g.pairs()] for g in groups])
        return self.w * features

    def parameters(self):
        return [self.w]

    def trainable_state(self):
        return {"w": self.w.detach().clone()}

    def load_trainable_state(self, tensors):
        with __import__("torch").no_grad():
            self.w.copy_(tensors["w"])

    def train(self, mode=True):
        return self


TRAIN = [TrainGroup(f"t{i}", "q", "1", ("0", "0")) for i in range(6)]  # pushes w up
DEV = [TrainGroup("d", "q", "-1", ("0", "0"))]  # the positive wins only while w < 0


def fit(tmp_path, **overrides):
    settings = dict(lr=1.0, schedule="constant", warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=0.0)
    settings.update(batch_groups=2, eval_every=1, patience=0, save_every=1, dev_measure="mrr", **overrides)
    model = OneWeight(-0.5)
    summary = GroupTrainer(model, TrainerConfig(**settings), tmp_path / "state", progress=False).fit(
        [lambda _epoch: TRAIN], DEV
    )
    return model, summary


def test_reciprocal_rank_counts_ties_against_the_positive():
    import torch

    rr = positive_reciprocal_rank(torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 2.0]]))
    assert rr.tolist() == pytest.approx([1.0, 0.5, 1 / 3, 1 / 3])


def test_a_run_that_only_hurts_dev_ships_its_starting_weights(tmp_path):
    model, summary = fit(tmp_path / "start", eval_at_start=True)
    assert summary.state.best_step == 0 and summary.state.best_dev == 0.0
    assert model.w.item() == pytest.approx(-0.5)
    # without the start as a candidate, the best evaluated step is kept, and it has already flipped the ranking
    model, summary = fit(tmp_path / "no-start", eval_at_start=False)
    assert summary.state.best_step > 0 and model.w.item() > 0


def test_unknown_dev_measure_is_refused():
    with pytest.raises(SpecError, match="dev_measure"):
        TrainerConfig(dev_measure="ndcg")
