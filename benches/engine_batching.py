#!/usr/bin/env python3
"""The engine against ONNX Runtime in-process and against the Python server
a user would run instead, on the quick start's model (all-MiniLM-L6-v2
int8, CPU), at batch sizes 1, 8 and 32, in one run. Every mode serves the
same sentence (11 tokens with [CLS] and [SEP]) one per request, on the same
cores, with `--replicas` (default 2) model instances of `--threads`
(default 1) ONNX Runtime intra-op threads each:

  inprocess  ONNX Runtime in Python, no server: one process per replica,
             each tokenising, running and pooling batches of B sentences
             back to back (benches/ort_inprocess.py). The ceiling. Its
             latency is one batch's.
  direct     the engine replicas themselves (max_batch_size B), each
             loaded by its own loadtest with half the connections; the
             replicas' figures summed (req/s) or combined (p50: mean of the
             two, p99: the larger).
  gateway    the gateway with one local deployment of `--replicas` engine
             replicas it starts itself (min = max replicas; instance_type
             1x1, max_batch_size B, predict_concurrency 2B), one loadtest.
  gateway-qs (only with --modes) the same with predict_concurrency = B, as
             examples/quickstart.toml has it (8 at batch 8): no batch can
             fill while one runs.
  fastapi    benches/fastapi_server.py: FastAPI + uvicorn, `--replicas`
             workers, ONNX Runtime + tokenizers, no batching; its listening
             socket keeps TCP_NODELAY (see that file).
  fastapi-stock (only with --modes) the same as `uvicorn --workers N`
             runs it, which loses TCP_NODELAY on Linux: ~40 ms more per
             request (Kludex/uvicorn#3149).

Nothing is pinned to a CPU unless --pin is given: then engine replica (or
in-process worker) i and all its threads run on CPU i only; the gateway,
the load generators and the FastAPI server stay free (uvicorn's workers
share one listening socket but not its connections: one held 30 of 32
here, so a pinned worker capped the server at one core). Tokenizers' own
thread pool stays out of the Python modes: the in-process workers run with
TOKENIZERS_PARALLELISM=false and the FastAPI server tokenizes one text per
call, on the calling thread.

Connections (closed loop, one sentence per request): 2 x B per replica,
so 4 x B in all with 2 replicas (4, 32 and 128 at B = 1, 8, 32; 32 is the
issue's quick-start measurement): a replica runs one batch of B while the
next B requests wait, so a full batch is ready whenever one ends, without
building a queue that only adds latency. The FastAPI server gets the same
connections as the engine at each B (it does not batch: the B column is
only the load it shares with that row). Rounds are interleaved (the
order of the modes turns each round); the tables report medians.

CPU per sentence is counted for every process of a mode (engines, gateway,
uvicorn workers, the in-process workers, and the load generators) from
/proc and rusage, over the measured window; "other" is the machine's busy
time that none of them used (another build, say): when it is not near 0,
the throughput of that run is not comparable. CPU figures are steadier
than wall-clock ones on a shared machine.

    benches/engine_batching.py                               # 3 rounds x 8 s; builds the release binaries
    benches/engine_batching.py --no-build --bin-dir /tmp/bin # binaries from elsewhere (or $ENGINE_BENCH_BIN)
    benches/engine_batching.py --rounds 1 --duration 2 --sizes 8 --modes direct,gateway
    benches/engine_batching.py --pin                         # each replica / process / worker on a CPU of its own
    benches/engine_batching.py --engine-bin old=/tmp/engine  # adds direct@old and gateway@old: another engine build

Needs scripts/fetch-models.sh (the model) and scripts/python-env.sh (.venv
with onnxruntime, tokenizers, fastapi, uvicorn). Writes
bench-results/engine-batching.{md,json}.
"""

