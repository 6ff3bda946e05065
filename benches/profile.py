#!/usr/bin/env python3
"""Per-request cost of a reverse proxy, by instructions and by system calls.

Counts, unlike timings, repeat on a noisy machine, so each optimisation step
of the gateway can be judged by them. Every target (nginx as a proxy, and
each gateway build) sits in front of the same upstream as in compare.py: an
nginx `return 200` with a 52-byte JSON body. The load is this script's own
keep-alive client (4 connections, POST with the body {"text": "hello world"}
and the bench API key), so the number of requests in each window is exact.
Nothing is pinned.

  callgrind  the proxy runs under `valgrind --tool=callgrind
             --instr-atstart=no`; after 300 warm-up requests
             `callgrind_control -i on`, exactly --requests (3,000) POSTs,
             `callgrind_control -i off`, stop the proxy: its user-space
             instructions (Ir, all threads) per request, and for the
             gateways the top functions by self cost;
  strace     the proxy runs natively; after 300 warm-up requests `strace -c
             -f -p PID` is attached for exactly --syscall-requests (5,000)
             POSTs: calls per request of each system call (>= 0.05 shown).

nginx runs with `master_process off; daemon off; worker_processes 1`, the
gateway with `threads = 1` and RUST_LOG=warn (compare.py's configs). The
tables go to stdout and to bench-results/profile-STAMP.md, all figures to
.json, each target's callgrind file to profile-STAMP-NAME.callgrind.

    benches/profile.py                                # nginx and target/release/gateway
    benches/profile.py --bin-dir target/debug --requests 300 --syscall-requests 500   # checks the runner
    benches/profile.py --gateway after=target/release/gateway --gateway before=/tmp/igw-before/gateway

Needs valgrind, strace and nginx (strace is installed with apt-get when
missing and this runs as root).
"""

import argparse
import collections
import http.client
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no benches/__pycache__ from importing compare
sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402
from compare import BODY, GATEWAY_PATH, KEY  # noqa: E402

HEADERS = {"Authorization": f"Api-Key {KEY}", "Content-Type": "application/json"}
WARMUP = 300
CONNECTIONS = 4
MIN_PER_REQUEST = 0.05
TOP = 25


