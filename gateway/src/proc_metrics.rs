//! Process figures for `/metrics`, read from `/proc` at scrape time and
//! written in the Prometheus text format (the `metrics` facade has no float
//! counters for CPU seconds). Linux only; elsewhere they are left out.

use std::collections::HashSet;
use std::fmt::Write;
use std::fs;

use crate::telemetry::Listeners;

/// Kernel clock ticks per second in `/proc/*/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Appends the process families to `out`.
pub fn render(out: &mut String, listeners: Listeners) {
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
        out.push('\n');
    };
    if let Some((cpu, start)) = cpu_and_start() {
        family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
            &[("", cpu)],
        );
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
            &[("", start)],
        );
    }
    if let Some(rss) = resident_bytes() {
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, in bytes.",
            &[("", rss)],
        );
    }
    if let Some((fds, sockets)) = descriptors() {
        family(
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            &[("", fds as f64)],
        );
        if let Some(max) = max_fds() {
            family(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                &[("", max)],
            );
        }
        let (down, up) = connections(&sockets, listeners);
        family(
            routing::telemetry::OPEN_CONNECTIONS,
            "gauge",
            "Established TCP connections: downstream (clients on the predict listener) and upstream (to replicas).",
            &[
                ("{side=\"downstream\"}", down as f64),
                ("{side=\"upstream\"}", up as f64),
            ],
        );
    }
}

/// CPU seconds used, and the start time (Unix seconds).
fn cpu_and_start() -> Option<(f64, f64)> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may hold spaces: state is 0.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    let cpu = (ticks(11)? + ticks(12)?) / TICKS_PER_SECOND;
    let started_after_boot = ticks(19)? / TICKS_PER_SECOND;
    let boot = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<f64>()
        .ok()?;
    Some((cpu, boot + started_after_boot))
}

/// The soft open-files limit (`None` when unlimited or unknown).
fn max_fds() -> Option<f64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn resident_bytes() -> Option<f64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<f64>()
        .ok()?;
    Some(kib * 1024.0)
}

/// Open descriptors, and the inodes of the sockets among them.
fn descriptors() -> Option<(usize, HashSet<u64>)> {
    let mut count = 0;
    let mut sockets = HashSet::new();
    for entry in fs::read_dir("/proc/self/fd").ok()?.flatten() {
        count += 1;
        if let Ok(target) = fs::read_link(entry.path())
            && let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        {
            sockets.insert(inode);
        }
    }
    Some((count, sockets))
}

/// Established TCP connections of this process: (downstream, upstream).
/// Downstream ones have the predict listener's port as their local port;
/// admin connections count as neither.
fn connections(sockets: &HashSet<u64>, listeners: Listeners) -> (usize, usize) {
    const ESTABLISHED: &str = "01";
    let (mut down, mut up) = (0, 0);
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            if *state != ESTABLISHED || !inode.parse().is_ok_and(|i| sockets.contains(&i)) {
                continue;
            }
            let port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            match port {
                Some(p) if p == listeners.predict.port() => down += 1,
                Some(p) if p == listeners.admin.port() => {}
                _ => up += 1,
            }
        }
    }
    (down, up)
}