import argparse
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models/all-minilm-l6-v2-int8/model.onnx"
TOKENIZER = ROOT / "models/all-minilm-l6-v2-int8/tokenizer.json"
RUNTIME = ROOT / "models/onnxruntime/libonnxruntime.so"
PYTHON = ROOT / ".venv/bin/python"
TEXT = "The quick brown fox jumps over the lazy dog"
SIZES = (1, 8, 32)
MODES = ("inprocess", "direct", "gateway", "fastapi")
ALL_MODES = (*MODES, "gateway-qs", "fastapi-stock")
KEY = "igw_bench_key"
ADMIN_KEY = "igw_bench_admin"
TICK = os.sysconf("SC_CLK_TCK")

STARTED = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def start(cmd, out, env=None):
    """Starts `cmd` with stdout and stderr to the file `out`; stopped by
    stop() or stop_all()."""
    with open(out, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})
    STARTED.append(proc)
    return proc


def stop(proc):
    """SIGTERM to this process (its own pid), SIGKILL 15 s later."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in STARTED:
        STARTED.remove(proc)


def stop_all():
    for p in list(STARTED):
        stop(p)


def wait_line(path, proc, needle, timeout=60.0):
    """The first line of the file `path` containing `needle`, written by `proc`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in Path(path).read_text(errors="replace").splitlines():
            if needle in line:
                return line
        if proc.poll() is not None:
            sys.exit(f"{proc.args[0]} exited with {proc.returncode}:\n{Path(path).read_text()[-3000:]}")
        time.sleep(0.05)
    sys.exit(f"{proc.args[0]}: no {needle!r} within {timeout:g} s:\n{Path(path).read_text()[-3000:]}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


# --- CPU accounting -------------------------------------------------------


def proc_cpu(pid):
    """utime + stime of a live process (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def descendants(pid):
    """`pid` and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return sorted(set(out))


def pin(pids):
    """Pins process i of `pids` (every thread it has; threads it starts later
    inherit it) to the i-th CPU this script may use, round robin."""
    cpus = sorted(os.sched_getaffinity(0))
    for i, pid in enumerate(pids):
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                os.sched_setaffinity(int(task.name), {cpus[i % len(cpus)]})
            except (ProcessLookupError, FileNotFoundError):
                pass


def machine_busy():
    """Busy CPU seconds of the whole machine since boot (all cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICK


def wait_idle(limit):
    """Waits up to `limit` seconds for a 2-second stretch with the machine
    under 5% busy; whether one came."""
    deadline = time.time() + limit
    while True:
        b0, t0 = machine_busy(), time.time()
        time.sleep(2.0)
        if (machine_busy() - b0) / ((time.time() - t0) * os.cpu_count()) < 0.05:
            return True
        if time.time() > deadline:
            return False


class Window:
    """CPU used by named groups of pids, and by the machine, between
    open() and close()."""

    def __init__(self, groups):
        self.groups = groups  # name -> [pid]

    def open(self):
        self.t0 = time.perf_counter()
        self.busy0 = machine_busy()
        self.cpu0 = {name: sum(proc_cpu(p) for p in pids) for name, pids in self.groups.items()}

    def close(self):
        self.wall = time.perf_counter() - self.t0
        self.busy = machine_busy() - self.busy0
        self.cpu = {name: sum(proc_cpu(p) for p in pids) - self.cpu0[name] for name, pids in self.groups.items()}


# --- load -----------------------------------------------------------------


def loadtest(bins, url, connections, duration, headers=(), body=None, out=None):
    """Starts one closed-loop loadtest without a warm-up phase (the caller
    warms up first, so that CPU and request counts cover the same window)."""
    cmd = [str(bins / "loadtest"), "--url", url, "--body", body, "-c", str(connections), "-d", str(duration),
           "--warmup", "0"]
    for h in headers:
        cmd += ["-H", h]
    if out:
        cmd += ["--json", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def reap(proc):
    """Waits for a loadtest; its CPU seconds (rusage)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"loadtest failed ({proc.returncode}): {proc.stderr.read()}")
    return usage.ru_utime + usage.ru_stime


