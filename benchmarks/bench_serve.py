"""How well does `t3unlearn serve` serve? Load on localhost (not a test; bounded in requests and time).

Starts `t3unlearn serve` on a free 127.0.0.1 port over a world model with T3 heads trained here
(cached under $T3UNLEARN_HOME/bench-serve), checks each model once with the official `openai` client, then
loads it with chat completions from a light asyncio HTTP/1.1 client (keep-alive connections; the openai
client's own CPU time per request would make the benchmark measure the client on two cores), greedy,
--max-tokens new tokens each, questions of the world's forget and retain sets:

(a) --solo requests one at a time (concurrency 1);
(b) --requests requests at --concurrency against one head: p50/p95 latency, requests/s, generated
    tokens/s, failures (target 0), and throughput (c) / (1) (target >= 3x);
(c) the same with requests spread over 4 heads (target: within 20% of (b)'s throughput);
(d) the resident memory (RSS) that 20 more heads add to the server, added with POST /v1/heads from
    20 directories (copies of the 4 heads), against the size of their head.safetensors files
    (target <= 1.2x: no per-head copy of the base).

Access control is on, as in a deployment (--no-auth serves without an API key, to compare): the server
gets a fresh API key and admin key through T3UNLEARN_API_KEY / T3UNLEARN_ADMIN_KEY, every request sends
``Authorization: Bearer KEY``, the heads of (d) are added with the admin key. At the end the server's
own count of answered requests by status (``/metrics``) is printed next to the client's.

    python benchmarks/bench_serve.py                          # world-tiny:full, 1000 requests at 16
    python benchmarks/bench_serve.py --model world:full       # the default world (trains ~6 min the first time)

Timings on a shared machine are noisy: the three load phases run interleaved in --rounds rounds on the
same server, so a change in the machine's load hits all of them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SPLITS = [("forget10", "retain90", 0), ("forget10", "retain90", 1), ("forget05", "retain95", 0), ("forget01", "retain99", 0)]


def _benchmark(model_spec: str):
    """The benchmark a model spec names (``world-tiny:full`` -> the tiny world): its questions and data."""
    from t3unlearn.benchmarks import parse_spec

    parsed = parse_spec(model_spec)
    if parsed is None:
        raise SystemExit(f"--model must name a benchmark's model (world:full, world-tiny:full, ...), not {model_spec!r}")
    return parsed[0]


def _heads(model_spec: str, out: Path) -> tuple[str, list[Path]]:
    """Four T3 heads over the model (trained once, kept under ``out``) and the model's directory."""
    from t3unlearn.benchmarks import resolve_model

    bench = _benchmark(model_spec)
    base = resolve_model(model_spec, log=print)
    dirs = [out / f"{forget}-seed{seed}" for forget, _, seed in SPLITS]
    if all((d / "head.safetensors").is_file() for d in dirs):
        return base, dirs
    import torch

    from t3unlearn.lm import load_model, load_tokenizer
    from t3unlearn.t3 import unlearn

    torch.set_num_threads(1)
    model, tok = load_model(base, device="cpu"), load_tokenizer(base)
    for (forget, retain, seed), d in zip(SPLITS, dirs):
        t3, _ = unlearn(model, tok, bench.qa(forget), bench.qa(retain), seed=seed)
        t3.save_pretrained(d)
    return base, dirs


