#!/usr/bin/env python3
"""Side-by-side proxy comparison on this machine, in one run.

Two upstreams, each measured directly and behind three reverse proxies
(nginx, haproxy and this gateway):

  nginx   an nginx `return 200` with a 52-byte JSON body: the cheapest
          possible replica, so the proxy's own cost dominates;
  engine  our engine's synthetic backend with no latency (`--backend
          synthetic --fixed-ms 0`): a real replica's HTTP stack;
  tls     the nginx upstream again, with the proxies terminating TLS on
          the client side (one self-signed certificate made for the run,
          served by all three; HTTP/1.1 by ALPN, keep-alive, so handshakes
          are a negligible share); no direct row.

Every proxy runs one worker with access logs off and upstream keep-alive on,
pinned alone on CPU 1; the load generator (our `loadtest`, one thread) and
the upstreams share CPU 0. The gateway's bench deployment points at the
upstream as a static replica with predict_concurrency 1024 (at the default,
1, it would queue all but one of the connections).

Per upstream, two measurements, each interleaved over the targets round by
round so that drift on a noisy machine hits every target alike:

  capacity  closed loop, `--connections` keep-alive connections: req/s,
            the proxy's CPU time per request (utime + stime from
            /proc/PID/stat over the measured window) and how busy that
            kept its CPU (near 100%: the proxy was the limit; well under:
            the load CPU was);
  latency   open loop at 25%, 50% and 75% of the LOWEST capacity measured
            among the proxies of that upstream, the same rates for every
            target, same connections, warm-up at most 0.5 s: p50/p99 from
            each request's scheduled send time (no coordinated omission).

The table reports medians over rounds, capacity ratios against nginx and
haproxy, and each proxy's peak RSS (VmHWM); the markdown table and the raw
JSON (every loadtest result) go to bench-results/compare-STAMP.{md,json}.
Any non-2xx answer or transport error is listed and makes the exit status 1.

    benches/compare.py                  # 3 rounds x 4 s per measurement, release build
    benches/compare.py --smoke          # 1 round, fractions of a second: checks the runner
    benches/compare.py --smoke --no-build --bin-dir target/debug
    benches/compare.py --upstreams nginx  # one upstream only
    benches/compare.py --upstreams nginx,engine,tls

Gateway variants: `--gateway-variant NAME=SNIPPET` (repeatable) adds a
target `gateway-NAME` per upstream: a gateway whose config has SNIPPET
inserted at the end of its [server] table, so bare keys land in [server]
(the base sets only `threads = 1`; TOML refuses a key twice) and a snippet
that starts with its own `[table]` header adds that table (the base config
continues with `[[api_keys]]`). A literal `\\n` in SNIPPET is a newline.
It measures a config change side by side with the plain gateway, in the
same run and rounds, e.g.

    benches/compare.py --gateway-variant 'nometrics=request_metrics = false'

`--gateway-bin NAME=PATH` (repeatable) adds a target `gateway-NAME` that
runs another gateway binary with the base config: a build of an earlier
commit, measured side by side with this one, e.g.
    benches/compare.py --gateway-bin before=/tmp/igw-before/gateway

Needs nginx, haproxy and taskset (apt-get install nginx-light haproxy when
nginx or haproxy is missing and this runs as root).
"""

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shlex
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "igw_bench_key"
GATEWAY_PATH = "/models/bench/production/predict"
BODY = '{"text": "hello world"}'
UPSTREAM_BODY = '{"backend":"nginx","outputs":[[0.12,0.34,0.56,0.78]]}'
PROXY_CPU = "1"
LOAD_CPU = "0"
RATES = (0.25, 0.50, 0.75)
PROXIES = ("nginx", "haproxy")


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def tool(name):
    return shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)


