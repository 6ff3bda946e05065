#!/usr/bin/env python3
"""The engine path's throughput per core against ONNX Runtime in-process,
measured side by side at the same moment, so that the machine's speed
drifting between runs (a shared VM's does, by a third) cancels out.

Each run puts one engine replica (max_batch_size B, predict_concurrency 2B)
and the load generator driving it (2B connections) on one CPU, optionally
behind the gateway (`--gateway`: gateway, the replica it starts and the load
generator all on that CPU), and one in-process ONNX Runtime worker
(benches/ort_inprocess.py, batches of B) on the other CPU, both with one
intra-op thread; then the two CPUs swap. The ratio of their sentences/s is
what the engine path keeps of a core's in-process throughput, with its
HTTP, JSON, queueing, load generator (and gateway) all paid for on the same
core. Everything is pinned, so this leaves out the scheduler's placement
of unpinned replicas, which benches/engine_batching.py measures (with and
without --pin).

    benches/engine_per_core.py --no-build --bin-dir /tmp/bin        # 4 rounds, B = 1, 8, 32
    benches/engine_per_core.py --gateway --sizes 8 --rounds 2

Needs two CPUs, scripts/fetch-models.sh and scripts/python-env.sh.
"""

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models/all-minilm-l6-v2-int8/model.onnx"
RUNTIME = ROOT / "models/onnxruntime/libonnxruntime.so"
PYTHON = ROOT / ".venv/bin/python"
TEXT = "The quick brown fox jumps over the lazy dog"
KEY, ADMIN_KEY = "igw_bench_key", "igw_bench_admin"
# Seconds: the in-process worker loads for ~2.5 s, warms up for 1, measures
# for MEASURE; the engine's counters are read over [START, START + WINDOW],
# inside that.
MEASURE, START, WINDOW = 7.0, 4.5, 6.0