class Client:
    """CONNECTIONS keep-alive connections kept open across warm-up and the
    measured window, so the window holds requests and nothing else."""

    def __init__(self, port):
        self.conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=300) for _ in range(CONNECTIONS)]

    def send(self, total):
        """Exactly `total` POSTs spread over the connections; returns how many
        were sent (all of them: any error or non-200 answer raises)."""
        statuses, sent, errors = collections.Counter(), [0], []
        lock = threading.Lock()

        def run(conn, n):
            try:
                for _ in range(n):
                    conn.request("POST", GATEWAY_PATH, body=BODY.encode(), headers=HEADERS)
                    with lock:
                        sent[0] += 1
                    response = conn.getresponse()
                    response.read()
                    with lock:
                        statuses[response.status] += 1
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=run, args=(c, total // CONNECTIONS + (i < total % CONNECTIONS)))
                   for i, c in enumerate(self.conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors or set(statuses) != {200}:
            raise RuntimeError(f"{total} requests: statuses {dict(statuses)}, errors {errors[:3]}")
        return sent[0]

    def close(self):
        for c in self.conns:
            c.close()


def proxy_command(name, binary, port, up_port, tmp):
    """The command line, environment and stop signal of one target."""
    if name == "nginx":
        conf = tmp / "nginx-proxy.conf"
        conf.write_text(compare.nginx_conf(tmp, "nginx-proxy", compare.nginx_proxy_server(port, up_port)))
        return [compare.tool("nginx"), "-c", str(conf), "-p", str(tmp)], os.environ, signal.SIGTERM
    conf = tmp / f"{name}.toml"
    conf.write_text(compare.gateway_config(port, compare.free_port(), up_port, ""))
    # SIGINT: the gateway exits at once (SIGTERM would drain for its grace period).
    return [str(binary), "serve", "--config", str(conf)], {**os.environ, "RUST_LOG": "warn"}, signal.SIGINT


def run_proxy(target, up_port, tmp, wrapper, measure):
    """Starts one target (under `wrapper`), warms it up, calls `measure(proc,
    client)` and stops it by its pid; returns what `measure` returned."""
    name, binary = target
    port = compare.free_port()
    cmd, env, stop = proxy_command(name, binary, port, up_port, tmp)
    log = tmp / f"{name}.log"
    proc = compare.start([*wrapper, *cmd], None, log, env=env)
    compare.wait_port(port, proc, log, timeout=120)
    compare.wait_ok(f"http://127.0.0.1:{port}{GATEWAY_PATH}", timeout=120, proc=proc)
    client = Client(port)
    try:
        client.send(WARMUP)
        return measure(proc, client)
    finally:
        client.close()
        proc.send_signal(stop)
        proc.wait(timeout=300)


def callgrind(target, up_port, tmp, requests):
    """Instructions per request of one target, and its callgrind file."""
    out = tmp / f"callgrind-{target[0]}.out"
    # Not --collect-atstart=no: `callgrind_control -i on` switches
    # instrumentation, not collection, so with it nothing is ever counted.
    wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]

    def measure(proc, client):
        compare.sh("callgrind_control", "-i", "on", str(proc.pid), stdout=subprocess.DEVNULL)
        sent = client.send(requests)
        compare.sh("callgrind_control", "-i", "off", str(proc.pid), stdout=subprocess.DEVNULL)
        return sent

    sent = run_proxy(target, up_port, tmp, wrapper, measure)
    # The header's `summary:` is written before the counts (0 here); `totals:` ends the file.
    ir = max(map(int, re.findall(r"^(?:summary|totals):\s+(\d+)", out.read_text(), re.M)), default=0)
    if ir == 0:
        raise RuntimeError(f"{out}: no instructions counted")
    return {"requests": sent, "ir": ir, "ir_per_request": ir / sent}, out


def top_functions(out, requests):
    """The TOP functions by self Ir per request, from callgrind_annotate (one
    row per function: the parts inlined from other source files are added
    up)."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", str(out)], check=True, text=True,
                          capture_output=True).stdout
    by_function = collections.Counter()
    listing = text.split("file:function", 1)[-1].split("\n\n", 1)[0]  # up to the first blank line
    for line in listing.splitlines():
        # "1,234 (5.6%)  path/file.rs:crate::function [/path/object]"
        match = re.match(r"\s*([\d,]+)\s+\([\s\d.]+%\)\s+[^:]*:(.+?)(?: \[[^\]]*\])?$", line)
        if match:
            by_function[match.group(2)] += int(match.group(1).replace(",", ""))
    total = int(re.search(r"([\d,]+)(?: \([\d.]+%\))?\s+PROGRAM TOTALS", text).group(1).replace(",", ""))
    return [{"ir_per_request": ir / requests, "percent": 100 * ir / total, "function": name}
            for name, ir in by_function.most_common(TOP)]


def syscalls(target, up_port, tmp, requests):
    """System calls per request of one target, by name."""
    out = tmp / f"strace-{target[0]}.txt"

    def measure(proc, client):
        err = tmp / f"strace-{target[0]}.log"
        tracer = compare.start(["strace", "-c", "-f", "-p", str(proc.pid), "-o", str(out)], None, err)
        deadline = time.time() + 20
        while "attached" not in err.read_text():  # "Process N attached with T threads"
            if time.time() > deadline or tracer.poll() is not None:
                raise RuntimeError(f"strace did not attach: {err.read_text()}")
            time.sleep(0.05)
        sent = client.send(requests)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=60)
        return sent

    sent = run_proxy(target, up_port, tmp, [], measure)
    calls = {}
    for line in out.read_text().splitlines():
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(fields) >= 5 and re.fullmatch(r"[\d.]+", fields[0]) and fields[-1] != "total":
            calls[fields[-1]] = {"calls": int(fields[3]), "errors": int(fields[4]) if len(fields) == 6 else 0}
    for c in calls.values():
        c["per_request"] = c["calls"] / sent
    return {"requests": sent, "syscalls": dict(sorted(calls.items(), key=lambda kv: -kv[1]["calls"]))}


def ensure_tools():
    """valgrind, strace and nginx on PATH (`command -v`); strace installed
    when missing and this runs as root."""
    if shutil.which("strace") is None and os.geteuid() == 0:
        print("installing strace", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        compare.sh("apt-get", "update", "-qq", env=env)
        compare.sh("apt-get", "install", "-y", "-qq", "strace", stdout=subprocess.DEVNULL, env=env)
    missing = [t for t in ("valgrind", "callgrind_control", "callgrind_annotate", "strace") if not shutil.which(t)]
    missing += ["nginx"] if compare.tool("nginx") is None else []
    if missing:
        sys.exit(f"missing: {' '.join(missing)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateway", action="append", default=[], metavar="[NAME=]PATH",
                    help="a gateway binary to profile (repeatable); default: gateway=BIN_DIR/gateway")
    ap.add_argument("--bin-dir", default=str(compare.ROOT / "target/release"))
    ap.add_argument("--requests", type=int, default=3000, help="requests counted under callgrind")
    ap.add_argument("--syscall-requests", type=int, default=5000, help="requests counted under strace")
    ap.add_argument("--out", default=str(compare.ROOT / "bench-results"))
    args = ap.parse_args()
    targets = [("nginx", None)]
    for g in args.gateway or [f"gateway={Path(args.bin_dir) / 'gateway'}"]:
        name, sep, path = g.rpartition("=") if "=" in g else ("gateway", "=", g)
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not Path(path).is_file() or name in dict(targets):
            ap.error(f"--gateway {g!r} is not [NAME=]PATH of a gateway binary, with a NAME not used yet")
        targets.append((name, Path(path).resolve()))
    ensure_tools()

    tmp = Path(tempfile.mkdtemp(prefix="igw-profile-"))
    started = time.time()
    results = {name: {"binary": str(binary) if binary else compare.tool("nginx")} for name, binary in targets}
    outs = {}
    try:
        up_port, _, _ = compare.start_upstream("nginx", tmp, None, cpu=None)
        for target in targets:
            name = target[0]
            print(f"callgrind {name} ...", file=sys.stderr)
            results[name]["callgrind"], outs[name] = callgrind(target, up_port, tmp, args.requests)
            if name != "nginx":
                results[name]["top_self"] = top_functions(outs[name], results[name]["callgrind"]["requests"])
            print(f"strace {name} ...", file=sys.stderr)
            results[name]["strace"] = syscalls(target, up_port, tmp, args.syscall_requests)
    finally:
        compare.stop_all()
        saved = {name: out.read_bytes() for name, out in outs.items()}
        shutil.rmtree(tmp, ignore_errors=True)

    command = shlex.join(["benches/profile.py", *sys.argv[1:]])
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {compare.machine()}"
        f" (nginx {compare.versions().get('nginx', '?')}); the run took {time.time() - started:.0f} s.",
        "",
        f"`{command}`: {CONNECTIONS} keep-alive connections, POST with a {len(BODY)}-byte JSON body, to an"
        f" nginx `return 200` upstream, after {WARMUP} warm-up requests. Instructions: callgrind, user space,"
        f" all threads, over exactly {args.requests:,} requests. System calls: `strace -c -f` over exactly"
        f" {args.syscall_requests:,} requests (those with >= {MIN_PER_REQUEST} per request).",
        "",
        "| target | instructions / request | vs nginx |",
        "| --- | ---: | ---: |",
    ]
    base = results["nginx"]["callgrind"]["ir_per_request"]
    for name, r in results.items():
        ir = r["callgrind"]["ir_per_request"]
        lines.append(f"| {name} | {ir:,.0f} | {ir / base:.2f} |")
    lines += ["", "| target | system calls / request |", "| --- | --- |"]
    for name, r in results.items():
        calls = r["strace"]["syscalls"]
        shown = [f"{s} {c['per_request']:.2f}" for s, c in calls.items() if c["per_request"] >= MIN_PER_REQUEST]
        total = sum(c["per_request"] for c in calls.values())
        lines.append(f"| {name} | {total:.2f}: {', '.join(shown)} |")
    for name, r in results.items():
        if "top_self" in r:
            lines += ["", f"{name}: top {TOP} functions by self instructions per request", "",
                      "| Ir / request | % | function |", "| ---: | ---: | --- |"]
            for f in r["top_self"]:
                function = f["function"][:200].replace("|", "\\|")
                lines.append(f"| {f['ir_per_request']:,.0f} | {f['percent']:.1f} | `{function}` |")
    text = "\n".join(lines)
    print(text)
    written = compare.write_results(args.out, "profile", text, {
        "machine": compare.machine(), "command": command, "warmup": WARMUP, "connections": CONNECTIONS,
        "targets": results,
    })
    for name, data in saved.items():  # for callgrind_annotate or kcachegrind
        Path(f"{written}-{name}.callgrind").write_bytes(data)
    print(f"wrote {written}.md, .json and -NAME.callgrind", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