def ensure_packages():
    missing = [pkg for name, pkg in (("nginx", "nginx-light"), ("haproxy", "haproxy")) if tool(name) is None]
    if missing:
        print(f"installing {' '.join(missing)}", file=sys.stderr)
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", *missing, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
           stdout=subprocess.DEVNULL)


_PORTS_GIVEN = set()


def free_port():
    """A port no other process listens on and this run has not handed out
    before. Ports come from below the kernel's ephemeral range: a port from
    `bind(0)` can be handed out twice, or taken by a proxy's outbound
    connection, before the process meant for it binds it (in CI a gateway's
    admin listener once answered a target's predicts with 404)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(1000):
        port = random.randrange(10000, low)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    raise RuntimeError(f"no free port in 10000..{low}")


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


def wait_ok(url, timeout=20.0, cafile=None, proc=None):
    """Until one POST through `url` gets a 200 (a gateway's static replica
    may need its first health probe); fails at once if `proc`, the process
    meant to answer, has exited (its port may still answer: another
    process's)."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: its process exited with {proc.returncode}")
        req = urllib.request.Request(url, data=BODY.encode(), method="POST",
                                     headers={"Authorization": f"Api-Key {KEY}", "Content-Type": "application/json"})
        try:
            context = ssl.create_default_context(cafile=cafile) if cafile else None
            with urllib.request.urlopen(req, timeout=2, context=context) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - any failure: retry until the deadline
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{url} never answered 200: {last}")


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


def nginx_proxy_server(port, up_port, cert=None):
    """nginx's http-block body as a reverse proxy on `port` in front of the
    upstream on `up_port`, with upstream keep-alive; with `cert`, TLS on the
    client side."""
    return f"""
    upstream replica {{ server 127.0.0.1:{up_port}; keepalive 64; keepalive_requests 10000000; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096{" ssl" if cert else ""};
        {f"ssl_certificate {cert['cert']}; ssl_certificate_key {cert['key']};" if cert else ""}
        location / {{
            proxy_pass http://replica;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


STARTED = []


def start(cmd, cpu, log, **kw):
    """Starts `cmd` pinned to `cpu` (None: not pinned), its output in the
    file `log`; every process started is stopped on the way out, whatever
    fails."""
    pin = ["taskset", "-c", cpu] if cpu is not None else []
    with open(log, "w") as out:
        proc = subprocess.Popen([*pin, *cmd], stdout=out, stderr=subprocess.STDOUT, **kw)
    STARTED.append(proc)
    return proc


def stop_all():
    for p in STARTED:
        p.terminate()
    for p in STARTED:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cpu_seconds(pid):
    """utime + stime of a process and its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid):
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) if match else None


class Target:
    """One thing to load: `proc` is the process whose CPU is counted (the
    proxy, or for `direct` the upstream itself)."""

    def __init__(self, name, port, path, proc, scheme="http"):
        self.name, self.port, self.path, self.proc, self.scheme = name, port, path, proc, scheme

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}{self.path}"


