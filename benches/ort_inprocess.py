#!/usr/bin/env python3
"""ONNX Runtime in-process: the ceiling the engine is measured against.

`--processes` processes (one per engine replica), each with its own ONNX
Runtime session of `--threads` intra-op threads, run batches of `--batch`
copies of one sentence back to back: tokenise the batch (padded to its
longest input, as the engine does), run the model, mean-pool over the
attention mask and L2-normalise. No HTTP, no JSON, no queue. All processes
start measuring together; the summed throughput and the latency of one
batch are printed as one JSON object on stdout, with each process's CPU
time and where it went (tokenising, the model run, pooling).

    .venv/bin/python benches/ort_inprocess.py --processes 2 --threads 1 --batch 8 --duration 5

benches/engine_batching.py runs it as its `inprocess` mode. Tokenizers'
own thread pool is off (TOKENIZERS_PARALLELISM=false) unless
--tokenizers-parallelism is given: with it on, a process would use more
than its `--threads` cores.
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models/all-minilm-l6-v2-int8/model.onnx"
DEFAULT_TEXT = "A canary rollout shifts traffic to the new deployment in steps."
MAX_TOKENS = 256


def worker(args, index, start_at, results):
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(args.tokenizer or str(Path(args.model).with_name("tokenizer.json")))
    tokenizer.enable_padding()  # to the longest input of the batch, as the engine
    tokenizer.enable_truncation(MAX_TOKENS)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if args.no_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    token_types = "token_type_ids" in {i.name for i in session.get_inputs()}
    texts = [args.text] * args.batch

    def one_batch(times):
        t0 = time.perf_counter()
        encodings = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if token_types:
            feed["token_type_ids"] = np.zeros_like(ids)
        t1 = time.perf_counter()
        hidden = session.run(None, feed)[0]
        t2 = time.perf_counter()
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        t3 = time.perf_counter()
        if times is not None:
            times[0] += t1 - t0
            times[1] += t2 - t1
            times[2] += t3 - t2
        return t3 - t0, int(mask[0].sum())

    for _ in range(3):
        one_batch(None)
    time.sleep(max(0.0, start_at - time.time()))
    warm_end = time.perf_counter() + args.warmup
    while time.perf_counter() < warm_end:
        one_batch(None)
    latencies, times = [], [0.0, 0.0, 0.0]
    busy0 = machine_busy()
    cpu0, t0 = time.process_time(), time.perf_counter()
    end = t0 + args.duration
    tokens = 0
    while time.perf_counter() < end:
        latency, tokens = one_batch(times)
        latencies.append(latency)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    busy = machine_busy() - busy0
    results.put({"machine_busy_s": busy, "batches": len(latencies), "wall_s": wall, "cpu_s": cpu,
                 "latencies_s": latencies, "tokenise_s": times[0], "run_s": times[1], "pool_s": times[2],
                 "tokens": tokens})


def machine_busy():
    """Busy CPU seconds of the whole machine since boot (all cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def percentile(values, q):
    values = sorted(values)
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per process")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--text", default=DEFAULT_TEXT)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--tokenizer")
    ap.add_argument("--tokenizers-parallelism", action="store_true",
                    help="leave tokenizers' own thread pool on (default off)")
    ap.add_argument("--pin", action="store_true", help="process i runs on CPU i only (modulo the CPUs)")
    ap.add_argument("--no-spinning", action="store_true",
                    help="session.intra_op.allow_spinning = 0 (matters only with --threads > 1)")
    args = ap.parse_args()
    if not args.tokenizers_parallelism:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    # Every process loads its model first; they start measuring together.
    start_at = time.time() + 2.0 + 0.5 * args.processes
    procs = [ctx.Process(target=worker, args=(args, i, start_at, results)) for i in range(args.processes)]
    for p in procs:
        p.start()
    runs = [results.get(timeout=120 + args.warmup + args.duration) for _ in procs]
    for p in procs:
        p.join()
    latencies = [x for r in runs for x in r["latencies_s"]]
    sentences = sum(r["batches"] for r in runs) * args.batch
    wall = max(r["wall_s"] for r in runs)
    cpu = sum(r["cpu_s"] for r in runs)
    per_sentence = lambda key: 1e6 * sum(r[key] for r in runs) / max(sentences, 1)  # noqa: E731
    print(json.dumps({
        "processes": args.processes, "threads": args.threads, "batch": args.batch,
        "tokens_per_sentence": runs[0]["tokens"],
        "sentences": sentences, "sentences_per_s": sentences / wall,
        "batch_latency_us": {"p50": 1e6 * percentile(latencies, 0.5), "p99": 1e6 * percentile(latencies, 0.99)},
        "cpu_s": cpu, "machine_busy_s": statistics.median(r["machine_busy_s"] for r in runs),
        "cpu_us_per_sentence": 1e6 * cpu / max(sentences, 1),
        "wall_us_per_sentence": {"tokenise": per_sentence("tokenise_s"), "run": per_sentence("run_s"),
                                 "pool": per_sentence("pool_s")},
    }))


if __name__ == "__main__":
    sys.exit(main())
