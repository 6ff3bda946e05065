#!/usr/bin/env python3
"""Our load generator against wrk and oha, on the same targets, same
connections, same duration: does `loadtest` measure what the others do, and
where and why do they differ?

Targets come from benches/compare.py's helpers: the nginx `return 200`
upstream, nginx as a reverse proxy and the gateway in front of it. Every
client runs on one CPU (taskset; oha with one tokio worker thread, wrk with
one thread, loadtest is single-threaded).

  closed loop  direct to the nginx upstream (nginx alone on CPU 0, the
               client alone on CPU 1: how fast can each client go?), then
               the nginx proxy and the gateway (proxy on CPU 1, client and
               upstream on CPU 0, as compare.py runs them);
  open loop    loadtest `--rate R` and oha `-q R`, without and with oha's
               `--latency-correction`, at 50% and 85% of the gateway's
               closed-loop capacity measured just before (wrk has no rate
               option; wrk2, which has, is not packaged in Debian 12).

For each run: req/s, p50, p99, the client's own CPU time per request
(rusage of the child) and the target's (/proc/PID/stat: the proxy, or the
upstream when direct). Writes bench-results/harnesses-STAMP.{md,json}.

    cargo build --release -p gateway -p engine -p loadtest
    cargo install oha --locked
    loadtest/vs_wrk_oha.py [--seconds 4] [--repeats 2] [--bin-dir target/release]
"""

import argparse
import json
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))
import compare  # noqa: E402 - the targets, started as compare.py starts them

AUTH = f"Authorization: Api-Key {compare.KEY}"
CTYPE = "Content-Type: application/json"


def timed(cmd):
    """Runs `cmd`; its stdout and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def result(rps, p50, p99, requests, failed, cpu_s, **extra):
    return {"rps": rps, "p50_us": p50, "p99_us": p99, "requests": requests, "failed": failed,
            "client_cpu_us_per_request": cpu_s * 1e6 / max(requests, 1), **extra}


def run_loadtest(bins, tmp, url, cpu, c, seconds, rate=None):
    out = tmp / "loadtest.json"
    cmd = ["taskset", "-c", cpu, str(bins / "loadtest"), "--url", url, "--body", compare.BODY, "-H", AUTH,
           "-H", CTYPE, "-c", str(c), "-d", str(seconds), "--warmup", "0", "--json", str(out)]
    if rate:
        cmd += ["--rate", str(rate)]
    _, cpu_s = timed(cmd)
    j = json.loads(out.read_text())
    return result(j["requests_per_s"], j["latency_us"]["p50"], j["latency_us"]["p99"], j["requests"], j["failed"],
                  cpu_s, send_lag_p99_us=j.get("send_lag_us", {}).get("p99"))


def run_wrk(tmp, url, cpu, c, seconds):
    script = tmp / "post.lua"
    script.write_text(f"""