def engine_metrics(addrs):
    """The engine replicas' batching counters, summed: backend calls, the
    seconds spent in them, inputs run."""
    total = {"batches": 0.0, "inference_s": 0.0, "inputs": 0.0}
    names = {"igw_engine_inference_seconds_count": "batches", "igw_engine_inference_seconds_sum": "inference_s",
             "igw_engine_batch_size_sum": "inputs"}
    for addr in addrs:
        _, text = http("GET", f"http://{addr}/metrics")
        for line in text.decode().splitlines():
            name, _, value = line.partition(" ")
            if name in names:
                total[names[name]] += float(value)
    return total


def drive(bins, targets, duration, warmup, body, groups, headers=(), engines=()):
    """Warm-up load, then the measured load: one loadtest per (url,
    connections) in `targets`, all at once. Returns the combined result,
    with CPU per group over the measured window, and for `engines` (replica
    addresses) their batches: mean size, and the share of the window each
    replica spent in a backend call (its duty)."""
    if warmup > 0:
        warm = [loadtest(bins, url, c, warmup, headers, body) for url, c in targets]
        for p in warm:
            reap(p)
    window = Window(groups)
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"lt{i}.json" for i in range(len(targets))]
        before = engine_metrics(engines)
        window.open()
        procs = [loadtest(bins, url, c, duration, headers, body, out) for (url, c), out in zip(targets, outs)]
        load_cpu = sum(reap(p) for p in procs)
        window.close()
        after = engine_metrics(engines)
        results = [json.loads(o.read_text()) for o in outs]
    failed = sum(r["failed"] for r in results)
    if failed:
        sys.exit(f"{failed} failed requests: {[r['statuses'] for r in results]} {[r['errors'] for r in results]}")
    requests = sum(r["requests"] for r in results)
    cpu = dict(window.cpu, load=load_cpu)
    batching = {}
    if engines:
        d = {k: after[k] - before[k] for k in after}
        batching = {"mean_batch": d["inputs"] / max(d["batches"], 1),
                    "duty": d["inference_s"] / (window.wall * len(engines))}
    return {
        **batching,
        "sentences": requests,
        "rps": requests / duration,
        "p50_ms": statistics.mean(r["latency_us"]["p50"] for r in results) / 1000,
        "p99_ms": max(r["latency_us"]["p99"] for r in results) / 1000,
        "cpu_s": cpu,
        "machine_busy_s": window.busy,
        "wall_s": window.wall,
    }


# --- modes ----------------------------------------------------------------


def engine_cmd(engine, batch, concurrency, threads):
    return [str(engine), "--listen", "127.0.0.1:0", "--backend", "onnx", "--model", str(MODEL),
            "--tokenizer", str(TOKENIZER), "--onnxruntime", str(RUNTIME), "--threads", str(threads),
            "--predict-concurrency", str(concurrency), "--queue-size", "256", "--max-batch-size", str(batch),
            "--max-queue-delay-ms", "2"]


def run_inprocess(args, batch, tmp):
    cmd = [str(args.python), str(ROOT / "benches/ort_inprocess.py"), "--processes", str(args.replicas),
           "--threads", str(args.threads), "--batch", str(batch), "--duration", str(args.duration),
           "--warmup", str(args.warmup), "--text", args.text, "--model", str(MODEL), "--tokenizer", str(TOKENIZER)]
    if args.pin:
        cmd.append("--pin")
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {
        "sentences": r["sentences"],
        "rps": r["sentences_per_s"],
        "p50_ms": r["batch_latency_us"]["p50"] / 1000,
        "p99_ms": r["batch_latency_us"]["p99"] / 1000,
        "cpu_s": {"server": r["cpu_s"]},
        # Read by the first worker over its own measured window.
        "machine_busy_s": r["machine_busy_s"],
        "wall_s": r["sentences"] / r["sentences_per_s"],
        "tokens": r["tokens_per_sentence"],
        "inprocess_split_us": r["wall_us_per_sentence"],
    }