def _questions(model_spec: str) -> list[str]:
    bench = _benchmark(model_spec)
    return list(bench.qa("forget10")["question"]) + list(bench.qa("retain90")["question"])[:200]


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _auth(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _post(url: str, body: dict | None = None, method: str = "POST", key: str | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data, {"Content-Type": "application/json", **_auth(key)}, method=method)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


class _Connection:
    """One keep-alive HTTP/1.1 connection to the server: a load generator light enough that it measures the
    server, not itself (the openai client is used once per model, by _openai_check)."""

    def __init__(self, host: str, port: int, key: str | None = None):
        self.host, self.port, self.reader, self.writer = host, port, None, None
        self.auth = f"Authorization: Bearer {key}\r\n" if key else ""

    async def post(self, path: str, body: dict) -> tuple[int, dict]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n{self.auth}"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                close = True
        payload = json.loads(await self.reader.readexactly(length)) if length else {}
        if close:
            await self.close()
        return status, payload

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def _load(url: str, models: list[str], questions: list[str], n: int, concurrency: int, max_tokens: int, deadline: float,
                start: int = 0, key: str | None = None):
    """``n`` chat completions at ``concurrency``: (latencies, generated tokens, failures, wall seconds)."""
    host, port = url.split("//")[1].split(":")
    latencies, tokens, failures = [], 0, []
    todo = iter(range(start, start + n))

    async def worker():
        nonlocal tokens
        conn = _Connection(host, int(port), key)
        for i in todo:
            if time.monotonic() > deadline:
                failures.append("time limit")
                continue
            body = {"model": models[i % len(models)], "messages": [{"role": "user", "content": questions[i % len(questions)]}],
                    "max_tokens": max_tokens, "temperature": 0}
            t0 = time.perf_counter()
            try:
                status, reply = await conn.post("/v1/chat/completions", body)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {reply}")
                latencies.append(time.perf_counter() - t0)
                tokens += reply["usage"]["completion_tokens"]
            except Exception as exc:  # noqa: BLE001 - a benchmark counts failures, whatever they are
                failures.append(f"{type(exc).__name__}: {exc}")
                await conn.close()
        await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, tokens, failures, time.perf_counter() - t0


def _openai_check(url: str, models: list[str], question: str, key: str | None) -> None:
    """The same server through the official client: a chat answer from each model (and a 401 without the key)."""
    import openai

    if key:
        try:
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0, timeout=60).models.list()
            raise SystemExit("the server answered without the API key")
        except openai.AuthenticationError:
            pass
    client = openai.OpenAI(base_url=url + "/v1", api_key=key or "unused", max_retries=0, timeout=60)
    for m in models:
        r = client.chat.completions.create(model=m, messages=[{"role": "user", "content": question}], max_tokens=16, temperature=0)
        assert r.choices[0].message.content is not None and r.usage.completion_tokens >= 1


def _report(label: str, lat, tokens, failures, wall) -> dict:
    lat = sorted(lat)
    q = statistics.quantiles(lat, n=20) if len(lat) >= 2 else [lat[0]] * 19
    row = {"requests": len(lat) + len(failures), "failures": len(failures), "p50_s": statistics.median(lat), "p95_s": q[18],
           "req_s": len(lat) / wall, "tok_s": tokens / wall, "wall_s": wall}
    print(f"{label:<28} {row['requests']:>5} req  {row['failures']:>2} failed  p50 {row['p50_s'] * 1000:7.1f} ms  "
          f"p95 {row['p95_s'] * 1000:7.1f} ms  {row['req_s']:7.1f} req/s  {row['tok_s']:8.1f} tok/s  ({wall:.1f} s)", flush=True)
    if failures:
        print("  first failure:", failures[0])
    return row