def start_upstream(kind, tmp, bins, cpu=LOAD_CPU):
    """The upstream on `cpu` (the load CPU): its port, process and the path
    it serves."""
    port = free_port()
    log = tmp / f"upstream-{kind}.log"
    if kind == "nginx":
        conf = tmp / "upstream-nginx.conf"
        conf.write_text(nginx_conf(tmp, "upstream", f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type application/json; return 200 '{UPSTREAM_BODY}'; }}
    }}"""))
        proc = start([tool("nginx"), "-c", str(conf), "-p", str(tmp)], cpu, log)
        path = GATEWAY_PATH  # any path answers
    else:
        # Enough slots and queue that it never answers 429 to the load.
        proc = start([str(bins / "engine"), "--listen", f"127.0.0.1:{port}", "--backend", "synthetic",
                      "--fixed-ms", "0", "--predict-concurrency", "1024", "--queue-size", "4096"],
                     cpu, log, env={**os.environ, "RUST_LOG": "warn"})
        path = "/predict"
    wait_port(port, proc, log)
    return port, proc, path


def make_certificate(tmp):
    """A self-signed certificate for 127.0.0.1, its key, and both in one file
    (haproxy's form)."""
    cert, key, both = tmp / "tls-cert.pem", tmp / "tls-key.pem", tmp / "tls-both.pem"
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
       "-addext", "subjectAltName=IP:127.0.0.1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    both.write_text(cert.read_text() + key.read_text())
    return {"cert": cert, "key": key, "both": both}


def gateway_config(port, admin, upstream, extra, tls=None):
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    return f"""
[listeners]
predict = "127.0.0.1:{port}"
admin = "127.0.0.1:{admin}"
[server]
threads = 1
{extra}
{tls or ""}
[[api_keys]]
name = "bench"
sha256 = "{digest}"
scope = "all"
[[models]]
id = "bench"
[[models.deployments]]
id = "d1"
# The upstreams answer any number of requests at once; at the default (1)
# the gateway would hold all but one of the connections in its queue.
predict_concurrency = 1024
replicas = {{ source = "static", addresses = ["127.0.0.1:{upstream}"] }}
[[models.environments]]
name = "production"
deployment = "d1"
"""


def start_proxies(upstream_kind, up_port, up_path, tmp, bins, variants, other_bins, cert=None):
    """nginx, haproxy and the gateway (plus its variants and other builds)
    in front of one upstream, each alone on the proxy CPU; with `cert`, each
    terminates TLS on its client side."""
    targets = []
    scheme = "https" if cert else "http"
    tag = f"{upstream_kind}-up"

    port = free_port()
    conf = tmp / f"nginx-{tag}.conf"
    conf.write_text(nginx_conf(tmp, f"nginx-{tag}", nginx_proxy_server(port, up_port, cert)))
    proc = start([tool("nginx"), "-c", str(conf), "-p", str(tmp)], PROXY_CPU, tmp / f"nginx-{tag}.log")
    targets.append(Target("nginx", port, up_path, proc, scheme))

    port = free_port()
    conf = tmp / f"haproxy-{tag}.cfg"
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
    bind 127.0.0.1:{port}{f" ssl crt {cert['both']} alpn http/1.1" if cert else ""}
    default_backend replica
backend replica
    server r1 127.0.0.1:{up_port}
""")
    proc = start([tool("haproxy"), "-db", "-f", str(conf)], PROXY_CPU, tmp / f"haproxy-{tag}.log")
    targets.append(Target("haproxy", port, up_path, proc, scheme))

    gateways = [("gateway", "", bins / "gateway")]
    gateways += [(f"gateway-{n}", s, bins / "gateway") for n, s in variants]
    gateways += [(f"gateway-{n}", "", Path(b)) for n, b in other_bins]
    for name, extra, binary in gateways:
        port, admin = free_port(), free_port()
        conf = tmp / f"{name}-{tag}.toml"
        tls = None
        if cert:
            # The TLS listener is the one loaded; the plain one idles.
            plain, port = port, free_port()
            tls = f'[listeners.tls]\naddress = "127.0.0.1:{port}"\ncert = "{cert["cert"]}"\nkey = "{cert["key"]}"'
            conf.write_text(gateway_config(plain, admin, up_port, extra, tls))
        else:
            conf.write_text(gateway_config(port, admin, up_port, extra))
        proc = start([str(binary), "serve", "--config", str(conf)], PROXY_CPU, tmp / f"{name}-{tag}.log",
                     env={**os.environ, "RUST_LOG": "warn"})
        targets.append(Target(name, port, GATEWAY_PATH, proc, scheme))

    for t in targets:
        wait_port(t.port, t.proc, tmp / f"{t.name}-{tag}.log")
    return targets


def loadtest(bins, tmp, target, seconds, warmup, connections, rate=None, cacert=None):
    """One loadtest run on the load CPU; its JSON result, with the CPU time
    `target.proc` used per measured request (read after the warm-up and at
    the end: the loadtest's start-up, a few ms, is the only slack)."""
    out = tmp / "loadtest.json"
    cmd = ["taskset", "-c", LOAD_CPU, str(bins / "loadtest"), "--url", target.url, "--body", BODY,
           "-H", f"Authorization: Api-Key {KEY}", "-H", "Content-Type: application/json",
           "--connections", str(connections), "--duration", str(seconds), "--warmup", str(warmup),
           "--json", str(out)]
    if rate is not None:
        cmd += ["--rate", str(rate)]
    if cacert is not None:
        cmd += ["--cacert", str(cacert)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    time.sleep(warmup)
    cpu0 = cpu_seconds(target.proc.pid)
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
    result = json.loads(out.read_text())
    result["cpu_us_per_request"] = (cpu_seconds(target.proc.pid) - cpu0) * 1e6 / max(result["requests"], 1)
    return result


def machine():
    desc = f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}"
    model = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    return desc + (f", {model.group(1)}" if model else "")


def versions():
    """nginx and haproxy versions, for the table's readers."""
    out = {}
    try:
        text = subprocess.run([tool("nginx"), "-v"], capture_output=True, text=True).stderr
        out["nginx"] = re.search(r"nginx/(\S+)", text).group(1)
        text = subprocess.run([tool("haproxy"), "-v"], capture_output=True, text=True).stdout
        out["haproxy"] = re.search(r"version (\S+)", text).group(1)
    except (AttributeError, OSError):
        pass
    return out


def summarize(capacity, opened, peaks, rates):
    """Medians per target of one upstream."""
    summary = {}
    for name, runs in capacity.items():
        med = lambda f, xs=runs: statistics.median(f(x) for x in xs)
        s = {
            "capacity_rps": med(lambda x: x["requests_per_s"]),
            "capacity_p50_us": med(lambda x: x["latency_us"]["p50"]),
            "capacity_p99_us": med(lambda x: x["latency_us"]["p99"]),
            "cpu_us_per_request": med(lambda x: x["cpu_us_per_request"]),
            # Share of its CPU the process used at capacity: well under 100%
            # means something else (the load CPU) was the limit.
            "cpu_busy_percent": med(lambda x: x["cpu_us_per_request"] * x["requests_per_s"] / 1e4),
            "peak_rss_kib": peaks[name],
            "open_loop": {},
        }
        for share, rate in zip(RATES, rates):
            rs = opened[name][str(rate)]
            s["open_loop"][f"{round(share * 100)}%"] = {
                "rate": rate,
                "requests_per_s": statistics.median(x["requests_per_s"] for x in rs),
                "p50_us": statistics.median(x["latency_us"]["p50"] for x in rs),
                "p99_us": statistics.median(x["latency_us"]["p99"] for x in rs),
                "p999_us": statistics.median(x["latency_us"]["p999"] for x in rs),
            }
        summary[name] = s
    return summary


def table(upstream, summary, rates):
    head = " | ".join(f"{round(s * 100)}% = {r:,} req/s: p50 / p99" for s, r in zip(RATES, rates))
    lines = [
        f"| {upstream} upstream | capacity req/s | vs nginx | vs haproxy | {head} | CPU per request | CPU busy |"
        " peak RSS |",
        "| --- | ---: | ---: | ---: | " + "---: | " * len(rates) + "---: | ---: | ---: |",
    ]
    base = {p: summary[p]["capacity_rps"] for p in PROXIES}
    for name, s in summary.items():
        cells = [name, f"{s['capacity_rps']:,.0f}",
                 f"{s['capacity_rps'] / base['nginx']:.2f}", f"{s['capacity_rps'] / base['haproxy']:.2f}"]
        for share in RATES:
            o = s["open_loop"][f"{round(share * 100)}%"]
            cells.append(f"{o['p50_us']:,.0f} / {o['p99_us']:,.0f} us")
        cpu = [f"{s['cpu_us_per_request']:.1f} us", f"{s['cpu_busy_percent']:.0f}%"]
        if name == "direct":
            cells += [f"({cpu[0]} upstream)", f"({cpu[1]})", ""]
        else:
            cells += cpu + [f"{s['peak_rss_kib'] / 1024:.1f} MiB"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4, help="seconds per measurement (capacity and each rate)")
    ap.add_argument("--warmup", type=float, default=1, help="seconds of load before each measurement")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--upstreams", default="nginx,engine,tls", help="comma-separated: nginx, engine, tls")
    ap.add_argument("--gateway-variant", action="append", default=[], metavar="NAME=SNIPPET",
                    help="another gateway target with SNIPPET at the end of its [server] table (see above)")
    ap.add_argument("--gateway-bin", action="append", default=[], metavar="NAME=PATH",
                    help="another gateway target running the binary at PATH (see above)")
    ap.add_argument("--smoke", action="store_true", help="1 round of fractions of a second: checks the runner")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin-dir", default=str(ROOT / "target/release"))
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 0.4, 0.1
    upstreams = [u for u in args.upstreams.split(",") if u]
    if not upstreams or any(u not in ("nginx", "engine", "tls") for u in upstreams):
        ap.error(f"--upstreams takes nginx, engine and/or tls, not {args.upstreams!r}")
    variants = []
    for v in args.gateway_variant:
        name, sep, snippet = v.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            ap.error(f"--gateway-variant {v!r} is not NAME=SNIPPET")
        variants.append((name, snippet.replace("\\n", "\n")))
    other_bins = []
    for v in args.gateway_bin:
        name, sep, path = v.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not Path(path).is_file():
            ap.error(f"--gateway-bin {v!r} is not NAME=PATH of a gateway binary")
        other_bins.append((name, path))

    ensure_packages()
    if not args.no_build:
        sh("cargo", "build", "--release", "-p", "gateway", "-p", "engine", "-p", "loadtest", cwd=ROOT)
    bins = Path(args.bin_dir).resolve()
    for b in ("gateway", "engine", "loadtest"):
        if not (bins / b).exists():
            sys.exit(f"{bins / b} is missing: build it, or point --bin-dir at it")

    tmp = Path(tempfile.mkdtemp(prefix="igw-compare-"))
    started = time.time()
    results, failures = {}, []
    try:
        targets = {}
        cert = make_certificate(tmp) if "tls" in upstreams else None
        cacert = lambda kind: cert["cert"] if kind == "tls" else None
        servers = {}  # one upstream process per kind; tls shares nginx's
        for kind in upstreams:
            server = "nginx" if kind == "tls" else kind
            if server not in servers:
                servers[server] = start_upstream(server, tmp, bins)
            port, proc, path = servers[server]
            if kind == "tls":
                # Other builds may predate the TLS listener: this build only.
                targets[kind] = start_proxies(kind, port, path, tmp, bins, variants, [], cert)
            else:
                targets[kind] = [Target("direct", port, path, proc)] + start_proxies(kind, port, path, tmp, bins,
                                                                                     variants, other_bins)
            for t in targets[kind]:
                wait_ok(t.url, cafile=cacert(kind), proc=t.proc)

        def record(kind, t, what, result):
            if result["failed"]:
                failures.append({"upstream": kind, "target": t.name, "run": what, "failed": result["failed"],
                                 "statuses": result["statuses"], "errors": result["errors"]})

        # Capacity: closed loop, interleaved.
        capacity = {k: {t.name: [] for t in ts} for k, ts in targets.items()}
        for r in range(args.rounds):
            for kind, ts in targets.items():
                for t in ts:
                    res = loadtest(bins, tmp, t, args.duration, args.warmup, args.connections,
                                   cacert=cacert(kind))
                    capacity[kind][t.name].append(res)
                    record(kind, t, f"capacity round {r + 1}", res)
                    print(f"capacity round {r + 1} {kind:6} {t.name:16} {res['requests_per_s']:>9.0f} req/s  "
                          f"cpu {res['cpu_us_per_request']:.1f} us/req", file=sys.stderr)

        # Latency: open loop at shares of the slowest proxy's capacity.
        rates = {}
        for kind, ts in targets.items():
            lowest = min(statistics.median(x["requests_per_s"] for x in capacity[kind][t.name])
                         for t in ts if t.name != "direct")
            rates[kind] = [max(1, round(lowest * share)) for share in RATES]
        opened = {k: {t.name: {str(r): [] for r in rates[k]} for t in ts} for k, ts in targets.items()}
        open_warmup = min(args.warmup, 0.5)
        for r in range(args.rounds):
            for kind, ts in targets.items():
                for rate in rates[kind]:
                    for t in ts:
                        res = loadtest(bins, tmp, t, args.duration, open_warmup, args.connections, rate,
                                       cacert=cacert(kind))
                        opened[kind][t.name][str(rate)].append(res)
                        record(kind, t, f"open loop {rate}/s round {r + 1}", res)
                        print(f"open     round {r + 1} {kind:6} {t.name:16} {rate:>7}/s  "
                              f"p50 {res['latency_us']['p50']:>7} us  p99 {res['latency_us']['p99']:>7} us",
                              file=sys.stderr)

        for kind, ts in targets.items():
            peaks = {t.name: peak_rss_kib(t.proc.pid) for t in ts}
            results[kind] = {
                "rates": rates[kind],
                "summary": summarize(capacity[kind], opened[kind], peaks, rates[kind]),
                "runs": {"capacity": capacity[kind], "open_loop": opened[kind]},
            }
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    command = shlex.join(["benches/compare.py", *sys.argv[1:]])
    ver = versions()
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}"
        f" (nginx {ver.get('nginx', '?')}, haproxy {ver.get('haproxy', '?')}); the run took"
        f" {time.time() - started:.0f} s.",
        "",
        f"`{command}`: loadtest (one thread, {args.connections} keep-alive connections, POST with a"
        f" {len(BODY)}-byte JSON body) and the upstream on CPU {LOAD_CPU}, the proxy alone on CPU {PROXY_CPU};"
        f" medians of {args.rounds} interleaved round(s) of {args.duration:g} s (+{args.warmup:g} s warm-up)."
        " Capacity: closed loop. p50 / p99: open loop at 25/50/75% of the lowest proxy capacity for that"
        " upstream, latency from each request's scheduled time. CPU per request: the proxy's user + system"
        " time over the capacity runs; CPU busy: that time over the run's (100% = the proxy's CPU was the"
        " limit; well under it, the load CPU was).",
    ]
    for kind in upstreams:
        lines += [""] + table(kind, results[kind]["summary"], results[kind]["rates"])
    if failures:
        lines += ["", f"Failed requests (non-2xx or transport errors): {json.dumps(failures)}"]
    text = "\n".join(lines)
    print(text)

    written = write_results(args.out, "compare", text, {
        "machine": machine(), "versions": ver, "command": command,
        "settings": {"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                     "connections": args.connections, "variants": dict(variants),
                     "gateway_bins": dict(other_bins)},
        "upstreams": results, "failures": failures,
    })
    print(f"wrote {written}.md and .json", file=sys.stderr)
    return 1 if failures else 0


def write_results(out_dir, name, text, data):
    """Writes `text` and `data` (as JSON) to OUT_DIR/NAME-STAMP.md and .json;
    returns that path without its extension."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    Path(f"{base}.md").write_text(text + "\n")
    Path(f"{base}.json").write_text(json.dumps(data, indent=2))
    return base


if __name__ == "__main__":
    sys.exit(main())
