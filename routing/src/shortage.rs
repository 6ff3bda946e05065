//! Failures that are this host's, not a replica's.

/// Whether a failed connect or accept is the gateway's own shortage (file
/// descriptors, local ports, buffers), not the peer's fault.
pub fn is_local_shortage(e: &std::io::Error) -> bool {
    /// EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL (Linux numbers).
    const LOCAL: [i32; 5] = [24, 23, 105, 12, 99];
    e.raw_os_error().is_some_and(|code| LOCAL.contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_own_shortage_is_told_from_the_replicas_fault() {
        let emfile = std::io::Error::from_raw_os_error(24);
        let refused = std::io::Error::from_raw_os_error(111);
        assert!(is_local_shortage(&emfile) && !is_local_shortage(&refused));
    }
}