def _server_counts(url: str) -> dict:
    """The server's own count of answered chat completions, by status (its /metrics, Prometheus text)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "t3unlearn_requests_total" and sample.labels["route"] == "/v1/chat/completions":
                counts[sample.labels["status"]] = counts.get(sample.labels["status"], 0) + int(sample.value)
    return counts


def _memory(url: str, pid: int, work: Path, head_dirs: list[Path], admin: str | None) -> dict:
    """The server's RSS before and after 20 more heads, each from its own directory, added with the admin key."""
    copies = []
    for i in range(20):
        d = work / "copies" / f"m{i:02d}"
        if not (d / "head.safetensors").is_file():
            shutil.copytree(head_dirs[i % len(head_dirs)], d, dirs_exist_ok=True)
        copies.append(d)
    _post(url + "/v1/heads", {"name": "warm", "path": str(copies[0])}, key=admin)  # warm the loading path once
    _post(url + "/v1/heads/warm", method="DELETE", key=admin)
    time.sleep(0.5)
    before = _rss(pid)
    for i, d in enumerate(copies):
        _post(url + "/v1/heads", {"name": f"m{i:02d}", "path": str(d)}, key=admin)
    time.sleep(0.5)
    after = _rss(pid)
    files = sum((d / "head.safetensors").stat().st_size for d in copies)
    return {"heads": len(copies), "rss_before": before, "rss_after": after, "added": after - before, "files": files,
            "ratio": (after - before) / files}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="world-tiny:full", help="world model spec [world-tiny:full]")
    ap.add_argument("--requests", type=int, default=1000, help="requests in each concurrent phase [1000]")
    ap.add_argument("--concurrency", type=int, default=16, help="[16]")
    ap.add_argument("--solo", type=int, default=100, help="requests at concurrency 1 [100]")
    ap.add_argument("--max-tokens", type=int, default=32, help="new tokens per request at most [32]")
    ap.add_argument("--rounds", type=int, default=10, help="the phases run interleaved in this many rounds [10]")
    ap.add_argument("--threads", default="1", help="the server's --threads [1]")
    ap.add_argument("--time-limit", type=float, default=1200, help="seconds for the whole run; requests after it fail [1200]")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--no-auth", action="store_true", help="serve without an API key, to compare [a key, as deployed]")
    args = ap.parse_args(argv)
    key = None if args.no_auth else secrets.token_urlsafe(24)
    admin = secrets.token_urlsafe(24)  # phase (d) adds heads: that needs the admin key, in any case
    deadline = time.monotonic() + args.time_limit

    from t3unlearn.io import cache_home

    from t3unlearn.benchmarks import resolve_model
    from t3unlearn.io import fingerprint

    base = resolve_model(args.model, log=print)
    work = cache_home() / "bench-serve" / f"{args.model.replace(':', '-')}-{fingerprint(base)}"  # heads of this very base
    base, head_dirs = _heads(args.model, work / "heads")
    questions = _questions(args.model)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    names = [f"h{i}" for i in range(len(head_dirs))]
    cmd = [sys.executable, "-m", "t3unlearn", "serve", "--model", base, "--name", args.model, "--port", str(port),
           "--threads", args.threads, "--no-access-log", "--log-level", "warning", "--max-batch", "32"]
    for name, d in zip(names, head_dirs):
        cmd += ["--head", f"{name}={d}"]
    env = dict(os.environ, T3UNLEARN_API_KEY=key or "", T3UNLEARN_ADMIN_KEY=admin or "")
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    rows = {}
    try:
        while True:
            if server.poll() is not None:
                print(server.stdout.read())
                raise SystemExit("the server exited")
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        print(f"server: {args.model} ({base}) with heads {', '.join(names)} on {url}, --threads {args.threads}; "
              f"chat completions, greedy, max_tokens {args.max_tokens}; API key {'off' if key is None else 'on'}")
        _openai_check(url, [args.model] + names, questions[0], key)
        asyncio.run(_load(url, names[:1], questions, 32, 4, args.max_tokens, deadline, key=key))  # warm-up
        # the three conditions in interleaved rounds, so that a change in the machine's load hits all of them
        phases = {"c1": (names[:1], 1, args.solo), "c16": (names[:1], args.concurrency, args.requests),
                  "c16x4": (names, args.concurrency, args.requests)}
        acc = {k: ([], 0, [], 0.0) for k in phases}
        for r in range(args.rounds):
            for phase, (models, conc, total) in phases.items():
                n = total // args.rounds + (r < total % args.rounds)
                lat, tok, fail, wall = asyncio.run(_load(url, models, questions, n, conc, args.max_tokens, deadline,
                                                         start=r * (total // args.rounds), key=key))
                a = acc[phase]
                acc[phase] = (a[0] + lat, a[1] + tok, a[2] + fail, a[3] + wall)
        rows["c1"] = _report("concurrency 1, 1 head", *acc["c1"])
        rows["c16"] = _report(f"concurrency {args.concurrency}, 1 head", *acc["c16"])
        rows["c16x4"] = _report(f"concurrency {args.concurrency}, 4 heads", *acc["c16x4"])
        rows["server"] = _server_counts(url)
        rows["memory"] = _memory(url, server.pid, work, head_dirs, admin)
        models = json.loads(urllib.request.urlopen(urllib.request.Request(url + "/v1/models", headers=_auth(key))).read())["data"]
        assert len(models) == 1 + len(names) + rows["memory"]["heads"]
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()

    c1, c16, c16x4, mem = rows["c1"], rows["c16"], rows["c16x4"], rows["memory"]
    speedup, spread = c16["tok_s"] / c1["tok_s"], c16x4["tok_s"] / c16["tok_s"]
    failures = c16["failures"] + c16x4["failures"] + c1["failures"]
    print()
    print(f"throughput at concurrency {args.concurrency} / concurrency 1 (generated tokens/s): {speedup:.2f}x  "
          f"(target >= 3x: {'met' if speedup >= 3 else 'MISSED'})")
    print(f"4 heads / 1 head at concurrency {args.concurrency} (generated tokens/s): {spread:.2f}  "
          f"(target within 20%: {'met' if abs(spread - 1) <= 0.2 else 'MISSED'})")
    print(f"memory: {mem['heads']} heads added {mem['added'] / 1e6:.2f} MB of RSS ({mem['rss_before'] / 1e6:.1f} -> "
          f"{mem['rss_after'] / 1e6:.1f} MB); their head.safetensors files: {mem['files'] / 1e6:.2f} MB; "
          f"ratio {mem['ratio']:.2f} (target <= 1.2: {'met' if mem['ratio'] <= 1.2 else 'MISSED'})")
    print(f"failed requests: {failures} (target 0); the server's count of chat completions by status: {rows['server']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **rows, "speedup": speedup, "spread": spread}, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
