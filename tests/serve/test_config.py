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
    assert config.default_model == "starter" and config.models["starter"].spec == "starter"
    assert config.models["generalist"].spec == "starter:generalist"
    assert config.search["scifact"].model == "starter" and config.batching.max_wait_ms == 5


def test_without_a_config_the_server_serves_the_starter():
    config = load_config(None)
    assert config.default_model == "starter"
    assert {name: model.spec for name, model in config.models.items()} == {
        "starter": "starter",
        "starter-generalist": "starter:generalist",
    }
    assert config.server.host == "127.0.0.1" and not config.auth.allow_unauthenticated
    assert {model.options.get("backend") for model in config.models.values()} == {"auto"}


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


def _wait_ready(proc: subprocess.Popen, port: int, seconds: float) -> float:
    """Seconds until /ready answered 200; fails if the process dies or `seconds` pass first."""
    start = time.monotonic()
    while True:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        assert time.monotonic() - start < seconds, f"server not ready within {seconds} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_routerank_serve_with_no_config_serves_the_starter_within_a_minute(tmp_path):
    port = _free_port()
    # no datasets to calibrate on: `auto` cannot export, so the starter is served on torch and the log says why
    env = {**os.environ, "ROUTERANK_API_KEYS": "k1", "ROUTERANK_DATA": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "routerank.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_ready(proc, port, 60)
        auth = {"Authorization": "Bearer k1"}
        docs = ["Cats purr when they are content.", "Vitamin D supplementation lowered cancer incidence in a trial."]
        query = "does vitamin D lower the risk of cancer?"
        for path in ("/v2/rerank", "/v1/rerank"):
            body = {"model": "starter", "query": query, "documents": docs}
            response = httpx.post(f"http://127.0.0.1:{port}{path}", headers=auth, json=body, timeout=30)
            assert response.status_code == 200, response.text
            assert response.json()["results"][0]["index"] == 1
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/route",
            headers=auth,
            json={"queries": [query, "Is a contract signed under duress voidable?"]},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        choices = [r["choice"] for r in response.json()["results"]]
        assert len(choices) == 2 and all(isinstance(c, str) and c for c in choices)
        backends = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=30).json()["backends"]
        assert backends == {"starter": "torch", "starter-generalist": "torch"}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert "backend auto failed (no calibration data" in err


def test_routerank_serve_without_keys_says_how_to_set_them():
    env = {k: v for k, v in os.environ.items() if k != "ROUTERANK_API_KEYS"}
    result = subprocess.run(
        [sys.executable, "-m", "routerank.cli", "serve", "--port", str(_free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "ROUTERANK_API_KEYS" in result.stderr and "allow_unauthenticated" in result.stderr