wrk.method = "POST"
wrk.body = '{compare.BODY}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Api-Key {compare.KEY}"
""")
    out, cpu_s = timed(["taskset", "-c", cpu, "wrk", "-t1", f"-c{c}", f"-d{seconds}s", "--latency", "-s", str(script),
                        url])
    scale = {"us": 1, "ms": 1e3, "s": 1e6}
    lat = {p: float(v) * scale[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return result(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), lat["50"], lat["99"],
                  int(re.search(r"(\d+) requests in", out).group(1)), int(non2xx.group(1)) if non2xx else 0, cpu_s)


def run_oha(oha, url, cpu, c, seconds, rate=None, correction=False):
    cmd = ["taskset", "-c", cpu, oha, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(c),
           "--worker-threads", "1", "-m", "POST", "-d", compare.BODY, "-H", AUTH, "-H", CTYPE, url]
    if rate:
        cmd += ["-q", str(rate)]
    if correction:
        cmd += ["--latency-correction"]
    out, cpu_s = timed(cmd)
    j = json.loads(out)
    codes = j["statusCodeDistribution"]
    errors = j.get("errorDistribution", {})
    # Requests still in flight at the deadline are "aborted due to
    # deadline": the run's end, not a failure.
    aborted = errors.pop("aborted due to deadline", 0)
    answered = sum(codes.values())
    return result(j["summary"]["requestsPerSec"], j["latencyPercentiles"]["p50"] * 1e6,
                  j["latencyPercentiles"]["p99"] * 1e6, answered,
                  answered - codes.get("200", 0) + sum(errors.values()), cpu_s, aborted_at_deadline=aborted)


def with_server_cpu(target, run):
    """`run()`'s result plus the target process's CPU time per request."""
    before = compare.cpu_seconds(target.proc.pid)
    r = run()
    r["server_cpu_us_per_request"] = (compare.cpu_seconds(target.proc.pid) - before) * 1e6 / max(r["requests"], 1)
    return r


def median_of(runs):
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and v is not None]
    return {k: statistics.median(r[k] for r in runs if r.get(k) is not None) for k in keys}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each case (interleaved); medians reported")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--bin-dir", default=str(ROOT / "target/release"))
    ap.add_argument("--oha", default=shutil.which("oha") or str(Path.home() / ".cargo/bin/oha"))
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args()
    bins = Path(args.bin_dir).resolve()
    c, secs = args.connections, args.seconds
    tmp = Path(tempfile.mkdtemp(prefix="igw-harness-"))
    rows = []
    try:
        port, proc, path = compare.start_upstream("nginx", tmp, bins)
        targets = {t.name: t for t in [compare.Target("direct", port, path, proc)]
                   + compare.start_proxies("nginx", port, path, tmp, bins, [])}
        for t in targets.values():
            compare.wait_ok(t.url)

        closed = [("direct", compare.PROXY_CPU), ("nginx", compare.LOAD_CPU), ("gateway", compare.LOAD_CPU)]
        clients = {
            "loadtest": lambda url, cpu: run_loadtest(bins, tmp, url, cpu, c, secs),
            "wrk -t1": lambda url, cpu: run_wrk(tmp, url, cpu, c, secs),
            "oha": lambda url, cpu: run_oha(args.oha, url, cpu, c, secs),
        }
        runs = {}
        for _ in range(args.repeats):
            for target, cpu in closed:
                for client, run in clients.items():
                    r = with_server_cpu(targets[target], lambda: run(targets[target].url, cpu))
                    runs.setdefault(("closed", target, None, client), []).append(r)
                    print(f"closed {target:8} {client:10} {r['rps']:>9.0f} req/s p50 {r['p50_us']:>7.0f} us "
                          f"p99 {r['p99_us']:>7.0f} us cpu {r['client_cpu_us_per_request']:.1f} us/req",
                          file=sys.stderr)

        capacity = statistics.median(r["rps"] for r in runs[("closed", "gateway", None, "loadtest")])
        rates = [round(capacity * 0.5, -2), round(capacity * 0.85, -2)]
        opened = [("gateway", rates[0]), ("gateway", rates[1]), ("nginx", rates[1])]
        clients = {
            "loadtest --rate": lambda url, rate: run_loadtest(bins, tmp, url, compare.LOAD_CPU, c, secs, rate),
            "oha -q": lambda url, rate: run_oha(args.oha, url, compare.LOAD_CPU, c, secs, rate),
            "oha -q --latency-correction": lambda url, rate: run_oha(args.oha, url, compare.LOAD_CPU, c, secs, rate,
                                                                     True),
        }
        for _ in range(args.repeats):
            for target, rate in opened:
                for client, run in clients.items():
                    r = with_server_cpu(targets[target], lambda: run(targets[target].url, int(rate)))
                    runs.setdefault(("open", target, int(rate), client), []).append(r)
                    print(f"open   {target:8} {int(rate):>6}/s {client:28} {r['rps']:>9.0f} req/s "
                          f"p50 {r['p50_us']:>9.0f} us p99 {r['p99_us']:>9.0f} us", file=sys.stderr)
        for (mode, target, rate, client), rs in runs.items():
            rows.append({"mode": mode, "target": target, "rate": rate, "client": client, "median": median_of(rs),
                         "runs": rs})
    finally:
        compare.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {compare.machine()};"
             f" `loadtest/vs_wrk_oha.py --seconds {secs:g} --repeats {args.repeats} --connections {c}`,"
             f" medians of {args.repeats}.", "",
             "| target | client | req/s | p50 | p99 | client CPU per request | target CPU per request |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        if row["mode"] == "closed":
            m = row["median"]
            lines.append(f"| {row['target']} | {row['client']} | {m['rps']:,.0f} | {m['p50_us']:,.0f} us |"
                         f" {m['p99_us']:,.0f} us | {m['client_cpu_us_per_request']:.1f} us |"
                         f" {m['server_cpu_us_per_request']:.1f} us |")
    lines += ["", "| target | rate | client | req/s | p50 | p99 | loadtest send lag p99 |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        if row["mode"] == "open":
            m = row["median"]
            lag = m.get("send_lag_p99_us")
            lines.append(f"| {row['target']} | {row['rate']:,} | {row['client']} | {m['rps']:,.0f} |"
                         f" {m['p50_us']:,.0f} us | {m['p99_us']:,.0f} us | {'' if lag is None else f'{lag:,.0f} us'} |")
    text = "\n".join(lines)
    print(text)
    compare.write_results(args.out, "harnesses", text, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