def run_direct(args, batch, tmp, engine):
    per_replica = 2 * batch
    engines = []
    for i in range(args.replicas):
        out = tmp / f"engine{i}.log"
        proc = start(engine_cmd(engine, batch, per_replica, args.threads), out, env=args.engine_env)
        engines.append((proc, out))
    urls = []
    for proc, out in engines:
        ready = json.loads(wait_line(out, proc, '"ready"'))
        urls.append(f"http://{ready['addr']}/predict")
    if args.pin:
        pin([p.pid for p, _ in engines])
    try:
        return drive(args.bins, [(u, per_replica) for u in urls], args.duration, args.warmup, args.body,
                     {"server": [p.pid for p, _ in engines]}, engines=[u.split("/")[2] for u in urls])
    finally:
        for proc, _ in engines:
            stop(proc)


def gateway_config(args, batch, concurrency, engine):
    digest = lambda k: hashlib.sha256(k.encode()).hexdigest()  # noqa: E731
    return f"""
[listeners]
predict = "127.0.0.1:0"
admin = "127.0.0.1:0"

[server]
threads = 1

[node]
engine = "{engine}"

[[api_keys]]
name = "bench"
sha256 = "{digest(KEY)}"
scope = "all"

[[api_keys]]
name = "bench-admin"
sha256 = "{digest(ADMIN_KEY)}"
scope = "admin"

[[models]]
id = "m"

[[models.deployments]]
id = "d"
instance_type = "1x1"
predict_concurrency = {concurrency}
autoscaling = {{ min_replica = {args.replicas}, max_replica = {args.replicas}, concurrency_target = {concurrency} }}
queue = {{ max_length = 1000, timeout_secs = 60 }}

[models.deployments.engine]
backend = "onnx"
model = "{MODEL}"
tokenizer = "{TOKENIZER}"
onnxruntime = "{RUNTIME}"
threads = {args.threads}
max_batch_size = {batch}
max_queue_delay_ms = 2

[[models.environments]]
name = "production"
deployment = "d"
"""


def run_gateway(args, batch, tmp, concurrency, engine):
    conf = tmp / "gateway.toml"
    conf.write_text(gateway_config(args, batch, concurrency, engine))
    out = tmp / "gateway.log"
    proc = start([str(args.bins / "gateway"), "serve", "--config", str(conf)], out,
                 env={"RUST_LOG": "warn", **args.engine_env})
    try:
        ready = json.loads(wait_line(out, proc, '"event":"ready"'))
        admin = f"http://{ready['admin']}/v1/models/m/deployments/d"
        auth = {"Authorization": f"Api-Key {ADMIN_KEY}"}
        deadline = time.time() + 60
        while True:
            _, data = http("GET", admin, headers=auth)
            replicas = json.loads(data)["replicas"]
            if replicas.get("ready") == args.replicas:
                break
            if time.time() > deadline or proc.poll() is not None:
                sys.exit(f"gateway: replicas never ready: {replicas}\n{out.read_text()[-3000:]}")
            time.sleep(0.1)
        pids = []
        for instance in replicas["instances"]:
            _, info = http("GET", f"http://{instance['address']}/info")
            pids.append(json.loads(info)["pid"])
        if args.pin:
            pin(pids)
        url = f"http://{ready['predict']}/models/m/production/predict"
        return drive(args.bins, [(url, 2 * batch * args.replicas)], args.duration, args.warmup, args.body,
                     {"server": pids, "gateway": [proc.pid]}, headers=[f"Authorization: Api-Key {KEY}"],
                     engines=[i["address"] for i in replicas["instances"]])
    finally:
        stop(proc)


