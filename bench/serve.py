"""Load test of `routerank serve` against peer servers, side by side in one run, on 127.0.0.1 only.

    python bench/serve.py                                   # the trained CE (~/.cache/routerank/models/ce-pooled)
    python bench/serve.py --model /tmp/ce-dev --scale 0.25  # a quick look with any CE folder
    python bench/serve.py --infinity-bin /opt/infvenv/bin/infinity_emb

Workload: SciFact test queries, each with its BM25 top 20 documents, sent as Cohere v2 rerank requests.
At each concurrency (1/8/32/128) a bounded asyncio client (httpx) keeps that many requests open until it has
sent its quota or the time limit passes; it measures requests/s, documents/s, p50/p95/p99 latency and errors
(any non-200 answer or transport failure). Each peer runs in its own process, one after another, so they never
share the CPU:
    routerank   `routerank serve` with batching across requests (token budget, a few ms of wait)
    single      the same server and model, one request at a time, no batching across requests
    torch       the same batching server with the --option backend/dtype left out: plain torch fp32
    infinity    infinity-emb serving the same cross-encoder folder (if its executable is given or on PATH;
                it cannot share routerank's environment, so the JSON records why when it is absent)
Writes reports/bench-serve.json and prints the JSON, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

LEVELS = (1, 8, 32, 128)
INFINITY_WHY = (
    "infinity-emb 0.0.78 pins numpy<2, sentence-transformers<4, typer<0.13, rich<14 and uvicorn<0.33, which "
    "conflict with routerank's environment; install it in its own venv (python -m venv V && V/bin/pip install "
    "torch==2.13.0 'infinity-emb[server,torch]==0.0.78') and pass --infinity-bin V/bin/infinity_emb"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def workload(dataset: str, queries: int, depth: int) -> list[tuple[str, list[str]]]:
    """(query, BM25 top `depth` texts) for the first `queries` test queries."""
    import routerank

    ds = routerank.load_dataset(dataset, splits=["test"])
    chosen = ds.split_queries("test")[:queries]
    run = routerank.build_pipeline("bm25", ds.corpus).search(chosen, depth)
    return [(q.text, [ds.corpus[d].full_text for d in run[q.id].doc_ids]) for q in chosen]


def window(model: str) -> int:
    """The tokenizer's own window, which infinity uses too, so every server reads the same tokens."""
    from transformers import AutoTokenizer

    return min(512, int(AutoTokenizer.from_pretrained(model, local_files_only=True).model_max_length))


def padding(model: str, work: list[tuple[str, list[str]]], max_length: int) -> dict:
    """How much of a forward pass is padding, scoring each request alone vs sorted batches of 32 across requests.

    On a CPU the cost is proportional to tokens, so this bounds what batching across requests can save there.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
    per_request, lengths = 0, []
    for query, docs in work:
        row = [len(tokenizer(query, d, truncation=True, max_length=max_length)["input_ids"]) for d in docs]
        per_request += max(row) * len(row)
        lengths += row
    ordered = sorted(lengths)
    sorted_batches = sum(max(ordered[i : i + 32]) * len(ordered[i : i + 32]) for i in range(0, len(ordered), 32))
    true = sum(lengths)
    return {
        "mean_pair_tokens": round(true / len(lengths), 1),
        "share_of_pairs_at_max_length": round(sum(n >= max_length for n in lengths) / len(lengths), 3),
        "padded_over_true_tokens_per_request": round(per_request / true, 3),
        "padded_over_true_tokens_sorted_batches_of_32": round(sorted_batches / true, 3),
    }


def routerank_config(model: str, port: int, batching: bool, options: dict) -> str:
    inline = ", ".join(f"{k} = {json.dumps(v)}" for k, v in options.items())
    return f"""