def get(url, headers=None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
        return r.read().decode()


def served(addr):
    text = get(f"http://{addr}/metrics")
    m = re.search(r'^igw_engine_requests_total\{status="200"\} (\S+)', text, re.M)
    return float(m.group(1)) if m else 0.0


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_line(path, proc, needle, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in Path(path).read_text(errors="replace").splitlines():
            if needle in line:
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit(f"{proc.args}: no {needle!r}:\n{Path(path).read_text()[-2000:]}")


def start_engine(args, batch, cpu, tmp):
    out = tmp / "engine.out"
    with open(out, "w") as f:
        proc = subprocess.Popen(["taskset", "-c", str(cpu), str(args.engine), "--listen", "127.0.0.1:0",
                                 "--backend", "onnx", "--model", str(MODEL), "--onnxruntime", str(RUNTIME),
                                 "--threads", "1", "--predict-concurrency", str(2 * batch), "--queue-size", "256",
                                 "--max-batch-size", str(batch)], stdout=f, stderr=subprocess.DEVNULL)
    addr = json.loads(wait_line(out, proc, '"ready"'))["addr"]
    return proc, addr, [proc.pid], f"http://{addr}/predict", []


def start_gateway(args, batch, cpu, tmp):
    digest = lambda k: hashlib.sha256(k.encode()).hexdigest()  # noqa: E731
    conf = tmp / "gateway.toml"
    conf.write_text(f"""
[listeners]
predict = "127.0.0.1:0"
admin = "127.0.0.1:0"
[server]
threads = 1
[node]
engine = "{args.engine}"
[[api_keys]]
name = "bench"
sha256 = "{digest(KEY)}"
scope = "all"
[[api_keys]]
name = "admin"
sha256 = "{digest(ADMIN_KEY)}"
scope = "admin"
[[models]]
id = "m"
[[models.deployments]]
id = "d"
instance_type = "1x1"
predict_concurrency = {2 * batch}
autoscaling = {{ min_replica = 1, max_replica = 1, concurrency_target = {2 * batch} }}
[models.deployments.engine]
backend = "onnx"
model = "{MODEL}"
onnxruntime = "{RUNTIME}"
threads = 1
max_batch_size = {batch}
[[models.environments]]
name = "production"
deployment = "d"
""")
    out = tmp / "gateway.out"
    with open(out, "w") as f:
        # The replicas it starts inherit its CPU.
        proc = subprocess.Popen(["taskset", "-c", str(cpu), str(args.bins / "gateway"), "serve", "--config", str(conf)],
                                stdout=f, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    ready = json.loads(wait_line(out, proc, '"event":"ready"'))
    deadline = time.time() + 60
    while True:
        d = json.loads(get(f"http://{ready['admin']}/v1/models/m/deployments/d",
                           {"Authorization": f"Api-Key {ADMIN_KEY}"}))
        if d["replicas"].get("ready") == 1:
            break
        if time.time() > deadline:
            sys.exit(f"the replica never became ready: {d['replicas']}")
        time.sleep(0.1)
    addr = d["replicas"]["instances"][0]["address"]
    pid = json.loads(get(f"http://{addr}/info"))["pid"]
    return (proc, addr, [proc.pid, pid], f"http://{ready['predict']}/models/m/production/predict",
            ["-H", f"Authorization: Api-Key {KEY}"])


def one(args, batch, engine_cpu, other_cpu):
    body = json.dumps({"text": TEXT})
    with tempfile.TemporaryDirectory() as tmp:
        start = start_gateway if args.gateway else start_engine
        proc, addr, pids, url, headers = start(args, batch, engine_cpu, Path(tmp))
        try:
            inproc = subprocess.Popen(["taskset", "-c", str(other_cpu), str(args.python),
                                       str(ROOT / "benches/ort_inprocess.py"), "--processes", "1", "--pin",
                                       "--batch", str(batch), "--duration", str(MEASURE), "--warmup", "1",
                                       "--text", TEXT], stdout=subprocess.PIPE, text=True)
            load = subprocess.Popen(["taskset", "-c", str(engine_cpu), str(args.bins / "loadtest"), "--url", url,
                                     "--body", body, "-c", str(2 * batch), "-d", str(START + WINDOW + 1.5),
                                     "--warmup", "0", *headers], stdout=subprocess.DEVNULL)
            time.sleep(START)
            n0, c0, t0 = served(addr), sum(cpu_seconds(p) for p in pids), time.time()
            time.sleep(WINDOW)
            n1, c1, t1 = served(addr), sum(cpu_seconds(p) for p in pids), time.time()
            ref = json.loads(inproc.communicate()[0])
            load.wait()
        finally:
            proc.terminate()
            proc.wait()
    return {"engine_rps": (n1 - n0) / (t1 - t0), "engine_cpu_us": 1e6 * (c1 - c0) / max(n1 - n0, 1),
            "inprocess_rps": ref["sentences_per_s"], "inprocess_cpu_us": ref["cpu_us_per_sentence"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4, help="runs per batch size; the CPUs swap every run (default 4)")
    ap.add_argument("--sizes", default="1,8,32")
    ap.add_argument("--gateway", action="store_true", help="through the gateway (on the engine's CPU too)")
    ap.add_argument("--bin-dir", type=Path, help="binaries (default $ENGINE_BENCH_BIN, else target/release)")
    ap.add_argument("--engine", type=Path, help="engine binary (default: the one in --bin-dir)")
    ap.add_argument("--python", type=Path, default=PYTHON)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.python.exists():
        sys.exit(f"{args.python} is missing: run scripts/python-env.sh first")
    if not MODEL.exists():
        sys.exit("run scripts/fetch-models.sh first")
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two CPUs")
    bin_dir = args.bin_dir or os.environ.get("ENGINE_BENCH_BIN")
    args.bins = Path(bin_dir) if bin_dir else ROOT / "target/release"
    if not bin_dir and not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "engine", "-p", "gateway", "-p", "loadtest"],
                       cwd=ROOT, check=True)
    args.engine = (args.engine or args.bins / "engine").resolve()
    cpus = sorted(os.sched_getaffinity(0))[:2]
    sizes = [int(s) for s in args.sizes.split(",")]
    what = "gateway + engine" if args.gateway else "engine"
    ratios = {b: [] for b in sizes}
    for r in range(args.rounds):
        for b in sizes:
            mine, other = cpus if r % 2 == 0 else cpus[::-1]
            x = one(args, b, mine, other)
            ratios[b].append(x["engine_rps"] / x["inprocess_rps"])
            print(f"round {r + 1} batch {b:>2}: {what} on CPU {mine} {x['engine_rps']:6.1f}/s "
                  f"({x['engine_cpu_us']:,.0f} us CPU/sentence, load generator excluded) | in-process on CPU {other} "
                  f"{x['inprocess_rps']:6.1f}/s ({x['inprocess_cpu_us']:,.0f} us) | {ratios[b][-1]:.3f}",
                  file=sys.stderr, flush=True)
    print(f"{what} per core / in-process per core, same moment, median of {args.rounds} (CPUs swapped each run):")
    for b in sizes:
        print(f"  batch {b:>2}: {statistics.median(ratios[b]):.3f}  ({', '.join(f'{x:.3f}' for x in ratios[b])})")


if __name__ == "__main__":
    main()
