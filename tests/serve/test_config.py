"""The serve config and the `routerank serve` command: bad configs are refused with a fix, keys come from env or
file, and the real command starts, answers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from routerank.serve.config import ConfigError, load_api_keys, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


def test_the_example_config_parses():
    config = load_config(REPO / "configs" / "serve.toml")
    assert config.default_model == "ce" and config.models["ce"].options == {}
    assert config.search["scifact"].model == "ce" and config.batching.max_wait_ms == 5


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({}, "names no models"),
        ({"models": {"ce": {"spec": "ce:x", "typo": 1}}}, "unknown key"),
        ({"models": {"ce": {"spec": ""}}}, "needs a spec"),
        ({"models": {"ce": {"spec": "ce:x", "long_documents": "split"}}}, "long_documents"),
        ({"models": {"ce": {"spec": "ce:x"}}, "limits": {"max_documents": 0}}, "must be positive"),
        ({"models": {"ce": {"spec": "ce:x"}}, "batching": {"enabled": "yes"}}, "true or false"),
        ({"models": {"ce": {"spec": "ce:x"}}, "search": {"s": {"dataset": "d", "model": "nope"}}}, "not a configured"),
        ({"models": {"ce": {"spec": "ce:x"}}, "extra": {}}, "unknown section"),
    ],
)
def test_bad_configs_are_refused_with_a_reason(raw, says):
    with pytest.raises(ConfigError, match=says):
        parse_config(raw)


def test_keys_come_from_env_and_file_and_none_needs_an_explicit_opt_in(tmp_path, monkeypatch):
    key_file = tmp_path / "keys"
    key_file.write_text("# team keys\nfile-key-1\n\nfile-key-2  # ci\n")
    monkeypatch.setenv("MY_KEYS", "env-a, env-b")
    config = parse_config(
        {"models": {"ce": {"spec": "ce:x"}}, "auth": {"api_keys_env": "MY_KEYS", "api_keys_file": str(key_file)}}
    )
    assert load_api_keys(config.auth) == ["env-a", "env-b", "file-key-1", "file-key-2"]

    monkeypatch.delenv("MY_KEYS")
    bare = parse_config({"models": {"ce": {"spec": "ce:x"}}, "auth": {"api_keys_env": "MY_KEYS"}})
    with pytest.raises(ConfigError, match="allow_unauthenticated"):
        load_api_keys(bare.auth)
    opened = parse_config(
        {"models": {"ce": {"spec": "ce:x"}}, "auth": {"api_keys_env": "MY_KEYS", "allow_unauthenticated": True}}
    )
    assert load_api_keys(opened.auth) == []


def test_cli_refuses_a_missing_config_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "routerank.cli", "serve", "--config", "/no/such/serve.toml"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "serve config not found" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_routerank_serve_starts_answers_and_stops_on_sigterm(fresh_ce, tmp_path):
    port = _free_port()
    config = tmp_path / "serve.toml"
    config.write_text(
        f'[server]\nport = {port}\n[auth]\napi_keys_env = "SERVE_TEST_KEYS"\n'
        f'[models.ce]\nspec = "ce:{fresh_ce}"\noptions = {{ device = "cpu", progress = false }}\n'
    )
    env = {**os.environ, "SERVE_TEST_KEYS": "k1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "routerank.cli", "serve", "--config", str(config), "--log-level", "info"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v2/rerank",
            headers={"Authorization": "Bearer k1"},
            json={"model": "ce", "query": "q", "documents": ["a", "b"]},
            timeout=30,
        )
        assert response.status_code == 200 and len(response.json()["results"]) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    # uvicorn drains, runs the app's shutdown, then re-raises SIGTERM so a process manager sees it
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err and "Traceback" not in err
    assert "k1" not in out + err
