#!/usr/bin/env python3
"""A fleet of gateways on etcd: how fast a management API edit reaches every
gateway, and how long the fleet goes without a leader when the leader dies.

Starts a real etcd (Debian's etcd-server) and three release gateways, each a
node with its own file, sharing one document with a static synthetic
replica. Then:

- propagation: N times, add an environment through gateway a's API and time
  until a predict call to it answers 200 through each of the three gateways
  (each polled by its own thread); the figure per edit is the slowest
  gateway's. The environment is deleted again before the next edit.
- failover: R times, SIGKILL the leader and time until another gateway's
  `GET /v1/config` names a new one; the killed gateway is started again.

    cargo build --release -p gateway -p engine
    benches/fleet.py                      # 200 edits, 5 failovers, lease TTL 10 s
    benches/fleet.py --edits 50 --failovers 3 --ttl 2
"""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target/release"
KEY = "igw_bench_key"
ADMIN = "igw_bench_admin"
BODY = '{"text": "hello"}'
PREFIX = "/bench-fleet"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digest(key):
    return hashlib.sha256(key.encode()).hexdigest()


def wait_for(what, check, limit=60, every=0.02):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


class Conn:
    """One keep-alive connection, reopened when the server closed it."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def call(self, method, path, key, body=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers={"Authorization": f"Api-Key {key}"})
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


class Node:
    def __init__(self, name, etcd_url, ttl, workdir):
        self.name = name
        self.predict, self.admin = free_port(), free_port()
        self.path = workdir / f"{name}.toml"
        self.path.write_text(f"""
[listeners]
predict = "127.0.0.1:{self.predict}"
admin = "127.0.0.1:{self.admin}"
[server]
threads = 1
[node]
name = "{name}"
[fleet]
endpoints = ["{etcd_url}"]
prefix = "{PREFIX}"
lease_ttl_secs = {ttl}
""")
        self.proc = None

    def start(self):
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen([RELEASE / "gateway", "serve", "--config", self.path], env=env,
                                     stdout=subprocess.DEVNULL)
        wait_for(f"gateway {self.name}", lambda: Conn(self.admin).call("GET", "/healthz", KEY)[0] == 200)

    def leader(self):
        status, data = Conn(self.admin).call("GET", "/v1/config", ADMIN)
        return json.loads(data).get("leader") if status == 200 else None

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)


def document(replica):
    return f"""
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
predict_concurrency = 64
replicas = {{ source = "static", addresses = ["127.0.0.1:{replica}"] }}
[[models.environments]]
name = "production"
deployment = "d"
"""


def propagation(nodes, edits):
    """Per edit, ms until the new environment answers through every gateway."""
    api = Conn(nodes[0].admin)
    pollers = [Conn(n.predict) for n in nodes]
    times = []
    for i in range(edits):
        env = f"e{i}"
        path = f"/models/m/environments/{env}/predict"
        done = [None] * len(nodes)
        start = threading.Event()

        def poll(k):
            start.wait()
            while pollers[k].call("POST", path, KEY, BODY)[0] != 200:
                pass
            done[k] = time.perf_counter()

        threads = [threading.Thread(target=poll, args=(k,)) for k in range(len(nodes))]
        for t in threads:
            t.start()
        sent = time.perf_counter()
        start.set()
        status, data = api.call("POST", "/v1/models/m/environments", ADMIN,
                                json.dumps({"name": env, "deployment": "d"}))
        assert status == 201, data
        for t in threads:
            t.join()
        times.append((max(done) - sent) * 1000)
        status, data = api.call("DELETE", f"/v1/models/m/environments/{env}", ADMIN)
        assert status in (200, 204), (status, data)
    return times


def failover(nodes, rounds):
    """Per round, seconds from SIGKILL of the leader until another names a new one."""
    times = []
    for _ in range(rounds):
        wait_for("a leader", lambda: all(n.leader() for n in nodes))
        leader = next(n for n in nodes if n.name == nodes[0].leader())
        witness = next(n for n in nodes if n is not leader)
        leader.stop(signal.SIGKILL)
        killed = time.perf_counter()
        wait_for("a new leader", lambda: witness.leader() not in (None, leader.name), limit=120, every=0.01)
        times.append(time.perf_counter() - killed)
        leader.start()
    return times


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edits", type=int, default=200)
    p.add_argument("--failovers", type=int, default=5)
    p.add_argument("--ttl", type=int, default=10, help="[fleet] lease_ttl_secs")
    args = p.parse_args()
    for binary in ("gateway", "engine"):
        if not (RELEASE / binary).exists():
            raise SystemExit("build first: cargo build --release -p gateway -p engine")
    etcd_bin = shutil.which("etcd") or "/usr/bin/etcd"
    workdir = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    client, peer, replica_port = free_port(), free_port(), free_port()
    procs = []
    nodes = []
    try:
        etcd = subprocess.Popen([
            etcd_bin, "--name", "bench", "--data-dir", workdir / "etcd",
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(etcd)
        replica = subprocess.Popen([RELEASE / "engine", "--backend", "synthetic", "--listen",
                                    f"127.0.0.1:{replica_port}", "--predict-concurrency", "64"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(replica)
        wait_for("etcd", lambda: b"true" in Conn(client).call("GET", "/health", KEY)[1])
        nodes = [Node(name, f"http://127.0.0.1:{client}", args.ttl, workdir) for name in "abc"]
        for node in nodes:
            node.start()
        shared = workdir / "shared.toml"
        shared.write_text(document(replica_port))
        subprocess.run([RELEASE / "gateway", "config", "push", "--config", nodes[0].path, shared],
                       check=True, stdout=subprocess.DEVNULL)
        for node in nodes:
            wait_for("the document", lambda: Conn(node.predict).call(
                "POST", "/models/m/production/predict", KEY, BODY)[0] == 200)

        edits = propagation(nodes, args.edits)
        print(f"propagation of an API edit to all 3 gateways, {len(edits)} edits, ms:"
              f" median {statistics.median(edits):.2f}, p99 {percentile(edits, 0.99):.2f},"
              f" max {max(edits):.2f}")
        if args.failovers:
            times = failover(nodes, args.failovers)
            print(f"leader failover (SIGKILL to a new leader named), lease TTL {args.ttl} s,"
                  f" {len(times)} rounds, s: median {statistics.median(times):.2f},"
                  f" max {max(times):.2f} ({', '.join(f'{t:.2f}' for t in times)})")
    finally:
        for node in nodes:
            node.stop()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
