"""The LoRA adapter and optimiser settings every adapter trainer shares (`LoRASettings`: the R2R experts, DeAR and
the GRPO trainers inherit it), the one place a LoRA adapter is built (`attach_lora`), and the `Trainable` view of a
LoRA-wrapped backbone (`LoraTrainable`).

`LoRASettings` is named apart from peft's `LoraConfig`, which `peft_config` builds from it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class LoRASettings:
    """The adapter and its optimiser, as fields of each trainer's config (inherited, so access stays flat:
    `config.lora_r`). A trainer whose defaults differ redeclares the field, keyword-only, with its own default.

    lora_r, lora_alpha, lora_dropout: the adapter's rank, scaling (alpha / r = 2 by default) and dropout.
    target_modules: module-name suffixes the adapter wraps; empty = the backbone's defaults (an LLM's q/k/v/o
        projections, an encoder's query/key/value/dense layers).
    lr: AdamW learning rate, constant."""

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ()
    lr: float = 2e-4

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))

    def targets(self, default: Sequence[str]) -> list[str]:
        """The module-name suffixes to wrap: `target_modules`, or the backbone's `default` when it is empty."""
        return list(self.target_modules or default)

    def peft_config(self, default_targets: Sequence[str], **extra):
        """peft's `LoraConfig` for these settings (no bias training); `extra` adds e.g. `task_type`."""
        # heavy: peft loads only when adapters are used
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.targets(default_targets),
            bias="none",
            **extra,
        )


def attach_lora(module, settings: LoRASettings, default_targets: Sequence[str], seed: int, **extra):
    """`module` wrapped in a fresh LoRA adapter (`settings`, on `default_targets` unless the settings name targets),
    its init seeded: the one place every adapter trainer (experts, DeAR's two stages, a LoRA cross-encoder) builds
    one. `extra` goes to peft's `LoraConfig` (e.g. `modules_to_save`)."""
    # heavy: torch loads only when a model runs; peft loads only when adapters are used
    import torch
    from peft import get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(module, settings.peft_config(default_targets, **extra))


class LoraTrainable:
    """The `Trainable` view of a LoRA-wrapped backbone: only the adapter trains and is checkpointed."""

    def __init__(self, peft_model, backbone):
        self.peft, self.backbone = peft_model, backbone

    def group_logits(self, groups):
        """A [groups, 1 + negatives] matrix of the backbone's relevance logits, through the adapter."""
        pairs = [pair for group in groups for pair in group.pairs()]
        return self.backbone.relevance_logits(pairs).view(len(groups), -1)

    def parameters(self) -> list:
        """The adapter's trainable parameters."""
        return [p for p in self.peft.parameters() if p.requires_grad]

    def trainable_state(self) -> dict:
        """The adapter's tensors alone, by name."""
        # heavy: peft loads only when adapters are used
        from peft import get_peft_model_state_dict

        return dict(get_peft_model_state_dict(self.peft))

    def load_trainable_state(self, tensors: dict) -> None:
        """Load adapter tensors that `trainable_state` handed out."""
        # heavy: peft loads only when adapters are used
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.peft, tensors)

    def train(self, mode: bool = True):
        """Switch training mode (dropout) on or off; returns the peft model."""
        return self.peft.train(mode)
