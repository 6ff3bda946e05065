#!/usr/bin/env python3
"""Dynamic batching on the real model: throughput and latency of one engine
replica (all-MiniLM-L6-v2 int8 on ONNX Runtime, CPU) at max_batch_size 1, 4,
16 and 32, measured in one run with the closed-loop load generator.

For batch size B the replica runs with predict_concurrency = 2B (one batch
runs while the next fills) and the load generator keeps 2B connections busy
(4 for B = 1), each sending one short sentence per request. Rounds are
interleaved; the table reports medians.

    benches/engine_batching.py                     # 3 rounds x 8 s
    benches/engine_batching.py --rounds 1 --duration 2

Needs scripts/fetch-models.sh to have run. Writes bench-results/engine-batching.{md,json}.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models/all-minilm-l6-v2-int8/model.onnx"
RUNTIME = ROOT / "models/onnxruntime/libonnxruntime.so"
BODY = '{"text": "A canary rollout shifts traffic to the new deployment in steps."}'
SIZES = (1, 4, 16, 32)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_engine(batch, threads):
    port = free_port()
    concurrency = max(2 * batch, 1)
    cmd = [str(ROOT / "target/release/engine"), "--listen", f"127.0.0.1:{port}",
           "--backend", "onnx", "--model", str(MODEL), "--onnxruntime", str(RUNTIME),
           "--threads", str(threads), "--predict-concurrency", str(concurrency),
           "--queue-size", "256", "--max-batch-size", str(batch), "--max-queue-delay-ms", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if '"ready"' not in line:
        proc.kill()
        sys.exit(f"engine did not start: {cmd}")
    return proc, port


def measure(batch, duration, threads):
    proc, port = start_engine(batch, threads)
    try:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            connections = 4 if batch == 1 else 2 * batch
            subprocess.run([str(ROOT / "target/release/loadtest"), "--url", f"http://127.0.0.1:{port}/predict",
                            "--body", BODY, "-c", str(connections), "-d", str(duration), "--warmup", "1",
                            "--json", out.name], check=True, stdout=subprocess.DEVNULL)
            result = json.load(open(out.name))
    finally:
        proc.terminate()
        proc.wait()
    if result["failed"]:
        sys.exit(f"batch {batch}: {result['failed']} failed requests: {result['statuses']}")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per inference (0 = cores)")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not MODEL.exists():
        sys.exit("run scripts/fetch-models.sh first")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "engine", "-p", "loadtest"], cwd=ROOT, check=True)
    runs = {b: [] for b in SIZES}
    for r in range(args.rounds):
        for b in SIZES:
            res = measure(b, args.duration, args.threads)
            runs[b].append(res)
            print(f"round {r + 1} batch {b:>2}: {res['requests_per_s']:8.1f} req/s  "
                  f"p50 {res['latency_us']['p50'] / 1000:6.1f} ms  p99 {res['latency_us']['p99'] / 1000:6.1f} ms",
                  file=sys.stderr)
    base = statistics.median(x["requests_per_s"] for x in runs[1])
    lines = [f"engine batching, {os.cpu_count()} CPUs, {args.rounds} rounds x {args.duration:g} s, medians",
             "", "| max_batch_size | connections | req/s | vs batch 1 | p50 ms | p99 ms |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    table = []
    for b in SIZES:
        rps = statistics.median(x["requests_per_s"] for x in runs[b])
        p50 = statistics.median(x["latency_us"]["p50"] for x in runs[b]) / 1000
        p99 = statistics.median(x["latency_us"]["p99"] for x in runs[b]) / 1000
        conns = 4 if b == 1 else 2 * b
        table.append({"max_batch_size": b, "connections": conns, "rps": rps, "p50_ms": p50, "p99_ms": p99})
        lines.append(f"| {b} | {conns} | {rps:.0f} | {rps / base:.2f}x | {p50:.1f} | {p99:.1f} |")
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "engine-batching.md").write_text("\n".join(lines) + "\n")
    (out / "engine-batching.json").write_text(json.dumps({"rounds": args.rounds, "duration_s": args.duration,
                                                           "results": table}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
