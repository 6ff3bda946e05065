#!/usr/bin/env python3
"""Scale-from-zero overhead: what the gateway adds to a cold start.

Runs the release gateway with one local deployment at zero replicas
(synthetic engine: a fixed model-loading delay, no inference cost), then per
round: wake it with one request, or with a burst of concurrent requests, and
compare each request's time to first byte (wall clock) with the instant the
replica itself became ready (its `GET /info` `ready_at_unix_us`, same
clock). The difference is the gateway's share: reading the replica's ready
line, one readiness probe, adding it to routing, handing the slot to the
parked request, connecting, proxying, and the synthetic replica's answer.
Between rounds the deployment is deactivated and reactivated, which stops
its replica.

    cargo build --release -p gateway -p engine
    benches/scale_from_zero.py                 # 5 rounds each of 1 and 200
    benches/scale_from_zero.py --rounds 1 --burst 50
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "igw_bench_key"
ADMIN = "igw_bench_admin"
BODY = '{"text": "hello"}'


def digest(key):
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(predict, admin, load_delay_ms, concurrency):
    return f"""
[listeners]
predict = "127.0.0.1:{predict}"
admin = "127.0.0.1:{admin}"
[server]
threads = 1
[node]
engine = "{ROOT / 'target/release/engine'}"
[[api_keys]]
name = "bench"
sha256 = "{digest(KEY)}"
scope = "all"
[[api_keys]]
name = "admin"
sha256 = "{digest(ADMIN)}"
scope = "admin"
[[models]]
id = "m"
[[models.deployments]]
id = "d"
predict_concurrency = {concurrency}
autoscaling = {{ min_replica = 0, max_replica = 1, concurrency_target = {concurrency} }}
[models.deployments.engine]
backend = "synthetic"
load_delay_ms = {load_delay_ms}
[[models.environments]]
name = "production"
deployment = "d"
"""


def call(port, method, path, key, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request(method, path, body=body, headers={"Authorization": f"Api-Key {key}"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def ttfb(port, results, index, start_barrier):
    """One predict call; records the wall-clock time its response head arrived."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start_barrier.wait()
    sent = time.time()
    conn.request("POST", "/models/m/production/predict", body=BODY,
                 headers={"Authorization": f"Api-Key {KEY}"})
    resp = conn.getresponse()  # returns once the status line and headers are in
    first_byte = time.time()
    resp.read()
    conn.close()
    results[index] = (resp.status, sent, first_byte)


def deployment(admin):
    status, data = call(admin, "GET", "/v1/models/m/deployments/d", ADMIN)
    assert status == 200, data
    return json.loads(data)


def wait_for(what, check, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def fire(predict, burst):
    """`burst` concurrent predict calls: (status, sent, first byte) each."""
    results = [None] * burst
    barrier = threading.Barrier(burst)
    threads = [threading.Thread(target=ttfb, args=(predict, results, i, barrier)) for i in range(burst)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r and r[0] == 200 for r in results), results
    return results


def round_trip(predict, admin, burst):
    """(cold, warm): each request's time to first byte past the replica's
    ready time, woken from zero; then the same burst on the ready replica,
    past each request's send time (what serving the burst costs anyway)."""
    d = deployment(admin)
    assert d["status"] == "SCALED_TO_ZERO", d["status"]
    results = fire(predict, burst)
    instances = deployment(admin)["replicas"]["instances"]
    assert len(instances) == 1, instances
    host, port = instances[0]["address"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/info")
    ready_at = json.loads(conn.getresponse().read())["ready_at_unix_us"] / 1e6
    cold = sorted((first_byte - ready_at) * 1000 for _, _, first_byte in results)
    warm = sorted((first_byte - sent) * 1000 for _, sent, first_byte in fire(predict, burst))
    # Back to zero for the next round.
    call(admin, "POST", "/v1/models/m/deployments/d/deactivate", ADMIN)
    wait_for("replica stopped", lambda: not deployment(admin)["replicas"]["instances"])
    call(admin, "POST", "/v1/models/m/deployments/d/activate", ADMIN)
    wait_for("reactivated", lambda: deployment(admin)["status"] == "SCALED_TO_ZERO")
    return cold, warm


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--burst", type=int, default=200)
    p.add_argument("--load-delay-ms", type=int, default=1000)
    args = p.parse_args()
    for binary in ("gateway", "engine"):
        if not (ROOT / "target/release" / binary).exists():
            raise SystemExit("build first: cargo build --release -p gateway -p engine")

    predict, admin = free_port(), free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config(predict, admin, args.load_delay_ms, max(args.burst, 1)))
        path = f.name
    env = dict(os.environ, RUST_LOG="warn")
    gateway = subprocess.Popen([ROOT / "target/release/gateway", "serve", "--config", path], env=env)
    try:
        wait_for("gateway", lambda: _ready(predict))
        wait_for("controller", lambda: deployment(admin)["status"] == "SCALED_TO_ZERO")
        single, bursts, warm_bursts = [], [], []
        for _ in range(args.rounds):
            single.append(round_trip(predict, admin, 1)[0][0])
            cold, warm = round_trip(predict, admin, args.burst)
            bursts.append(cold)
            warm_bursts.append(warm)

        def row(label, runs):
            stat = lambda pick: statistics.median(pick(b) for b in runs)
            first = stat(lambda b: b[0])
            median = stat(statistics.median)
            p95 = stat(lambda b: b[max(0, int(len(b) * 0.95) - 1)])
            last = stat(lambda b: b[-1])
            print(f"  {label:<34} {first:8.2f} {median:8.2f} {p95:8.2f} {last:8.2f}")

        print(f"{args.rounds} rounds, replica load delay {args.load_delay_ms} ms; medians over rounds, ms")
        print(f"  1 request from zero, TTFB - ready: {statistics.median(single):8.2f}"
              f"   (rounds: {', '.join(f'{x:.2f}' for x in single)})")
        print(f"  {'burst of ' + str(args.burst):<34} {'first':>8} {'median':>8} {'p95':>8} {'last':>8}")
        row("from zero, TTFB - ready", bursts)
        row("on the ready replica, TTFB - sent", warm_bursts)
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
        os.unlink(path)


def _ready(port):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
