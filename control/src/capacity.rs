//! The node's capacity and what local replicas use of it: a replica starts
//! only if its deployment's resources fit in what is left.

use config::{Node, Resources};
use routing::pool::Shortfall;

/// What the node offers to local replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCapacity {
    cpu_millis: u64,
    memory_mib: u64,
    accelerators: Vec<(String, u32)>,
}

/// Resources held by replicas, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    cpu_millis: u64,
    memory_mib: u64,
    accelerators: Vec<(String, u32)>,
}

impl Usage {
    /// Adds one replica's resources.
    pub fn add(&mut self, r: &Resources) {
        self.cpu_millis += u64::from(r.cpu_millis);
        self.memory_mib += r.memory_mib;
        if let Some((kind, count)) = &r.accelerator {
            match self.accelerators.iter_mut().find(|(k, _)| k == kind) {
                Some((_, used)) => *used += count,
                None => self.accelerators.push((kind.clone(), *count)),
            }
        }
    }

    fn accelerators(&self, kind: &str) -> u32 {
        count_of(&self.accelerators, kind)
    }
}

fn count_of(list: &[(String, u32)], kind: &str) -> u32 {
    list.iter().find(|(k, _)| k == kind).map_or(0, |(_, n)| *n)
}

impl NodeCapacity {
    /// The capacity the config declares; what it leaves out is read from
    /// the machine (CPUs and memory; no accelerators).
    pub fn from_config(node: &Node) -> Self {
        Self {
            cpu_millis: node.cpu_millis.map_or_else(detected_cpu_millis, u64::from),
            memory_mib: node.memory_mib.unwrap_or_else(detected_memory_mib),
            accelerators: node.accelerators.clone(),
        }
    }

    /// Whether one more replica needing `need` fits next to `used`; if
    /// not, what is short.
    pub fn fits(&self, used: &Usage, need: &Resources) -> Result<(), Shortfall> {
        let free_cpu = self.cpu_millis.saturating_sub(used.cpu_millis);
        if u64::from(need.cpu_millis) > free_cpu {
            return Err(Shortfall::Cpu {
                need: u64::from(need.cpu_millis),
                free: free_cpu,
                total: self.cpu_millis,
            });
        }
        let free_memory = self.memory_mib.saturating_sub(used.memory_mib);
        if need.memory_mib > free_memory {
            return Err(Shortfall::Memory {
                need: need.memory_mib,
                free: free_memory,
                total: self.memory_mib,
            });
        }
        if let Some((kind, count)) = &need.accelerator {
            let total = count_of(&self.accelerators, kind);
            let free = total.saturating_sub(used.accelerators(kind));
            if *count > free {
                return Err(Shortfall::Accelerators {
                    kind: kind.clone(),
                    need: *count,
                    free,
                    total,
                });
            }
        }
        Ok(())
    }
}

fn detected_cpu_millis() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000
}

/// `MemTotal` from `/proc/meminfo`; 0 (nothing fits) if it cannot be read,
/// so a misread never overcommits: declare `[node] memory` then.
fn detected_memory_mib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cpus: u32, memory_mib: u64, accelerators: &[(&str, u32)]) -> NodeCapacity {
        NodeCapacity::from_config(&Node {
            name: None,
            replica_host: std::net::Ipv4Addr::LOCALHOST.into(),
            cpu_millis: Some(cpus * 1000),
            memory_mib: Some(memory_mib),
            accelerators: accelerators
                .iter()
                .map(|(k, n)| ((*k).to_owned(), *n))
                .collect(),
            engine_binary: None,
        })
    }

    #[test]
    fn replicas_fit_until_a_resource_runs_out() {
        let node = node(2, 8192, &[]);
        let one = Resources::from_instance_type("1x2").unwrap();
        let mut used = Usage::default();
        assert!(node.fits(&used, &one).is_ok());
        used.add(&one);
        assert!(node.fits(&used, &one).is_ok());
        used.add(&one);
        let why = node.fits(&used, &one).unwrap_err();
        assert_eq!(
            why,
            Shortfall::Cpu {
                need: 1000,
                free: 0,
                total: 2000
            }
        );
        assert!(why.to_string().contains("1 cpu, 0 of 2 are free"), "{why}");
        let big = Resources::from_instance_type("1x16").unwrap();
        let why = node.fits(&Usage::default(), &big).unwrap_err();
        assert!(
            matches!(
                why,
                Shortfall::Memory {
                    need: 16384,
                    free: 8192,
                    total: 8192
                }
            ),
            "{why}"
        );
    }

    #[test]
    fn accelerators_are_counted_by_type() {
        let node = node(64, 1 << 20, &[("L4", 1)]);
        let l4 = Resources::from_instance_type("L4:4x16").unwrap();
        let h100 = Resources::from_instance_type("H100:1").unwrap();
        let mut used = Usage::default();
        assert!(node.fits(&used, &l4).is_ok());
        used.add(&l4);
        assert!(matches!(
            node.fits(&used, &l4),
            Err(Shortfall::Accelerators {
                free: 0,
                total: 1,
                ..
            })
        ));
        assert!(matches!(
            node.fits(&used, &h100),
            Err(Shortfall::Accelerators { kind, total: 0, .. }) if kind == "H100"
        ));
    }

    #[test]
    fn undeclared_capacity_is_read_from_the_machine() {
        let node = NodeCapacity::from_config(&Node::default());
        assert!(node.cpu_millis >= 1000);
        assert!(node.memory_mib > 0, "/proc/meminfo is readable here");
    }
}