[server]
host = "127.0.0.1"
port = {port}
request_timeout_s = 300
[auth]
allow_unauthenticated = true
[limits]
max_concurrent_requests = 1024
max_queued_pairs = 65536
[batching]
enabled = {"true" if batching else "false"}
[models.ce]
spec = "ce:{model}"
options = {{ {inline} }}
"""


class Peer:
    """A server process on 127.0.0.1 and how to talk to it."""

    def __init__(self, name: str, command: list[str], port: int, ready_path: str, env: dict | None = None):
        self.name, self.command, self.port, self.ready_path = name, command, port, ready_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        handle, log_path = tempfile.mkstemp(prefix=f"bench-serve-{name}-", suffix=".log")
        os.close(handle)
        self.log_path = log_path
        self.model_name = "ce"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float) -> None:
        with open(self.log_path, "w") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} was not ready after {timeout:g} s; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def payload(self, query: str, docs: list[str]) -> dict:
        return {"model": self.model_name, "query": query, "documents": docs}

    def batch_stats(self) -> tuple[float, float] | None:
        """(sum, count) of the server's pairs-per-batch histogram, for routerank servers."""
        try:
            text = httpx.get(self.url + "/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        values = {}
        for line in text.splitlines():
            for key in ("routerank_batch_pairs_sum", "routerank_batch_pairs_count"):
                if line.startswith(key + "{"):
                    values[key] = float(line.rsplit(" ", 1)[1])
        if len(values) != 2:
            return None
        return values["routerank_batch_pairs_sum"], values["routerank_batch_pairs_count"]


async def load(peer: Peer, work: list[tuple[str, list[str]]], concurrency: int, total: int, seconds: float) -> dict:
    """`concurrency` workers send up to `total` requests in all, none started after `seconds`."""
    latencies: list[float] = []
    errors: list[str] = []
    docs_done = 0
    sent = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=peer.url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent, docs_done
            while sent < total and time.monotonic() < deadline:
                query, docs = work[sent % len(work)]
                sent += 1
                start = time.perf_counter()
                try:
                    response = await client.post(
                        "/v2/rerank" if peer.name != "infinity" else "/rerank", json=peer.payload(query, docs)
                    )
                    ok = response.status_code == 200 and len(response.json()["results"]) == len(docs)
                    if not ok:
                        errors.append(f"{response.status_code}: {response.text[:120]}")
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    ok = False
                    errors.append(f"{type(exc).__name__}: {exc}"[:160])
                if ok:
                    latencies.append(time.perf_counter() - start)
                    docs_done += len(docs)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ordered = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1) if ordered else None

    return {
        "concurrency": concurrency,
        "requests": sent,
        "ok": len(latencies),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 3),
        "docs_per_s": round(docs_done / wall, 2),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": round(1000 * statistics.fmean(ordered), 1) if ordered else None,
    }


def run_peer(peer: Peer, work, levels, per_level: dict[int, int], seconds: float, ready_timeout: float) -> dict:
    try:
        peer.start(ready_timeout)
    except (RuntimeError, OSError) as exc:
        peer.stop()
        return {"status": "failed", "reason": str(exc)}
    try:
        if peer.name == "infinity":
            peer.model_name = httpx.get(peer.url + "/models", timeout=10).json()["data"][0]["id"]
        asyncio.run(load(peer, work, 2, 4, 120))  # warm-up, not reported
        results = []
        for level in levels:
            before = peer.batch_stats()
            result = asyncio.run(load(peer, work, level, per_level[level], seconds))
            after = peer.batch_stats()
            if before and after and after[1] > before[1]:
                result["mean_batch_pairs"] = round((after[0] - before[0]) / (after[1] - before[1]), 1)
            results.append(result)
            print(
                f"  {peer.name:9s} c={level:<4d} {result['requests_per_s']:7.2f} req/s {result['docs_per_s']:8.1f} "
                f"docs/s p50 {result['p50_ms']} ms errors {result['errors']}",
                file=sys.stderr,
            )
        return {"status": "ok", "levels": results}
    finally:
        peer.stop()


