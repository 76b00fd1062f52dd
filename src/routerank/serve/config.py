"""The server's TOML config: models by spec, search indexes, batching, limits and auth, checked on load.

Every value has a default that suits one CPU or GPU box; a config names only what differs. An unknown key
or a bad value is refused with the file and a fix, so a typo never silently falls back to a default.

    [server]    host, port, request_timeout_s, shutdown_grace_s
    [auth]      api_keys_env, api_keys_file, allow_unauthenticated (must be said explicitly)
    [limits]    max_documents, max_query_chars, max_body_bytes, max_concurrent_requests, max_queued_pairs
    [batching]  enabled, max_batch_tokens, max_batch_pairs, max_wait_ms
    [models.NAME]  spec, options, long_documents ("truncate" | "chunk"), max_chunks_per_doc, max_tokens_per_doc
    [search.NAME]  dataset, pipeline, model, depth
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from routerank.errors import RouterankError

LONG_DOCUMENT_MODES = ("truncate", "chunk")


class ConfigError(RouterankError):
    """A serve config that cannot be read or holds a bad value."""


@dataclass(frozen=True)
class ServerConfig:
    """`[server]`: the host and port to listen on, the seconds a request may run before it is answered 503, and
    the seconds a shutdown waits for requests in flight and queued work."""

    host: str = "127.0.0.1"
    port: int = 8080
    request_timeout_s: float = 30.0
    shutdown_grace_s: float = 30.0


@dataclass(frozen=True)
class AuthConfig:
    """`[auth]`: where API keys come from (an environment variable of comma-separated keys and/or a file of one
    key per line), and whether serving without any key is allowed."""

    api_keys_env: str = "ROUTERANK_API_KEYS"  # comma-separated keys
    api_keys_file: str = ""  # one key per line; '#' starts a comment
    allow_unauthenticated: bool = False


@dataclass(frozen=True)
class LimitsConfig:
    """`[limits]`: the most documents, query characters and body bytes per request, requests in flight, and pairs
    queued per model; past each the server answers 413 or 429 instead of doing the work."""

    max_documents: int = 1000
    max_query_chars: int = 4000
    max_body_bytes: int = 8_000_000
    max_concurrent_requests: int = 256
    max_queued_pairs: int = 16384


@dataclass(frozen=True)
class BatchingConfig:
    """`[batching]`: cross-request batching per model (see `routerank.serve.batcher`): on or off, and when a batch
    stops growing (tokens, pairs, or milliseconds waited)."""

    enabled: bool = True  # False: one request at a time, no cross-request batching (the baseline)
    max_batch_tokens: int = 16384
    max_batch_pairs: int = 256
    max_wait_ms: float = 5.0


@dataclass(frozen=True)
class ModelConfig:
    """`[models.NAME]`: a model served under NAME, its reranker spec and constructor options, and how documents
    longer than the model's window are handled (cut, or scored in chunks that keep each document's best)."""

    name: str
    spec: str
    options: dict[str, Any] = field(default_factory=dict)
    long_documents: str = "truncate"
    max_chunks_per_doc: int = 10
    max_tokens_per_doc: int = 4096


@dataclass(frozen=True)
class SearchConfig:
    """`[search.NAME]`: a search index served under NAME: the dataset, the first-stage pipeline, how many documents
    it retrieves, and the `[models]` name that reranks them ("" for none)."""

    name: str
    dataset: str
    pipeline: str = "bm25"
    model: str = ""  # a [models] name to rerank with; "" returns the retriever's order
    depth: int = 20


@dataclass(frozen=True)
class ServeConfig:
    """The whole server config: every section, with `path` the file it was read from (None for a default config)."""

    models: dict[str, ModelConfig]
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    batching: BatchingConfig = BatchingConfig()
    search: dict[str, SearchConfig] = field(default_factory=dict)
    path: str | None = None

    @property
    def default_model(self) -> str:
        """The name of the first model in the config, the one a request without `model` gets."""
        return next(iter(self.models))

    def replace_section(self, **sections: Any) -> ServeConfig:
        """A copy with whole sections swapped, e.g. `config.replace_section(batching=BatchingConfig(False))`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return ServeConfig(**{**values, **sections})


def _section(cls, raw: Any, where: str, path: str | None, **extra: Any):
    if not isinstance(raw, dict):
        raise ConfigError(f"[{where}] must be a table", path=path, fix=f"write it as [{where}] with key = value lines")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known) - set(extra))
    if unknown:
        choices = sorted(set(known) - set(extra))
        raise ConfigError(f"[{where}] has unknown key(s) {unknown}", path=path, fix=f"known keys: {choices}")
    values = {**raw, **extra}
    for name, value in raw.items():
        default = known[name].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"[{where}] {name} must be true or false, got {value!r}", path=path)
        if isinstance(default, int | float) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"[{where}] {name} must be a number, got {value!r}", path=path)
            if value <= 0 and name != "port":
                raise ConfigError(f"[{where}] {name} must be positive, got {value!r}", path=path)
    return cls(**values)


