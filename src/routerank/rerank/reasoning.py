"""Rank-R1 at inference: a chooser that reasons in `<think>` before it names a passage in `<answer>`.

Rank-R1 (Zhuang et al., 2025) trains a setwise reranker with GRPO to write `<think> ... </think>` and then
`<answer>B</answer>`. The setwise sorts only need "which of these k is best?", so reasoning is a `Chooser` like the
label-logit one: greedy decoding of each set's prompt (left-padded together, stopped at end of turn), then the label
inside `<answer>`. When the model writes no well-formed answer, or names a label the set does not have, the pick
falls back to the label logits after an empty think block (one more forward pass); `fallbacks` counts how often.

`parse_answer` is also the format check of the GRPO reward (`routerank.train.rank_r1`), so training rewards exactly
the completions that inference can read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from routerank.models.llm import pad_batch
from routerank.rerank.choice import LabelChooser

_FORMAT = re.compile(
    r"\s*<think>(?P<think>.*?)</think>\s*<answer>\s*(?:Passage\s+)?\[?(?P<label>[A-Z])\]?\s*</answer>\s*", re.S
)


def parse_answer(completion: str) -> str | None:
    """The label of a well-formed completion: one think block, then one answer block naming a label (`A`,
    `[A]` or `Passage A`), and nothing after it. None when the format does not hold."""
    match = _FORMAT.fullmatch(completion)
    if match is None or "<think>" in match["think"] or "</think>" in match["think"]:
        return None
    return match["label"]


class ReasoningChooser:
    """A causal LM as a `Chooser` that thinks before it answers (a Rank-R1 template, `template.reasons`).

    max_new_tokens: the reasoning budget per set; a completion cut there has no answer and falls back.
    The other arguments are `LabelChooser`'s, whose label logits serve as the fallback."""

    def __init__(
        self,
        model,
        tokenizer,
        template,
        *,
        max_doc_tokens: int = 128,
        max_new_tokens: int = 128,
        token_budget: int | None = None,
    ):
        self.labels = LabelChooser(model, tokenizer, template, max_doc_tokens=max_doc_tokens, token_budget=token_budget)
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.max_new_tokens = int(max_new_tokens)
        self.stops = stop_ids(tokenizer)
        self.prompts = 0
        self.generated_tokens = 0
        self.decode_steps = 0
        self.fallbacks = 0
        self.last_completions: list[str] = []

    @property
    def forward_passes(self) -> int:
        """Decoder calls: one per generated token position of each batch, plus the fallbacks' label passes."""
        return self.decode_steps + self.labels.forward_passes

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy completions of `prompts`, decoded without special tokens."""
        # heavy: torch loads only when a model runs; transformers loads only when a model is built
        import torch
        from transformers import GenerationConfig

        rows = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stops[0]
        ids, mask = pad_batch(rows, pad, left=True)
        device = next(self.model.parameters()).device
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens, do_sample=False, eos_token_id=self.stops, pad_token_id=pad
        )
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
            )
        new = out[:, ids.shape[1] :].cpu()
        self.decode_steps += new.shape[1]
        texts = []
        for row in new.tolist():
            kept = [t for t in row if t not in self.stops and t != pad]
            self.generated_tokens += len(kept)
            texts.append(self.tokenizer.decode(kept, skip_special_tokens=True))
        return texts

    def choose(self, query: str, sets: Sequence[Sequence[str]]) -> list[int]:
        """For each set, the position of the passage its completion names in `<answer>`; where the completion names
        none the set has, the label logits decide (counted in `fallbacks`)."""
        if not sets:
            return []
        self.labels.bind(query)
        completions = self.generate([self.labels.prompt(query, s, cue=False) for s in sets])
        self.prompts += len(sets)
        self.last_completions = completions
        picks: list[int | None] = []
        for passages, text in zip(sets, completions, strict=True):
            label = parse_answer(text)
            position = self.template.labels.find(label) if label else -1
            picks.append(position if 0 <= position < len(passages) else None)
        missing = [i for i, pick in enumerate(picks) if pick is None]
        if missing:
            self.fallbacks += len(missing)
            fallback = self.labels.choose(query, [sets[i] for i in missing])
            for i, pick in zip(missing, fallback, strict=True):
                picks[i] = pick
        return [int(p) for p in picks]


def stop_ids(tokenizer) -> list[int]:
    """Token ids that end a completion: the tokenizer's EOS and, for chat templates, the end-of-turn token."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        found = tokenizer.convert_tokens_to_ids(token)
        if isinstance(found, int) and found != tokenizer.unk_token_id and found not in ids:
            ids.append(found)
    return ids
