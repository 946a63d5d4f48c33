//! Typed values parsed once from text: byte sizes, Linux capabilities and CPU lists. Parsing
//! only, no I/O.

use std::fmt;
use std::str::FromStr;

/// A size in bytes, written as Docker and schedulers write it: `4g`, `4096m`, `512k`, `1.5G`,
/// `65536` (bytes). Units are binary (k = 1024), case-insensitive, with an optional `b`/`ib`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;
    /// The largest size Docker's API can carry (it takes sizes as i64).
    pub const MAX: u64 = i64::MAX as u64;

    /// `bytes`, if Docker's API can carry it: a `ByteSize` never holds more than `MAX`.
    pub const fn new(bytes: u64) -> Option<ByteSize> {
        if bytes <= Self::MAX {
            Some(ByteSize(bytes))
        } else {
            None
        }
    }

    /// `bytes`, which the caller knows to be at most `MAX` (a constant, a test's literal);
    /// panics otherwise (at compile time in a constant).
    #[track_caller]
    pub const fn exact(bytes: u64) -> ByteSize {
        assert!(bytes <= Self::MAX, "a ByteSize is at most i64::MAX bytes");
        ByteSize(bytes)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// A count of bytes someone reported (dockerd, a file system), as `Display` shows a size; one
    /// no ByteSize can hold is shown in bytes.
    pub fn shown(n: u64) -> String {
        ByteSize::new(n).map_or_else(|| format!("{n} B"), |b| b.to_string())
    }

    /// The size as the Engine API spells it, an i64: always in range, never the -1 ("no limit")
    /// that `as i64` once made of u64::MAX.
    pub fn api(self) -> i64 {
        i64::try_from(self.0).expect("a ByteSize is at most i64::MAX bytes")
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a size (examples: 4g, 512m, 65536)");
        let lower = text.trim().to_ascii_lowercase();
        let split = lower
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(lower.len());
        let (number, unit) = lower.split_at(split);
        let multiplier = match unit.trim_start() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => Self::KIB,
            "m" | "mb" | "mib" => Self::MIB,
            "g" | "gb" | "gib" => Self::GIB,
            "t" | "tb" | "tib" => Self::GIB * 1024,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let mut bytes = whole.checked_mul(multiplier).ok_or_else(bad)?;
        if !fraction.is_empty() {
            // Exact decimal fraction of the unit, truncated to whole bytes.
            let digits = fraction.len().min(9);
            let numerator: u64 = fraction[..digits].parse().map_err(|_| bad())?;
            // Below one unit: a u64 (the unit is).
            let part = u128::from(numerator) * u128::from(multiplier)
                / 10u128.pow(u32::try_from(digits).expect("at most 9"));
            bytes = bytes
                .checked_add(u64::try_from(part).map_err(|_| bad())?)
                .ok_or_else(bad)?;
        }
        ByteSize::new(bytes).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    /// `4.0 GiB`, `512.0 MiB`: what an admin reads in a message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        let (value, unit) = match self.0 {
            n if n >= Self::GIB => (b / Self::GIB as f64, "GiB"),
            n if n >= Self::MIB => (b / Self::MIB as f64, "MiB"),
            n if n >= Self::KIB => (b / Self::KIB as f64, "KiB"),
            _ => return write!(f, "{} B", self.0),
        };
        write!(f, "{value:.1} {unit}")
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => ByteSize::new(n).ok_or_else(|| {
                serde::de::Error::custom(format!("{n} is more than Docker can take (8 EiB)"))
            }),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

macro_rules! capabilities {
    ($($name:ident),* $(,)?) => {
        /// A Linux capability, by its kernel name without `CAP_`. An exhaustive list, so an
        /// unknown name in the config is an error rather than something passed to dockerd.
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Capability { $($name),* }

        impl Capability {
            pub const ALL: &[Capability] = &[$(Capability::$name),*];

            /// The kernel's name without the `CAP_` prefix, e.g. `SYS_NICE`.
            pub fn name(self) -> &'static str {
                match self { $(Capability::$name => stringify!($name)),* }
            }
        }
    };
}

