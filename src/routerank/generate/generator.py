"""The answer generator: (query, context documents) → a short answer, by batched greedy decoding.

Per call: fit each query's documents to the token budget, look every (query, context) up in the on-disk cache,
render prompts only for the misses, and decode those longest-first in left-padded batches (left padding keeps
every row's last prompt token at the same position, so all rows decode in step). A row stops at EOS or at the
first stop string; the batch stops when every row has, or at `max_new_tokens`. Each batch commits to the cache
as it finishes.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from routerank.data.types import Document, Query
from routerank.errors import RouterankError
from routerank.generate.cache import CachedGeneration, GenerationCache, generation_key
from routerank.generate.context import ContextFit, as_documents, fit_context
from routerank.generate.stops import DEFAULT_STOPS, clean_answer, cut_at_stop, find_stop
from routerank.generate.templates import get_template, template_for
from routerank.models.llm import DEFAULT_LLM, left_positions, load_causal_lm, pad_batch, resolve_llm
from routerank.retrieve.base import as_query_list


@dataclass(frozen=True)
class Answer:
    """One generated answer, with how decoding ended and what the prompt's context held."""

    query_id: str
    text: str  # the cleaned answer: stop string cut, "Answer:" label, quotes and final full stop removed
    raw: str  # the decoded continuation up to EOS (or the token limit), before any clean-up
    stopped_by: str  # "eos", "stop" (a stop string), "length" (max_new_tokens) or "choice" (closed-set answer)
    context: ContextFit
    prompt_tokens: int
    cached: bool


def _as_queries(queries: Sequence[Query | str]) -> list[Query]:
    """`retrieve.base.as_query_list`, with a bad item reported as a routerank error (one CLI line, exit 2)."""
    try:
        return as_query_list(queries)
    except TypeError as exc:
        raise RouterankError(f"a query must be a Query or a str: {exc}") from None