def parse_config(raw: dict[str, Any], path: str | None = None) -> ServeConfig:
    """A ServeConfig from a parsed TOML mapping (the same shape as the file)."""
    known = {"server", "auth", "limits", "batching", "models", "search"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}", path=path, fix=f"sections are {sorted(known)}")
    models_raw = raw.get("models") or {}
    if not isinstance(models_raw, dict) or not models_raw:
        raise ConfigError(
            "the config names no models", path=path, fix='add one, e.g. [models.ce] with spec = "ce:/path/to/model"'
        )
    models = {}
    for name, table in models_raw.items():
        model = _section(ModelConfig, table, f"models.{name}", path, name=name)
        if not isinstance(model.spec, str) or not model.spec.strip():
            raise ConfigError(f"[models.{name}] needs a spec", path=path, fix='e.g. spec = "ce:/path/to/model"')
        if model.long_documents not in LONG_DOCUMENT_MODES:
            raise ConfigError(f"[models.{name}] long_documents must be one of {LONG_DOCUMENT_MODES}", path=path)
        if not isinstance(model.options, dict):
            raise ConfigError(
                f"[models.{name}] options must be a table",
                path=path,
                fix='e.g. options = { device = "cpu", max_length = 256 }',
            )
        models[name] = model
    search = {}
    for name, table in (raw.get("search") or {}).items():
        entry = _section(SearchConfig, table, f"search.{name}", path, name=name)
        if entry.model and entry.model not in models:
            raise ConfigError(
                f"[search.{name}] model {entry.model!r} is not a configured model",
                path=path,
                fix=f'use one of {sorted(models)}, or "" for no reranking',
            )
        search[name] = entry
    config = ServeConfig(
        models=models,
        search=search,
        path=path,
        server=_section(ServerConfig, raw.get("server", {}), "server", path),
        auth=_section(AuthConfig, raw.get("auth", {}), "auth", path),
        limits=_section(LimitsConfig, raw.get("limits", {}), "limits", path),
        batching=_section(BatchingConfig, raw.get("batching", {}), "batching", path),
    )
    if not 0 <= config.server.port <= 65535:
        raise ConfigError(f"[server] port must be 0-65535, got {config.server.port}", path=path)
    return config


def default_config() -> ServeConfig:
    """What `routerank serve` runs without a config: the starter bundle, routed (`starter`, the default model, with
    /v1/route) and its generalist alone (`starter-generalist`), on 127.0.0.1:8080, keys from ROUTERANK_API_KEYS.
    Both run on `backend="auto"`: the fastest exported graph that passes the parity check, exported on the first
    start (about a minute) and cached; torch, with the reason logged, where that cannot be done."""
    return parse_config(
        {
            "models": {
                # no score cache on disk: a server must not keep its callers' queries and documents
                "starter": {"spec": "starter", "options": {"cache": False, "backend": "auto"}},
                "starter-generalist": {"spec": "starter:generalist", "options": {"backend": "auto"}},
            }
        },
        None,
    )


def load_config(path: str | Path | None) -> ServeConfig:
    """The config at `path` (checked), or `default_config()` when `path` is None."""
    if path is None:
        return default_config()
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError("serve config not found", path=path, fix="see configs/serve.toml for an example")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML ({exc})", path=path) from None
    return parse_config(raw, str(path))


def load_api_keys(auth: AuthConfig, config_path: str | None = None) -> list[str]:
    """Keys from the env var and the file together; empty only when the config allows that explicitly."""

    keys = [k.strip() for k in os.environ.get(auth.api_keys_env, "").split(",") if k.strip()]
    if auth.api_keys_file:
        key_file = Path(auth.api_keys_file).expanduser()
        if not key_file.is_file():
            raise ConfigError(
                f"api_keys_file {key_file} does not exist",
                path=config_path,
                fix="create it with one key per line, or remove api_keys_file",
            )
        for line in key_file.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.append(line)
    if not keys and not auth.allow_unauthenticated:
        raise ConfigError(
            f"no API keys: ${auth.api_keys_env} is empty and no api_keys_file is set",
            path=config_path,
            fix=f"export {auth.api_keys_env}=<key>, set [auth] api_keys_file, "
            "or set [auth] allow_unauthenticated = true to serve without keys",
        )
    return keys