capabilities!(
    CHOWN,
    DAC_OVERRIDE,
    DAC_READ_SEARCH,
    FOWNER,
    FSETID,
    KILL,
    SETGID,
    SETUID,
    SETPCAP,
    LINUX_IMMUTABLE,
    NET_BIND_SERVICE,
    NET_BROADCAST,
    NET_ADMIN,
    NET_RAW,
    IPC_LOCK,
    IPC_OWNER,
    SYS_MODULE,
    SYS_RAWIO,
    SYS_CHROOT,
    SYS_PTRACE,
    SYS_PACCT,
    SYS_ADMIN,
    SYS_BOOT,
    SYS_NICE,
    SYS_RESOURCE,
    SYS_TIME,
    SYS_TTY_CONFIG,
    MKNOD,
    LEASE,
    AUDIT_WRITE,
    AUDIT_CONTROL,
    SETFCAP,
    MAC_OVERRIDE,
    MAC_ADMIN,
    SYSLOG,
    WAKE_ALARM,
    BLOCK_SUSPEND,
    AUDIT_READ,
    PERFMON,
    BPF,
    CHECKPOINT_RESTORE,
);

impl Capability {
    /// Capabilities no site may grant to a job, whatever `security.cap_add` says: each one lets a
    /// process bypass file permissions, change identity, or reach the kernel or other jobs.
    pub const FORBIDDEN: &[Capability] = &[
        Capability::DAC_OVERRIDE,
        Capability::DAC_READ_SEARCH,
        Capability::FOWNER,
        Capability::FSETID,
        Capability::SETGID,
        Capability::SETUID,
        Capability::LINUX_IMMUTABLE,
        Capability::NET_ADMIN,
        Capability::SYS_MODULE,
        Capability::SYS_RAWIO,
        Capability::SYS_CHROOT,
        Capability::SYS_PTRACE,
        Capability::SYS_ADMIN,
        Capability::SYS_BOOT,
        Capability::SYS_TIME,
        Capability::MKNOD,
        Capability::AUDIT_CONTROL,
        Capability::SETFCAP,
        Capability::MAC_OVERRIDE,
        Capability::MAC_ADMIN,
        Capability::SYSLOG,
        Capability::PERFMON,
        Capability::BPF,
        Capability::CHECKPOINT_RESTORE,
    ];

    /// The built-in allowlist: what seed 004's site grants.
    pub const DEFAULT_ALLOW: &[Capability] = &[
        Capability::CHOWN,
        Capability::KILL,
        Capability::SETPCAP,
        Capability::IPC_LOCK,
        Capability::SYS_NICE,
    ];

    /// `CAP_SYS_NICE` as dockerd names it in `CapAdd`.
    pub fn docker_name(self) -> String {
        format!("CAP_{}", self.name())
    }
}

impl FromStr for Capability {
    type Err = String;

    /// `SYS_NICE`, `sys_nice` and `CAP_SYS_NICE` all name the same capability.
    fn from_str(text: &str) -> Result<Self, String> {
        let upper = text.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        Capability::ALL
            .iter()
            .copied()
            .find(|c| c.name() == bare)
            .ok_or_else(|| format!("{text:?} is not a Linux capability"))
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of CPUs in the kernel's list format, as cpusets and `Cpus_allowed_list` write it:
/// `0-3,8`. Sorted, without duplicates, never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    /// The highest CPU number taken: the kernel's own limit (`CONFIG_NR_CPUS`) is 8192.
    pub const MAX_CPU: usize = 8191;

    /// `None` for no CPUs or one above [`CpuList::MAX_CPU`].
    pub fn new(mut cpus: Vec<usize>) -> Option<CpuList> {
        cpus.sort_unstable();
        cpus.dedup();
        (!cpus.is_empty() && cpus.iter().all(|&c| c <= Self::MAX_CPU)).then_some(CpuList(cpus))
    }

    pub fn cpus(&self) -> &[usize] {
        &self.0
    }

    /// How many CPUs: at least one.
    pub fn count(&self) -> usize {
        self.0.len()
    }
}

impl FromStr for CpuList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a CPU list like 0-3,8");
        let number = |n: &str| {
            n.parse::<usize>()
                .ok()
                .filter(|&c| c <= Self::MAX_CPU && n.bytes().all(|b| b.is_ascii_digit()))
        };
        let mut cpus = Vec::new();
        for part in text.trim().split(',') {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (number(a).ok_or_else(bad)?, number(b).ok_or_else(bad)?),
                None => {
                    let c = number(part).ok_or_else(bad)?;
                    (c, c)
                }
            };
            if first > last {
                return Err(bad());
            }
            cpus.extend(first..=last);
        }
        CpuList::new(cpus).ok_or_else(bad)
    }
}