def parse_options(items: list[str]) -> dict:
    """`--option dtype=bf16` → {"dtype": "bf16"}; JSON values (numbers, true/false) are decoded."""
    options = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def make_peers(args, tmp: Path) -> tuple[list[Peer], dict]:
    peers, skipped = [], {}
    for name, batching in (("routerank", True), ("single", False), ("torch", True)):
        if name not in args.peers:
            continue
        port = free_port()
        config = tmp / f"{name}.toml"
        options = {"max_length": args.max_length, "progress": False, "cache": False, **parse_options(args.option)}
        if name == "torch":  # the same batching server on the plain torch fp32 path: what a backend is measured against
            options = {k: v for k, v in options.items() if k not in ("backend", "dtype", "threads")}
        config.write_text(routerank_config(args.model, port, batching, options))
        command = [sys.executable, "-m", "routerank.cli", "serve", "--config", str(config), "--log-level", "warning"]
        peers.append(Peer(name, command, port, "/ready"))
    if "infinity" in args.peers:
        binary = args.infinity_bin or os.environ.get("INFINITY_BIN") or shutil.which("infinity_emb")
        if not binary or not Path(binary).exists():
            skipped["infinity"] = {"status": "skipped", "reason": f"no infinity_emb executable: {INFINITY_WHY}"}
        else:
            port = free_port()
            command = [
                binary,
                "v2",
                "--model-id",
                args.infinity_model or args.model,
                "--engine",
                args.infinity_engine,
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--no-trust-remote-code",
                "--no-bettertransformer",
                "--batch-size",
                "32",
            ]
            env = {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
            peers.append(Peer("infinity", command, port, "/health", env))
    return peers, skipped


def criteria(peers: dict) -> dict:
    def level(name: str, c: int) -> dict | None:
        entry = peers.get(name, {})
        return next((r for r in entry.get("levels", []) if r["concurrency"] == c), None)

    out: dict = {}
    top = level("routerank", 128)
    if top:
        out["routerank_errors_at_128"] = top["errors"]
    ours, single = level("routerank", 32), level("single", 32)
    if ours and single and single["docs_per_s"]:
        out["speedup_vs_single_at_32"] = round(ours["docs_per_s"] / single["docs_per_s"], 3)
    plain = level("torch", 32)
    if ours and plain and plain["docs_per_s"]:
        out["speedup_vs_torch_fp32_at_32"] = round(ours["docs_per_s"] / plain["docs_per_s"], 3)
    inf = level("infinity", 32)
    if ours and inf and inf["docs_per_s"]:
        out["ratio_vs_infinity_at_32"] = round(ours["docs_per_s"] / inf["docs_per_s"], 3)
    return out


def table(report: dict) -> str:
    lines = [
        "| concurrency | server | req/s | docs/s | p50 ms | p95 ms | p99 ms | errors | pairs/batch |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in report["settings"]["levels"]:
        for name, entry in report["peers"].items():
            for r in entry.get("levels", []):
                if r["concurrency"] == c:
                    lines.append(
                        f"| {c} | {name} | {r['requests_per_s']} | {r['docs_per_s']} | {r['p50_ms']} | "
                        f"{r['p95_ms']} | {r['p99_ms']} | {r['errors']} | {r.get('mean_batch_pairs', '')} |"
                    )
    for name, entry in report["peers"].items():
        if entry["status"] != "ok":
            lines.append(f"\n{name}: {entry['status']}: {entry['reason']}")
    return "\n".join(lines)


def write(report: dict, path: str) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default=str(Path("~/.cache/routerank/models/ce-pooled").expanduser()),
        help="cross-encoder folder (the same one for every server)",
    )
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--queries", type=int, default=100, help="test queries in the request pool")
    parser.add_argument("--depth", type=int, default=20, help="BM25 documents per request")
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="tokens per (query, document) pair (default: the tokenizer's model_max_length, as infinity)",
    )
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE for the ce reranker (routerank)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the request quota of every level")
    parser.add_argument("--seconds", type=float, default=120.0, help="start no request after this long, per level")
    parser.add_argument("--peers", default="routerank,single,infinity")
    parser.add_argument("--infinity-bin", default=None, help="infinity_emb executable (its own venv)")
    parser.add_argument("--infinity-engine", default="torch", help="infinity's engine: torch or optimum (ONNX)")
    parser.add_argument(
        "--infinity-model",
        default=None,
        help="the folder infinity loads (default --model); its optimum engine needs the model's ONNX graph in it",
    )
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--out", default="reports/bench-serve.json")
    parser.add_argument("--note", default="", help="how the machine was, e.g. 'idle 2-core CPU'")
    args = parser.parse_args()
    if not Path(args.model, "config.json").is_file():
        sys.exit(f"bench/serve.py: {args.model} is not a model folder (fix: pass --model /path/to/ce-folder)")
    args.peers = args.peers.split(",")
    if args.max_length is None:
        args.max_length = window(args.model)
    levels = [int(x) for x in args.levels.split(",")]
    per_level = {c: max(c, int(round(max(16, 2 * c) * args.scale))) for c in levels}

    work = workload(args.dataset, args.queries, args.depth)
    report = {
        "model": args.model,
        "settings": {
            "dataset": args.dataset,
            "queries": len(work),
            "depth": args.depth,
            "max_length": args.max_length,
            "routerank_options": parse_options(args.option),
            "infinity_engine": args.infinity_engine,
            "infinity_model": args.infinity_model or args.model,
            "levels": levels,
            "requests_per_level": per_level,
            "seconds_per_level": args.seconds,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_at_start": os.getloadavg()},
        "note": args.note,
        "padding": padding(args.model, work, args.max_length),
        "peers": {},
        "criteria": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        peers, skipped = make_peers(args, Path(tmp))
        report["peers"].update(skipped)
        for peer in peers:
            print(f"{peer.name}: starting", file=sys.stderr)
            report["peers"][peer.name] = run_peer(peer, work, levels, per_level, args.seconds, args.ready_timeout)
            report["criteria"] = criteria(report["peers"])
            write(report, args.out)  # after every peer, so an interrupted run keeps what it measured
    write(report, args.out)
    print(json.dumps(report, indent=2))
    print(table(report))
    print(json.dumps(report["criteria"]))


if __name__ == "__main__":
    main()