def run_fastapi(args, batch, tmp, stock=False):
    port = free_port()
    out = tmp / "fastapi.log"
    proc = start([str(args.python), str(ROOT / "benches/fastapi_server.py"), "--port", str(port),
                  "--workers", str(args.replicas), "--threads", str(args.threads), "--model", str(MODEL),
                  "--tokenizer", str(TOKENIZER), *(["--stock"] if stock else [])], out)
    try:
        url = f"http://127.0.0.1:{port}/predict"
        deadline, answered = time.time() + 60, 0
        # Every worker loads the model: wait until a run of calls all pass.
        while answered < 4 * args.replicas:
            if proc.poll() is not None or time.time() > deadline:
                sys.exit(f"fastapi server did not start:\n{out.read_text()[-3000:]}")
            try:
                http("POST", url, args.body, {"Content-Type": "application/json"})
                answered += 1
            except OSError:
                answered = 0
                time.sleep(0.2)
        time.sleep(1.0)
        pids = descendants(proc.pid)
        return drive(args.bins, [(url, 2 * batch * args.replicas)], args.duration, args.warmup, args.body,
                     {"server": pids}, headers=["Content-Type: application/json"])
    finally:
        stop(proc)


def run(args, mode, batch):
    kind, _, name = mode.partition("@")
    engine = args.engine_bins[name] if name else args.bins / "engine"
    with tempfile.TemporaryDirectory(prefix="engine-batching-") as tmp:
        tmp = Path(tmp)
        if kind == "inprocess":
            return run_inprocess(args, batch, tmp)
        if kind == "direct":
            return run_direct(args, batch, tmp, engine)
        if kind == "gateway":
            return run_gateway(args, batch, tmp, 2 * batch, engine)
        if kind == "gateway-qs":
            return run_gateway(args, batch, tmp, batch, engine)
        if kind == "fastapi":
            return run_fastapi(args, batch, tmp)
        if kind == "fastapi-stock":
            return run_fastapi(args, batch, tmp, stock=True)
        raise ValueError(mode)


# --- report ---------------------------------------------------------------


def connections(mode, batch, replicas):
    return None if mode == "inprocess" else 2 * batch * replicas


def summarise(args, runs):
    med = statistics.median
    table = []
    for b in args.sizes:
        base = runs.get(("inprocess", b))
        for mode in args.modes:
            rs = runs[(mode, b)]
            if not rs:
                continue
            rps = med(r["rps"] for r in rs)
            cpu = {}
            for k in sorted({k for r in rs for k in r["cpu_s"]}):
                cpu[k] = med(1e6 * r["cpu_s"].get(k, 0.0) / max(r["sentences"], 1) for r in rs)
            row = {
                "mode": mode, "batch": b, "connections": connections(mode, b, args.replicas), "rps": rps,
                # Per round, against the in-process run of the same round
                # (minutes apart at most: the machine's speed drifts).
                "vs_inprocess": med(r["rps"] / i["rps"] for r, i in zip(rs, base)) if base else None,
                "p50_ms": med(r["p50_ms"] for r in rs), "p99_ms": med(r["p99_ms"] for r in rs),
                "cpu_us_per_sentence": cpu, "cpu_us_per_sentence_total": sum(cpu.values()),
                "rounds": len(rs),
            }
            row["other_cpu_cores"] = med((r["machine_busy_s"] - sum(r["cpu_s"].values())) / r["wall_s"] for r in rs)
            row["machine_busy_cores"] = med(r["machine_busy_s"] / r["wall_s"] for r in rs)
            for k in ("mean_batch", "duty"):
                if all(k in r for r in rs):
                    row[k] = med(r[k] for r in rs)
            if mode == "inprocess":
                row["inprocess_split_us"] = {k: med(r["inprocess_split_us"][k] for r in rs)
                                             for k in rs[0]["inprocess_split_us"]}
                row["tokens"] = rs[0]["tokens"]
            table.append(row)
    return table


