//! `[node]`: what this machine offers the replicas the gateway starts on it,
//! and the engine binary it runs them with.

use std::path::PathBuf;

use super::Checker;
use crate::model::Node;
use crate::path::ConfigPath;
use crate::raw::RawNode;
use crate::resources::{Resources, is_accelerator_name};

pub(super) fn node(c: &mut Checker<'_>, path: &ConfigPath, raw: RawNode) -> Node {
    let name = raw.name.filter(|name| {
        // It names the node's keys in etcd, and shows in logs and metrics.
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid {
            c.error(
                path.key("name"),
                format!("`name` is `{name}`: it must be 1 to 63 letters, digits, `-`, `_` or `.`"),
            );
        }
        valid
    });
    let replica_host = match raw
        .replica_host
        .map(|text| text.parse::<std::net::IpAddr>().map_err(|_| text))
    {
        None => std::net::Ipv4Addr::LOCALHOST.into(),
        Some(Ok(ip)) if !ip.is_unspecified() => ip,
        Some(Ok(ip)) => {
            c.error(
                path.key("replica_host"),
                format!("`replica_host` is {ip}: give the address replicas are reached at, not a wildcard"),
            );
            std::net::Ipv4Addr::LOCALHOST.into()
        }
        Some(Err(text)) => {
            c.error(
                path.key("replica_host"),
                format!("`replica_host` is `{text}`: expected an IP address such as 10.0.0.5"),
            );
            std::net::Ipv4Addr::LOCALHOST.into()
        }
    };
    let cpu_millis = raw.cpus.and_then(|cpus| c.cores(path, "cpus", cpus));
    let memory_mib = raw.memory.as_deref().and_then(|text| {
        Resources::parse_memory(text)
            .map_err(|e| c.error(path.key("memory"), e))
            .ok()
    });
    let accelerators_path = path.key("accelerators");
    let mut accelerators = Vec::new();
    // A BTreeMap: sorted by name.
    for (name, count) in raw.accelerators.unwrap_or_default() {
        if !is_accelerator_name(&name) {
            c.error(
                accelerators_path.key(&name),
                format!("invalid accelerator name `{name}`: expected an uppercase letter then letters or digits, e.g. `L4` or `H100`"),
            );
            continue;
        }
        match u32::try_from(count) {
            Ok(count) if count >= 1 => accelerators.push((name, count)),
            _ => c.error(
                accelerators_path.key(&name),
                format!("`{name}` is {count}; it must be at least 1"),
            ),
        }
    }
    let engine_binary = match raw.engine {
        Some(text) if text.is_empty() => {
            c.error(
                path.key("engine"),
                "`engine` is empty: give the path of the engine binary, or leave it out to use the one beside the gateway",
            );
            None
        }
        text => text.map(PathBuf::from),
    };
    Node {
        name,
        replica_host,
        cpu_millis,
        memory_mib,
        accelerators,
        engine_binary,
    }
}
