//! What one replica needs: CPU, memory and accelerators, from an
//! `instance_type` string or explicit fields.

use std::fmt;

/// Resources of one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Accelerator type (e.g. `L4`, `H100`) and count, if any.
    pub accelerator: Option<(String, u32)>,
}

impl Default for Resources {
    /// The smallest CPU instance: `1x2` (1 core, 2 GiB).
    fn default() -> Self {
        Self {
            cpu_millis: 1000,
            memory_mib: 2048,
            accelerator: None,
        }
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((kind, count)) = &self.accelerator {
            write!(f, "{count}x{kind}, ")?;
        }
        write!(
            f,
            "{} cpu, {} MiB",
            f64::from(self.cpu_millis) / 1000.0,
            self.memory_mib
        )
    }
}

impl Resources {
    /// Parses `CPUxMEM` (`4x16`: 4 cores, 16 GiB), `ACC:CPUxMEM` (`L4:4x16`:
    /// one L4 with 4 cores and 16 GiB) or `ACC:N` (`H100:2`: two H100s, with
    /// 8 cores and 64 GiB per accelerator).
    pub fn from_instance_type(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid instance_type `{text}`: expected `CPUxMEM` (e.g. `4x16`), `ACC:CPUxMEM` (e.g. `L4:4x16`) or `ACC:N` (e.g. `H100:2`)"
            )
        };
        let (accelerator, rest) = match text.split_once(':') {
            Some((acc, rest)) if is_accelerator_name(acc) => (Some(acc), rest),
            Some(_) => return Err(bad()),
            None => (None, text),
        };
        if let (Some(acc), Ok(count)) = (accelerator, rest.parse::<u32>()) {
            if count == 0 {
                return Err(bad());
            }
            return Ok(Self {
                cpu_millis: 8000 * count,
                memory_mib: 64 * 1024 * u64::from(count),
                accelerator: Some((acc.to_owned(), count)),
            });
        }
        let (cpu, mem) = rest.split_once('x').ok_or_else(bad)?;
        let cpu: u32 = cpu.parse().map_err(|_| bad())?;
        let mem: u64 = mem.parse().map_err(|_| bad())?;
        if cpu == 0 || mem == 0 {
            return Err(bad());
        }
        Ok(Self {
            cpu_millis: cpu * 1000,
            memory_mib: mem * 1024,
            accelerator: accelerator.map(|a| (a.to_owned(), 1)),
        })
    }

    /// Parses a memory size: `512Mi`, `16Gi` (binary units) or plain MiB.
    pub fn parse_memory(text: &str) -> Result<u64, String> {
        let bad = || format!("invalid memory `{text}`: expected e.g. `512Mi` or `16Gi`");
        let (number, factor) = if let Some(n) = text.strip_suffix("Gi") {
            (n, 1024)
        } else if let Some(n) = text.strip_suffix("Mi") {
            (n, 1)
        } else {
            (text, 1)
        };
        let value: u64 = number.trim().parse().map_err(|_| bad())?;
        if value == 0 {
            return Err(bad());
        }
        Ok(value * factor)
    }

    /// Parses an accelerator: `L4` (one) or `H100:2`.
    pub fn parse_accelerator(text: &str) -> Result<(String, u32), String> {
        let bad = || format!("invalid accelerator `{text}`: expected e.g. `L4` or `H100:2`");
        let (kind, count) = match text.split_once(':') {
            Some((kind, count)) => (kind, count.parse().map_err(|_| bad())?),
            None => (text, 1),
        };
        if !is_accelerator_name(kind) || count == 0 {
            return Err(bad());
        }
        Ok((kind.to_owned(), count))
    }
}

/// An accelerator type: an uppercase ASCII letter, then letters or digits.
pub(crate) fn is_accelerator_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_types() {
        let cpu = Resources::from_instance_type("4x16").unwrap();
        assert_eq!(
            (cpu.cpu_millis, cpu.memory_mib, cpu.accelerator),
            (4000, 16384, None)
        );
        let l4 = Resources::from_instance_type("L4:4x16").unwrap();
        assert_eq!(l4.accelerator, Some(("L4".into(), 1)));
        let h100 = Resources::from_instance_type("H100:2").unwrap();
        assert_eq!(h100.accelerator, Some(("H100".into(), 2)));
        for bad in ["", "4", "0x2", "x16", "l4:4x16", "H100:0", "4x16x2"] {
            assert!(Resources::from_instance_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_and_accelerators() {
        assert_eq!(Resources::parse_memory("16Gi"), Ok(16384));
        assert_eq!(Resources::parse_memory("512Mi"), Ok(512));
        assert!(Resources::parse_memory("lots").is_err());
        assert_eq!(
            Resources::parse_accelerator("H100:2"),
            Ok(("H100".into(), 2))
        );
        assert!(Resources::parse_accelerator("h100").is_err());
    }
}