def markdown(args, table, started):
    tokens = next((r["tokens"] for r in table if "tokens" in r), "?")
    lines = [
        f"engine vs ONNX Runtime in-process vs FastAPI, {os.cpu_count()} CPUs, {args.replicas} replicas x "
        f"{args.threads} intra-op thread(s){', each pinned to a CPU' if args.pin else ''}, "
        f"one {tokens}-token sentence per request, "
        f"{args.rounds} rounds x {args.duration:g} s, medians ({started})",
        "",
        "| batch | mode | connections | sentences/s | vs in-process | p50 ms | p99 ms "
        "| CPU us/sentence: server | gateway | load generator | total | machine busy | other load "
        "| mean batch | replica duty |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in table:
        cpu = r["cpu_us_per_sentence"]
        fmt = lambda k: f"{cpu[k]:,.0f}" if k in cpu else ""  # noqa: E731
        vs = f"{r['vs_inprocess']:.2f}x" if r["vs_inprocess"] is not None else ""
        batch = f"{r['mean_batch']:.1f}" if "mean_batch" in r else ""
        duty = f"{r['duty']:.2f}" if "duty" in r else ""
        lines.append(
            f"| {r['batch']} | {r['mode']} | {r['connections'] or ''} | {r['rps']:,.0f} | {vs} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {fmt('server')} | {fmt('gateway')} | {fmt('load')} | "
            f"{r['cpu_us_per_sentence_total']:,.0f} | {r['machine_busy_cores']:.2f} | {r['other_cpu_cores']:.2f} | "
            f"{batch} | {duty} |")
    lines += [
        "",
        "in-process: latency is one batch's (tokenise, run, pool); server CPU is the worker processes'.",
        "vs in-process: the median over rounds of sentences/s against the in-process run of the same round.",
        "direct: one loadtest per replica; p50 is the mean of theirs, p99 the larger.",
        "machine busy: cores in use over the window (of 2); other load: busy time no process of the mode used "
        "(0 = a quiet machine).",
        "mean batch, replica duty: from the replicas' /metrics; duty is the share of the window a replica spent "
        "in a backend call (at batch 1, without the batching loop, calls overlap and it can exceed 1).",
    ]
    split = [r for r in table if "inprocess_split_us" in r]
    if split:
        lines += ["", "in-process wall time per sentence (per process): "
                  + "; ".join(f"batch {r['batch']}: " + ", ".join(f"{k} {v:,.0f} us" for k, v in
                                                                  r["inprocess_split_us"].items()) for r in split)]
    return "\n".join(lines) + "\n"


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8.0, help="measured seconds per run (default 8)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each measured run (default 1)")
    ap.add_argument("--threads", type=int, default=1,
                    help="ONNX Runtime intra-op threads per replica / process / worker (default 1; 0 = one per core)")
    ap.add_argument("--replicas", type=int, default=2,
                    help="engine replicas = in-process processes = uvicorn workers (default 2)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="batch sizes (default 1,8,32)")
    ap.add_argument("--modes", default=",".join(MODES),
                    help=f"any of {','.join(ALL_MODES)} (default {','.join(MODES)})")
    ap.add_argument("--text", default=TEXT, help=f"the sentence every request sends (default {TEXT!r})")
    ap.add_argument("--bin-dir", type=Path,
                    help="engine, gateway and loadtest binaries (default $ENGINE_BENCH_BIN, else target/release, "
                         "built first unless --no-build)")
    ap.add_argument("--engine-bin", action="append", default=[], metavar="NAME=PATH",
                    help="another engine build to measure beside the default one: adds the modes direct@NAME and "
                         "gateway@NAME (also usable in --modes: gateway-qs@NAME)")
    ap.add_argument("--python", type=Path, default=PYTHON, help="Python with onnxruntime etc. (default .venv)")
    ap.add_argument("--engine-env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment for the engines (direct, gateway), e.g. TOKENIZERS_PARALLELISM=false")
    ap.add_argument("--pin", action="store_true",
                    help="pin engine replica / in-process worker i (all its threads) to CPU i; the gateway, the "
                         "load generators and the FastAPI server are not pinned")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="before each run, wait up to SECONDS for the machine to go idle (other work on it skews "
                         "throughput; the tables show it as other load either way)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results", help="directory for the results")
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.engine_bins = {}
    for v in args.engine_bin:
        name, _, path = v.partition("=")
        if not name or not path or "@" in name or not Path(path).is_file():
            ap.error(f"--engine-bin {v!r} is not NAME=PATH of an engine binary")
        args.engine_bins[name] = Path(path).resolve()
    args.modes = [m for m in args.modes.split(",") if m]
    for name in args.engine_bins:
        args.modes += [f"{kind}@{name}" for kind in ("direct", "gateway")
                       if kind in args.modes and f"{kind}@{name}" not in args.modes]
    known = set(ALL_MODES) | {f"{k}@{n}" for k in ("direct", "gateway", "gateway-qs") for n in args.engine_bins}
    if unknown := set(args.modes) - known:
        ap.error(f"unknown modes {sorted(unknown)}")
    args.engine_env = dict(e.split("=", 1) for e in args.engine_env)
    args.body = json.dumps({"text": args.text})
    if not MODEL.exists() or not RUNTIME.exists():
        sys.exit("run scripts/fetch-models.sh first")
    if any(m.startswith(("inprocess", "fastapi")) for m in args.modes) and not args.python.exists():
        sys.exit(f"{args.python} is missing: run scripts/python-env.sh first")
    bin_dir = args.bin_dir or os.environ.get("ENGINE_BENCH_BIN")
    args.bins = Path(bin_dir) if bin_dir else ROOT / "target/release"
    if not bin_dir and not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-p", "engine", "-p", "gateway", "-p", "loadtest"],
                       cwd=ROOT, check=True)
    for b in ("engine", "gateway", "loadtest"):
        if not (args.bins / b).exists():
            sys.exit(f"{args.bins / b} is missing")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    runs = {(m, b): [] for m in args.modes for b in args.sizes}
    # SIGTERM too stops what this run started (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    try:
        for r in range(args.rounds):
            order = args.modes[r % len(args.modes):] + args.modes[:r % len(args.modes)]
            for b in args.sizes:
                for mode in order:
                    if args.wait_idle > 0 and not wait_idle(args.wait_idle):
                        log(f"the machine is still busy after {args.wait_idle:g} s: measuring anyway")
                    res = run(args, mode, b)
                    runs[(mode, b)].append(res)
                    cpu = " ".join(f"{k} {1e6 * v / max(res['sentences'], 1):,.0f}" for k, v in res["cpu_s"].items())
                    other = (f"  busy {res['machine_busy_s'] / res['wall_s']:.2f} other "
                             f"{(res['machine_busy_s'] - sum(res['cpu_s'].values())) / res['wall_s']:.2f} cores")
                    if "duty" in res:
                        other += f"  batch {res['mean_batch']:.1f} duty {res['duty']:.2f}"
                    log(f"round {r + 1} batch {b:>2} {mode:<13} {res['rps']:7.0f}/s  p50 {res['p50_ms']:6.1f} ms  "
                        f"p99 {res['p99_ms']:6.1f} ms  CPU us/sentence: {cpu}{other}")
    finally:
        stop_all()
    table = summarise(args, runs)
    text = markdown(args, table, started)
    args.out.mkdir(exist_ok=True)
    (args.out / "engine-batching.md").write_text(text)
    settings = {"started": started, "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                "threads": args.threads, "replicas": args.replicas, "sizes": args.sizes, "modes": args.modes,
                "text": args.text, "engine_env": args.engine_env, "pin": args.pin, "wait_idle_s": args.wait_idle,
                "cpus": os.cpu_count(),
                "binaries": {b: {"path": str(args.bins / b), "sha256_16": sha(args.bins / b)}
                             for b in ("engine", "gateway", "loadtest")}
                | {f"engine@{n}": {"path": str(p), "sha256_16": sha(p)} for n, p in args.engine_bins.items()}}
    raw = [{"mode": m, "batch": b, "round": i + 1, **res} for (m, b), rs in runs.items() for i, res in enumerate(rs)]
    (args.out / "engine-batching.json").write_text(json.dumps({"settings": settings, "results": table, "runs": raw},
                                                              indent=2))
    print(text)


if __name__ == "__main__":
    main()