class Generator:
    """Answers queries from context documents with a causal LM named by spec (default: the packaged SmolLM2)."""

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        *,
        template: str | None = None,
        context_tokens: int = 1024,
        min_doc_tokens: int = 32,
        max_new_tokens: int = 32,
        stops: Sequence[str] = DEFAULT_STOPS,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str | None = None,
        cache: bool = True,
        cache_dir=None,
        progress: bool = True,
        trust_remote_code: bool = False,
        loaded: tuple | None = None,
        choices: Sequence[str] = (),
    ):
        """
        model: LLM spec (`smollm2`, `hf:<folder-or-id>`, `gguf:<file>`); with `loaded`, only the name the cache
            knows the model by.
        template: answer template name; None picks the family's (ChatML if the tokenizer has its markers, else plain).
        context_tokens: document tokens a prompt may hold (1024: SQuAD's top 3 paragraphs fit whole).
        min_doc_tokens: a document cut shorter than this is dropped instead (a 10-token stub misleads more
            than it helps).
        max_new_tokens: decoding limit; 32 is ample for extractive answers, which are a few words.
        stops: strings that end an answer (default: a newline, as short answers are one line).
        batch_size: prompts decoded together; 8 keeps padding waste low on a CPU.
        device, dtype: where and how the model runs (default: CUDA in bf16 if present, else CPU in fp32).
        cache, cache_dir: keep every generation on disk (default folder: ROUTERANK_CACHE/generations).
        progress: show a progress bar while generating.
        trust_remote_code: off by default; only for hub models you trust.
        loaded: an already-loaded (model, tokenizer), e.g. a tiny test model or an adapted one.
        choices: closed-set answering, for sets whose answers come from a fixed few (PubMedQA's yes/no/maybe), where
            free text earns F1 on stray words: the answer is the choice whose first token the model finds likeliest
            right after the prompt (one forward pass per prompt, no decoding). Each choice needs its own first
            token. Empty: greedy decoding.
        """
        if max_new_tokens < 1:
            raise RouterankError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if batch_size < 1:
            raise RouterankError(f"batch_size must be at least 1, got {batch_size}")
        if context_tokens < 0 or min_doc_tokens < 0:
            raise RouterankError("context_tokens and min_doc_tokens must be 0 or more")
        self.model_spec = model
        self.context_tokens, self.min_doc_tokens = context_tokens, min_doc_tokens
        self.max_new_tokens, self.stops = max_new_tokens, tuple(stops)
        self.batch_size, self.progress = batch_size, progress
        self.name = f"generate:{model}"
        if loaded is None:
            loaded = load_causal_lm(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
            self.fingerprint = resolve_llm(model).fingerprint
        else:
            self.fingerprint = None
        self.model, self.tokenizer = loaded
        self.template = get_template(template) if template is not None else template_for(self.tokenizer)
        parameter = next(self.model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.eos_ids = self._eos_ids()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.choices = tuple(choices)
        self.choice_ids = self._choice_ids() if self.choices else []
        self.model_calls = 0
        self.cache = GenerationCache(self.key, cache_dir) if cache else None

    def _choice_ids(self) -> list[int]:
        """Each choice's first token where an answer starts: after a prompt and the template's reply prefix."""
        if any(not c.strip() for c in self.choices) or len(set(self.choices)) != len(self.choices):
            raise RouterankError(f"choices must be distinct, non-empty strings, got {list(self.choices)}")
        prompt = self.template.ask("Is it?")
        before = self.tokenizer(prompt)["input_ids"]
        prefix = self.template.reply.split("{answer}")[0]
        firsts = []
        for choice in self.choices:
            ids = self.tokenizer(prompt + prefix + choice)["input_ids"]
            if ids[: len(before)] != before or len(ids) == len(before):
                raise RouterankError(
                    f"the choice {choice!r} does not tokenize apart from the prompt with this template",
                    fix="pick another template, or answer by free generation (no choices)",
                )
            firsts.append(ids[len(before)])
        if len(set(firsts)) != len(firsts):
            raise RouterankError(
                f"choices {list(self.choices)} share a first token", fix="use choices that start differently"
            )
        return firsts

    def _eos_ids(self) -> list[int]:
        ids = [self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)]
        flat = [i for item in ids for i in (item if isinstance(item, list) else [item]) if i is not None]
        if not flat:
            raise RouterankError("the tokenizer and model name no end-of-sequence token", fix="pick another model")
        return list(dict.fromkeys(flat))

    @property
    def key(self) -> str:
        """The generator's cache key: model, template and version, and every setting that changes an answer."""
        settings = {
            "model": self.model_spec,
            "fingerprint": self.fingerprint,
            "template": self.template.key,
            "context_tokens": self.context_tokens,
            "min_doc_tokens": self.min_doc_tokens,
            "max_new_tokens": self.max_new_tokens,
            "stops": self.stops,
            "dtype": str(self.dtype),
            **({"choices": list(self.choices)} if self.choices else {}),
        }
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return f"{self.template.name}-v{self.template.version}-{digest}"

    def settings(self) -> dict[str, object]:
        """The settings behind the answers (model, template, budgets, decoding, batch size, dtype), JSON-ready."""
        return {
            "model": self.model_spec,
            "template": f"{self.template.name} v{self.template.version}",
            "context_tokens": self.context_tokens,
            "min_doc_tokens": self.min_doc_tokens,
            "max_new_tokens": self.max_new_tokens,
            "stops": list(self.stops),
            "decoding": f"choice among {list(self.choices)}" if self.choices else "greedy",
            "batch_size": self.batch_size,
            "dtype": str(self.dtype),
        }

    def with_template(self, template: str) -> Generator:
        """The same loaded model answering through another template, with that template's own cache."""
        other = copy.copy(self)
        other.template = get_template(template)
        other.model_calls = 0
        other.cache = GenerationCache(other.key, self.cache.path.parent) if self.cache is not None else None
        return other

    def prompt(self, query: str, context: ContextFit | Sequence[Document | str] = ()) -> str:
        """The exact prompt text for one query; documents are fitted to the budget first."""
        if not isinstance(context, ContextFit):
            context = fit_context(as_documents(context), self.tokenizer, self.context_tokens, self.min_doc_tokens)
        return self.template.render(query, context.texts)

    def generate(
        self, queries: Sequence[Query | str], contexts: Sequence[Sequence[Document | str]] | None = None
    ) -> list[Answer]:
        """One answer per query. `contexts[i]` holds query i's documents in rank order; empty (or no
        `contexts` at all) is R0, a closed-book prompt."""
        query_list = _as_queries(queries)
        if contexts is None:
            contexts = [()] * len(query_list)
        if len(contexts) != len(query_list):
            raise RouterankError(f"got {len(query_list)} queries but {len(contexts)} context lists; give one per query")
        documents = [as_documents(c) for c in contexts]
        fits = [fit_context(d, self.tokenizer, self.context_tokens, self.min_doc_tokens) for d in documents]
        keys = [generation_key(q.text, d) for q, d in zip(query_list, documents, strict=True)]
        done = self.cache.get_many(keys) if self.cache is not None else {}
        todo = {key: i for i, key in enumerate(keys) if key not in done}
        fresh: set[str] = set(todo)
        if todo:
            prompts = {key: self._prompt_ids(query_list[i].text, fits[i]) for key, i in todo.items()}
            done.update(self._run(prompts))
        return [
            Answer(
                query.id,
                clean_answer(cut_at_stop(done[key].raw, self.stops)),
                done[key].raw,
                done[key].stopped_by,
                fit,
                done[key].prompt_tokens,
                key not in fresh,
            )
            for query, fit, key in zip(query_list, fits, keys, strict=True)
        ]

    def _prompt_ids(self, query: str, fit: ContextFit) -> list[int]:
        ids = self.tokenizer(self.template.render(query, fit.texts))["input_ids"]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and len(ids) + self.max_new_tokens > limit:
            raise RouterankError(
                f"a prompt of {len(ids)} tokens plus {self.max_new_tokens} new tokens exceeds the model's {limit}",
                fix="lower context_tokens",
            )
        return ids

    def _run(self, prompts: dict[str, list[int]]) -> dict[str, CachedGeneration]:
        order = sorted(prompts, key=lambda key: -len(prompts[key]))
        out: dict[str, CachedGeneration] = {}
        with tqdm(total=len(order), desc=self.name, unit="q", disable=not self.progress, leave=False) as bar:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                rows = [prompts[key] for key in batch]
                results = dict(zip(batch, self.choose(rows) if self.choices else self.decode(rows), strict=True))
                if self.cache is not None:
                    self.cache.put_many(results)
                out.update(results)
                bar.update(len(batch))
        return out

    def choose(self, rows: list[list[int]]) -> list[CachedGeneration]:
        """Closed-set answers of token-id prompts: the choice with the likeliest first token, in one forward pass."""
        import torch  # local: torch is heavy, and `import routerank` must not load it

        ids, mask = pad_batch(rows, self.pad_id, left=True)
        positions = left_positions(mask)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
                logits_to_keep=1,
            )
        self.model_calls += 1
        picked = out.logits[:, -1, self.choice_ids].argmax(-1).tolist()
        return [CachedGeneration(self.choices[i], "choice", len(row)) for i, row in zip(picked, rows, strict=True)]

    def decode(self, rows: list[list[int]]) -> list[CachedGeneration]:
        """Greedy continuations of token-id prompts, decoded together in one left-padded batch."""
        import torch  # local: torch and transformers are heavy, and `import routerank` must not load them
        from transformers import GenerationConfig, StoppingCriteriaList

        ids, mask = pad_batch(rows, self.pad_id, left=True)
        width = ids.shape[1]
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
        )
        criteria = StoppingCriteriaList([_stop_criterion(self.tokenizer, self.stops, width)])
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=config,
                stopping_criteria=criteria,
            )
        self.model_calls += 1
        return [self._finish(tokens, len(row)) for tokens, row in zip(out[:, width:].tolist(), rows, strict=True)]

    def _finish(self, tokens: list[int], prompt_tokens: int) -> CachedGeneration:
        ends = {*self.eos_ids, self.pad_id}
        end = next((i for i, token in enumerate(tokens) if token in ends), None)
        text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True)
        if find_stop(text, self.stops) is not None:
            stopped_by = "stop"
        elif end is not None:
            stopped_by = "eos"
        else:
            stopped_by = "length"
        return CachedGeneration(text, stopped_by, prompt_tokens)


def _stop_criterion(tokenizer, stops: tuple[str, ...], width: int):
    """A transformers stopping criterion that ends each row once its new text holds a stop string."""
    import torch  # local: torch and transformers are heavy, and `import routerank` must not load them
    from transformers import StoppingCriteria

    class StopStrings(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, width:], skip_special_tokens=True)
            done = [find_stop(text, stops) is not None for text in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopStrings()
