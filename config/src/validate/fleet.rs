//! `[fleet]` and the split it makes: a node's file keeps its machine's
//! sections, the shared document (in etcd) everything else.

use super::Checker;
use crate::model::{Fleet, NODE_SECTIONS, SHARED_SECTIONS};
use crate::path::ConfigPath;
use crate::raw::{RawConfig, RawFleet};

pub(super) fn fleet(c: &mut Checker<'_>, path: &ConfigPath, raw: RawFleet) -> Fleet {
    let endpoints = raw.endpoints.unwrap_or_default();
    if endpoints.is_empty() {
        c.error(
            path.key("endpoints"),
            "`endpoints` lists no etcd endpoint: give at least one, e.g. [\"http://127.0.0.1:2379\"]",
        );
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        let scheme = endpoint.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("http" | "https")) || endpoint.ends_with("://") {
            c.error(
                path.key("endpoints").index(i),
                format!("`{endpoint}` is not an etcd client URL such as `http://127.0.0.1:2379`"),
            );
        }
    }
    let prefix = raw
        .prefix
        .unwrap_or_else(|| Fleet::DEFAULT_PREFIX.to_owned());
    let valid = prefix.len() > 1
        && prefix.starts_with('/')
        && !prefix.ends_with('/')
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
    if !valid {
        c.error(
            path.key("prefix"),
            format!("`prefix` is `{prefix}`: it must start with `/`, not end with one, and hold only letters, digits, `/`, `-`, `_` and `.`"),
        );
    }
    let ttl = c.ranged(
        path,
        "lease_ttl_secs",
        raw.lease_ttl_secs,
        Fleet::DEFAULT_LEASE_TTL_SECS,
        2,
        300,
    );
    Fleet {
        endpoints,
        prefix,
        lease_ttl: std::time::Duration::from_secs(u64::from(ttl)),
    }
}

/// A node's file (one with `[fleet]`) may not hold the shared sections:
/// they would be silently shadowed by the fleet's document.
pub(super) fn node_file_only(c: &mut Checker<'_>, raw: &RawConfig) {
    let present = [
        !raw.api_keys.is_empty(),
        !raw.models.is_empty(),
        raw.admin.is_some(),
    ];
    for (section, _) in SHARED_SECTIONS.iter().zip(present).filter(|(_, p)| *p) {
        c.error(
            ConfigPath::root().key(section),
            format!("`{section}` belongs in the fleet's shared document, not in a node's file: move it there with `gateway config push`"),
        );
    }
}

/// The shared document may not hold a node's sections: each gateway takes
/// them from its own file.
pub(super) fn shared_only(c: &mut Checker<'_>, raw: &RawConfig) {
    let present = [
        raw.listeners.is_some(),
        raw.server.is_some(),
        raw.node.is_some(),
        raw.fleet.is_some(),
    ];
    for (section, _) in NODE_SECTIONS.iter().zip(present).filter(|(_, p)| *p) {
        c.error(
            ConfigPath::root().key(section),
            format!(
                "`[{section}]` belongs in each node's own file, not in the fleet's shared document"
            ),
        );
    }
}
