//! The process's open-files limit, and the client-connection cap that fits
//! under it. Each proxied request holds two descriptors (the client's and
//! the replica's), so a cap near the limit would let idle clients starve
//! the gateway of the descriptors it needs to reach replicas.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for everything but client connections: listeners,
/// the runtime's epoll and event fds, logs, the config watcher, health
/// probes, and idle pooled replica connections beyond one per client.
const RESERVED: usize = 128;

/// Raises the soft open-files limit to the hard one (the kernel default
/// soft limit is often 1,024); the limit in force afterwards.
pub fn raise() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            log::warn!("cannot raise the open-files limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The client-connection cap: `configured`, lowered to fit under `nofile`
/// descriptors (`None`: unlimited) with two per connection.
pub fn connection_cap(configured: usize, nofile: Option<u64>) -> usize {
    let Some(nofile) = nofile else {
        return configured;
    };
    let fits = (usize::try_from(nofile).unwrap_or(usize::MAX)).saturating_sub(RESERVED) / 2;
    configured.min(fits).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_under_the_descriptor_limit() {
        assert_eq!(connection_cap(10_000, Some(256)), 64);
        assert_eq!(connection_cap(10_000, Some(1_048_576)), 10_000);
        assert_eq!(connection_cap(10_000, None), 10_000);
        assert_eq!(connection_cap(10_000, Some(10)), 1);
    }
}