impl fmt::Display for CpuList {
    /// `[0, 1, 2, 5]` -> `0-2,5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        while i < self.0.len() {
            let start = self.0[i];
            while i + 1 < self.0.len() && self.0[i + 1] == self.0[i] + 1 {
                i += 1;
            }
            if i > 0 && start != self.0[0] {
                f.write_str(",")?;
            }
            if self.0[i] == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{}", self.0[i])?;
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        for (text, cpus, shown) in [
            ("0", vec![0], "0"),
            ("0-3,8", vec![0, 1, 2, 3, 8], "0-3,8"),
            ("5,0-1,1", vec![0, 1, 5], "0-1,5"),
            ("0,2,4,5", vec![0, 2, 4, 5], "0,2,4-5"),
            ("2,4,6\n", vec![2, 4, 6], "2,4,6"),
        ] {
            let list: CpuList = text.parse().unwrap();
            assert_eq!(list.cpus(), cpus, "{text:?}");
            assert_eq!(list.to_string(), shown, "{text:?}");
            assert_eq!(list.count(), cpus.len());
        }
        for bad in ["", "-", "3-1", "a", "0,,1", "+1", "0-8192", "1 2"] {
            assert!(bad.parse::<CpuList>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn byte_sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("4g", Some(4 * ByteSize::GIB)),
            ("4G", Some(4 * ByteSize::GIB)),
            ("4096m", Some(4096 * ByteSize::MIB)),
            ("512k", Some(512 * 1024)),
            ("1.5g", Some(3 * ByteSize::GIB / 2)),
            ("16GiB", Some(16 * ByteSize::GIB)),
            ("65536", Some(65536)),
            ("", None),
            ("g", None),
            ("-1g", None),
            ("4x", None),
            ("1e9", None),
            ("99999999999999999999g", None),
            ("9000000000g", None),
            ("4 g", Some(4 * ByteSize::GIB)),
            ("4g;rm", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                text.parse::<ByteSize>().ok().map(|b| b.0),
                *want,
                "{text:?}"
            );
        }
    }

    #[test]
    fn byte_size_display_is_readable() {
        assert_eq!(ByteSize(4 * ByteSize::GIB).to_string(), "4.0 GiB");
        assert_eq!(ByteSize(512 * ByteSize::MIB).to_string(), "512.0 MiB");
        assert_eq!(ByteSize(10).to_string(), "10 B");
    }

    #[test]
    fn capability_names() {
        assert_eq!("sys_nice".parse::<Capability>(), Ok(Capability::SYS_NICE));
        assert_eq!(
            "CAP_SYS_NICE".parse::<Capability>(),
            Ok(Capability::SYS_NICE)
        );
        assert_eq!("IPC_LOCK".parse::<Capability>(), Ok(Capability::IPC_LOCK));
        assert!("ALL".parse::<Capability>().is_err());
        assert!("CAP_".parse::<Capability>().is_err());
        assert!("SYS_NICE,SYS_ADMIN".parse::<Capability>().is_err());
        assert_eq!(Capability::ALL.len(), 41);
        for cap in Capability::DEFAULT_ALLOW {
            assert!(!Capability::FORBIDDEN.contains(cap));
        }
    }
}
