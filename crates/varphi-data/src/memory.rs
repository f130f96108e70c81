//! Memory estimates before large allocations: a request larger than this machine's available
//! memory is refused with a one-line error that states the size and the setting to change,
//! instead of an allocation failure that aborts the process.

use crate::error::DataError;

/// Bytes of memory available to this process (Linux: `MemAvailable` of `/proc/meminfo`; the
/// environment variable `VARPHI_MEMORY_LIMIT` in bytes overrides it, e.g. for tests). `None`
/// where it cannot be told.
pub fn available_bytes() -> Option<u64> {
    if let Some(v) = std::env::var("VARPHI_MEMORY_LIMIT")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return Some(v);
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `bytes` in B, KiB, MiB, GiB, TiB or PiB, three significant figures.
pub fn human(bytes: u128) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.3} {}", units[u])
    }
}

/// Refuse `bytes` for `what` when it exceeds the available memory; `fix` names the setting to
/// change. A machine whose available memory cannot be read is not checked.
pub fn check(bytes: u128, what: &str, fix: &str) -> Result<(), DataError> {
    match available_bytes() {
        Some(avail) if bytes > avail as u128 => Err(DataError::Memory {
            what: what.to_string(),
            needed: human(bytes),
            available: human(avail as u128),
            fix: fix.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_printed_in_binary_units_and_huge_requests_are_refused() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 * 1024 * 1024 / 2), "1.500 MiB");
        assert_eq!(human(819_200_000_000_000), "745.058 TiB");
        let err = check(u128::MAX, "a test", "ask for less")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a test needs") && err.contains("ask for less"),
            "{err}"
        );
        check(1, "a byte", "none").unwrap();
    }
}
