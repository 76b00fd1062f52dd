"""Trained LoRA adapters that an LLM reranker merges into its weights: `pointwise:smollm2,adapter=<folder>`.

Several trainers make whole rerankers as LoRA adapters over one backbone: ProRank (pointwise, P("1")), Rank-R1
(setwise), DeAR (pointwise and listwise students), and R2R's domain experts. An adapter folder holds peft's
`adapter_model.safetensors` + `adapter_config.json` and a manifest, `routerank_adapter.json` (an R2R expert's
`routerank_expert.json` is read too), with at least:

    reranker               the family that reads it ("pointwise", "setwise", "listwise"); absent: any
    backbone               the LLM spec it was trained on; backbone_fingerprint refuses another one
    template               the prompt family it was trained with (`rerank.templates`)
    base_adapter           optional: a subfolder holding the adapter this one was trained on top of (DeAR's
                           listwise stage over its pointwise one); it is merged first

and whatever the trainer adds for the record (config, steps, seconds, reward curve, ...).

The adapter is merged into the weights (peft unloaded), so a reranker with an adapter runs as fast as one without,
through the same fast paths (prefix KV reuse, two-row LM head); rerankers key their score caches and run names on
`adapter_digest`. One reranker holds one adapter; R2R's expert bank is the place that switches many.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from routerank.errors import RouterankError
from routerank.fsutil import sha256_file

MANIFEST = "routerank_adapter.json"
EXPERT_MANIFEST = "routerank_expert.json"  # R2R experts (`routerank.r2r.bank`)
WEIGHTS = "adapter_model.safetensors"
POINTWISE, SETWISE, LISTWISE = "pointwise", "setwise", "listwise"


class AdapterMismatchError(RouterankError):
    """An adapter trained on another backbone, or for another reranker family."""


def read_adapter_manifest(folder: str | Path) -> dict:
    """The manifest of an adapter folder (`routerank_adapter.json`, or an R2R expert's `routerank_expert.json`);
    a RouterankError when the folder lacks a manifest or the adapter weights."""
    folder = Path(folder).expanduser()
    for name in (MANIFEST, EXPERT_MANIFEST):
        if (folder / name).exists() and (folder / WEIGHTS).exists():
            return json.loads((folder / name).read_text())
    raise RouterankError(
        f"not an adapter folder (needs {WEIGHTS} and {MANIFEST})",
        path=folder,
        fix="give the folder a routerank trainer wrote (routerank train prorank | rank-r1 | expert | ...)",
    )


def adapter_digest(folder: str | Path) -> str:
    """The adapter weights' content hash (and its base adapter's): score caches and run names tell adapters apart by
    it."""
    folder = Path(folder).expanduser()
    digest = sha256_file(folder / WEIGHTS)[:12]
    base = read_adapter_manifest(folder).get("base_adapter")
    return f"{adapter_digest(folder / base)}+{digest}" if base else digest


def check_adapter(manifest: dict, folder: str | Path, *, kind: str, fingerprint: str | None) -> None:
    """Refuse an adapter made for another reranker family or another backbone (a clear error here beats peft's
    tensor size mismatch). A `fingerprint` of None (a model passed in, not named by a spec) is not checked."""
    family = manifest.get("reranker")
    if family is not None and family != kind:
        raise AdapterMismatchError(
            f"this adapter is read by the {family} reranker, not {kind}",
            path=folder,
            fix=f"use {family}:adapter={folder}",
        )
    trained_on = manifest.get("backbone_fingerprint")
    if fingerprint is not None and trained_on is not None and trained_on != fingerprint:
        raise AdapterMismatchError(
            f"adapter trained on backbone {manifest.get('backbone')!r} ({trained_on}), not this one ({fingerprint})",
            path=folder,
            fix=f"load it onto {manifest.get('backbone')}",
        )


def adapter_is_noop(folder: str | Path) -> bool:
    """True when every LoRA B matrix in the folder is exactly zero, so that merging the adapter leaves the backbone
    as it was. LoRA starts B at zero: a run whose every step had a zero gradient (GRPO where every completion of
    every group got the same reward) ends here, and its "trained" rows are the untrained backbone's."""

    path = Path(folder).expanduser() / "adapter_model.safetensors"
    if not path.is_file():
        raise RouterankError("no adapter_model.safetensors in the adapter folder", path=path.parent)
    with safe_open(str(path), framework="numpy") as weights:
        names = [name for name in weights.keys() if "lora_B" in name]  # noqa: SIM118 (a safe_open handle, not a dict)
        return bool(names) and all(not weights.get_tensor(name).any() for name in names)


def apply_adapter(model, folder: str | Path, *, kind: str, fingerprint: str | None = None):
    """(`model` with the adapter's LoRA weights merged in, the manifest). The merge happens in place: `model`
    itself carries the adapter afterwards."""
    # heavy: peft loads only when adapters are used
    from peft import PeftModel

    manifest = read_adapter_manifest(folder)
    check_adapter(manifest, folder, kind=kind, fingerprint=fingerprint)
    base = manifest.get("base_adapter")
    if base:
        below = Path(folder).expanduser() / base
        family = read_adapter_manifest(below).get("reranker") or kind
        model, _ = apply_adapter(model, below, kind=family, fingerprint=fingerprint)
    merged = PeftModel.from_pretrained(model, str(Path(folder).expanduser())).merge_and_unload()
    return merged.eval(), manifest
