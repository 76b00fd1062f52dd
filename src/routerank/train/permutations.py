"""SFT of a listwise LLM reranker on permutations: the model learns to answer a candidate list's prompt with the
teacher's ranking of it, written exactly as `routerank.rerank.listwise` asks for and parses one (`[2] > [1] > [3]`).

The prompt is the listwise reranker's own: its template, its passage truncation (`truncate_passage`) and its chat
framing (`chat_ids`), so the trained adapter loads as `listwise:<llm>,adapter=<folder>` and sees at inference the very
token ids it was trained on. The answer ends with the tokenizer's end-of-sequence token, where greedy decoding stops.

Passages can be shown in a seeded shuffle that changes every epoch: the answer is then a function of the passages'
content, not of the order the first stage happened to give them (which the teacher's order often resembles).

Only the answer tokens are scored, and the LM head runs on their positions alone (`logits_to_keep`): the prompt of
eight passages is ~1k tokens, the answer ~30, and a 49k-entry vocabulary at every prompt position would be most of
the memory. Rows are left-padded with explicit positions, so every answer sits in the last columns.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from routerank.errors import RouterankError
from routerank.models.llm import left_positions, pad_batch
from routerank.rerank.listwise import chat_ids, format_permutation, truncate_passage
from routerank.rerank.templates import LISTWISE_TEMPLATE
from routerank.train.distill import ScoredList
from routerank.train.lora import LoraTrainable
from routerank.train.losses import target_nll


@dataclass(frozen=True)
class PermutationExample:
    """One SFT example: the listwise prompt's token ids and the answer's (the teacher's permutation, then EOS)."""

    query_id: str
    prompt_ids: tuple[int, ...]  # the chat-framed listwise prompt, ending with the assistant cue
    answer_ids: tuple[int, ...]  # the permutation's tokens and the end-of-sequence token
    answer: str  # the permutation as text, e.g. "[2] > [1] > [3]"


def shown_order(item: ScoredList, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """Positions into the list in the order the prompt shows them: first-stage order, or a seeded shuffle."""
    order = list(range(len(item.documents)))
    if shuffle:
        random.Random(f"{seed}:{epoch}:{item.query_id}").shuffle(order)
    return order


def permutation_example(
    item: ScoredList, tokenizer, *, max_doc_tokens: int, seed: int = 13, epoch: int = 0, shuffle: bool = True
) -> PermutationExample:
    """The prompt over `item`'s passages (as `shown_order` puts them) and, as the answer, the teacher's order of
    them in the prompt's own numbering."""
    if tokenizer.eos_token_id is None:
        raise RouterankError("the tokenizer has no end-of-sequence token to end an answer with")
    shown = shown_order(item, seed, epoch, shuffle)
    number = {position: rank for rank, position in enumerate(shown)}
    answer = format_permutation([number[i] for i in item.teacher_order()])
    passages = [truncate_passage(item.documents[i], max_doc_tokens, tokenizer) for i in shown]
    prompt_ids = chat_ids(tokenizer, LISTWISE_TEMPLATE.render(item.query, passages), LISTWISE_TEMPLATE.system)
    answer_ids = [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    return PermutationExample(item.query_id, tuple(prompt_ids), tuple(answer_ids), answer)


def answer_targets(batch: Sequence[PermutationExample]):
    """[rows, longest answer] token ids, right-aligned like the left-padded rows; -100 where a shorter answer's row
    holds prompt tokens."""
    # heavy: torch loads only when a model runs
    import torch

    width = max(len(e.answer_ids) for e in batch)
    targets = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, example in enumerate(batch):
        targets[row, width - len(example.answer_ids) :] = torch.tensor(example.answer_ids)
    return targets


def permutation_loss(logits, batch: Sequence[PermutationExample]):
    """The `GroupTrainer` loss hook: mean NLL of the answer tokens."""
    return target_nll(logits, answer_targets(batch).to(logits.device))


class PermutationTrainable(LoraTrainable):
    """The `Trainable` view of a LoRA-wrapped causal LM trained on permutation answers: `group_logits` gives the
    logits that predict each row's last (longest answer) tokens, [rows, longest answer, vocab]."""

    def __init__(self, peft_model, pad_id: int):
        super().__init__(peft_model, None)
        self.pad_id = pad_id

    def group_logits(self, batch: Sequence[PermutationExample]):
        """[rows, longest answer, vocab] logits predicting the last tokens of each left-padded prompt-and-answer row."""
        rows = [[*e.prompt_ids, *e.answer_ids] for e in batch]
        ids, mask = pad_batch(rows, self.pad_id, left=True)
        device = next(self.peft.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        positions = left_positions(mask)
        width = max(len(e.answer_ids) for e in batch)
        out = self.peft(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=width + 1)
        return out.logits[:, :-1]  # the logit at column t predicts the token at t + 1
