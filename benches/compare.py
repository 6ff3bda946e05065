#!/usr/bin/env python3
"""Side-by-side proxy comparison on this machine, in one run.

The same upstream (an nginx `return 200` with a small JSON body) is measured
directly and behind three reverse proxies: nginx, haproxy and this gateway,
each with one worker and upstream keep-alive, pinned alone on one CPU while
the load generator (wrk) and the upstream share the other. Rounds are
interleaved so drift on a noisy machine hits every target alike; the table
reports medians and ratios against nginx and haproxy.

    benches/compare.py                  # 3 rounds x 4 s, writes bench-results/
    benches/compare.py --smoke          # 1 round x 1 s, to check the runner

Needs root for apt-get when nginx, haproxy or wrk are missing.
"""

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "igw_bench_key"
PATH = "/models/bench/production/predict"
BODY = '{"text": "hello world"}'
UPSTREAM_BODY = '{"backend":"nginx","outputs":[[0.12,0.34,0.56,0.78]]}'
PROXY_CPU = "1"
LOAD_CPU = "0"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def ensure_packages():
    missing = [pkg for tool, pkg in (("nginx", "nginx-light"), ("haproxy", "haproxy"), ("wrk", "wrk"))
               if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        print(f"installing {' '.join(missing)}", file=sys.stderr)
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", *missing, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
           stdout=subprocess.DEVNULL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, log, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{Path(log).read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def nginx_conf(tmp, name, server_block):
    return f"""
daemon off;
master_process off;
worker_processes 1;
error_log {tmp}/{name}-error.log warn;
pid {tmp}/{name}.pid;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    {server_block}
}}
"""


class Target:
    def __init__(self, name, port, proc):
        self.name, self.port, self.proc = name, port, proc


STARTED = []


def start(cmd, cpu, log, **kw):
    """Starts `cmd` pinned to `cpu`, its output in the file `log`; every
    process started is stopped on the way out, whatever fails."""
    with open(log, "w") as out:
        proc = subprocess.Popen(["taskset", "-c", cpu, *cmd], stdout=out, stderr=subprocess.STDOUT, **kw)
    STARTED.append(proc)
    return proc


def cpu_seconds(pid):
    """utime + stime of a process and its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid):
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) if match else None


def run_wrk(port, duration, connections, script):
    out = sh("taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
             "-s", script, f"http://127.0.0.1:{port}{PATH}", capture_output=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    lat = {}
    for pct, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        lat[pct] = float(value) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
    return {"rps": rps, "requests": total, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else None, "latency_us": lat}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=4, help="seconds per measurement")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--smoke", action="store_true", help="1 round of 1 s: checks the runner, not the speed")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin-dir", default=str(ROOT / "target/release"))
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.duration = 1, 1

    ensure_packages()
    if not args.no_build:
        sh("cargo", "build", "--release", "-p", "gateway", "-p", "engine", cwd=ROOT)
    gateway_bin = Path(args.bin_dir) / "gateway"
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"

    tmp = Path(tempfile.mkdtemp(prefix="igw-compare-"))
    procs = STARTED
    try:
        up = free_port()
        conf = tmp / "upstream.conf"
        conf.write_text(nginx_conf(tmp, "upstream", f"""
    server {{
        listen 127.0.0.1:{up} backlog=4096;
        location / {{ default_type application/json; return 200 '{UPSTREAM_BODY}'; }}
    }}"""))
        upstream = start([nginx, "-c", str(conf), "-p", str(tmp)], LOAD_CPU, tmp / "upstream.log")
        wait_port(up, upstream, tmp / "upstream.log")
        targets = [Target("direct", up, upstream)]

        port = free_port()
        conf = tmp / "nginx-proxy.conf"
        conf.write_text(nginx_conf(tmp, "proxy", f"""
    upstream replica {{ server 127.0.0.1:{up}; keepalive 64; keepalive_requests 10000000; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://replica;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""))
        targets.append(Target("nginx", port, start([nginx, "-c", str(conf), "-p", str(tmp)], PROXY_CPU, tmp / "nginx.log")))

        port = free_port()
        conf = tmp / "haproxy.cfg"
        conf.write_text(f"""
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    default_backend replica
backend replica
    server r1 127.0.0.1:{up}
""")
        targets.append(Target("haproxy", port, start([haproxy, "-db", "-f", str(conf)], PROXY_CPU, tmp / "haproxy.log")))

        port, admin = free_port(), free_port()
        digest = __import__("hashlib").sha256(KEY.encode()).hexdigest()
        conf = tmp / "gateway.toml"
        conf.write_text(f"""
[listeners]
predict = "127.0.0.1:{port}"
admin = "127.0.0.1:{admin}"
[server]
threads = 1
[[api_keys]]
name = "bench"
sha256 = "{digest}"
scope = "all"
[[models]]
id = "bench"
[[models.deployments]]
id = "d1"
# nginx answers any number of requests at once; at the default (1) the
# gateway would hold wrk's other 31 connections in the activation queue.
predict_concurrency = 1024
replicas = {{ source = "static", addresses = ["127.0.0.1:{up}"] }}
[[models.environments]]
name = "production"
deployment = "d1"
""")
        targets.append(Target("gateway", port, start([str(gateway_bin), "serve", "--config", str(conf)], PROXY_CPU,
                                                     tmp / "gateway.log", env={**os.environ, "RUST_LOG": "warn"})))
        for t in targets:
            wait_port(t.port, t.proc, tmp / f"{t.name if t.name != 'direct' else 'upstream'}.log")

        script = tmp / "post.lua"
        script.write_text(f"""
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Api-Key {KEY}"
""")
        # Warm-up: connections, pools, caches.
        for t in targets:
            run_wrk(t.port, 1, args.connections, str(script))

        results = {t.name: [] for t in targets}
        for r in range(args.rounds):
            for t in targets:
                cpu0 = cpu_seconds(t.proc.pid)
                res = run_wrk(t.port, args.duration, args.connections, str(script))
                res["cpu_us_per_request"] = (cpu_seconds(t.proc.pid) - cpu0) * 1e6 / max(res["requests"], 1)
                results[t.name].append(res)
                print(f"round {r + 1} {t.name:8} {res['rps']:>10.0f} req/s  "
                      f"p50 {res['latency_us'].get('50', 0):>7.0f} us  p99 {res['latency_us'].get('99', 0):>7.0f} us  "
                      f"cpu {res['cpu_us_per_request']:.1f} us/req", file=sys.stderr)
        peaks = {t.name: peak_rss_kib(t.proc.pid) for t in targets}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {}
    for name, runs in results.items():
        med = lambda f: statistics.median(f(x) for x in runs)
        summary[name] = {
            "rps": med(lambda x: x["rps"]),
            "p50_us": med(lambda x: x["latency_us"].get("50", 0)),
            "p99_us": med(lambda x: x["latency_us"].get("99", 0)),
            "cpu_us_per_request": med(lambda x: x["cpu_us_per_request"]),
            "non2xx": sum(x["non2xx"] for x in runs),
            "peak_rss_kib": peaks[name],
        }
    failures = {n: s["non2xx"] for n, s in summary.items() if s["non2xx"]}

    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}"
    cpu_model = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    if cpu_model:
        machine += f", {cpu_model.group(1)}"
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine}.",
        f"`benches/compare.py --rounds {args.rounds} --duration {args.duration} --connections {args.connections}`: "
        f"wrk -t1 -c{args.connections} (POST, {len(BODY)}-byte body) and the nginx upstream on CPU {LOAD_CPU}, "
        f"the proxy alone on CPU {PROXY_CPU}; medians of {args.rounds} interleaved round(s) of {args.duration} s.",
        "",
        "| target | req/s | vs nginx | vs haproxy | p50 | p99 | proxy CPU per request | peak RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in summary.items():
        proxy = name != "direct"
        lines.append(
            f"| {name} | {s['rps']:,.0f} | {s['rps'] / summary['nginx']['rps']:.2f} | "
            f"{s['rps'] / summary['haproxy']['rps']:.2f} | {s['p50_us']:.0f} us | {s['p99_us']:.0f} us | "
            + (f"{s['cpu_us_per_request']:.1f} us | {s['peak_rss_kib'] / 1024:.1f} MiB |" if proxy else "(upstream) | |"))
    if failures:
        lines.append(f"\nNon-2xx responses: {failures}")
    table = "\n".join(lines)
    print(table)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"compare-{stamp}.md").write_text(table + "\n")
    (out / f"compare-{stamp}.json").write_text(json.dumps({"summary": summary, "runs": results,
                                                           "machine": machine}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
