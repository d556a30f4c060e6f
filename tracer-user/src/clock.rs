//! BPF timestamps are CLOCK_MONOTONIC nanoseconds; people want wall-clock times.
use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock time at monotonic zero.
    wall_at_zero: SystemTime,
}

pub use tracer_common::monotonic_ns;

impl Clock {
    pub fn new() -> Self {
        let mono = Duration::from_nanos(monotonic_ns());
        let now = SystemTime::now();
        Self {
            wall_at_zero: now.checked_sub(mono).unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }

    /// A clock whose monotonic zero is at `wall_at_zero` (tests pin printed times).
    #[cfg(test)]
    pub fn from_wall_at_zero(wall_at_zero: SystemTime) -> Self {
        Self { wall_at_zero }
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        self.wall_at_zero + Duration::from_nanos(mono_ns)
    }

    /// RFC 3339 with microseconds, UTC.
    pub fn format(&self, mono_ns: u64) -> String {
        humantime::format_rfc3339_micros(self.wall(mono_ns)).to_string()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// A short human duration: `850µs`, `12.3ms`, `4.20s`, `3m07s`.
pub fn human_ns(ns: u64) -> String {
    let us = ns / 1_000;
    match ns {
        n if n < 1_000_000 => format!("{us}µs"),
        n if n < 1_000_000_000 => format!("{:.1}ms", n as f64 / 1e6),
        n if n < 60_000_000_000 => format!("{:.2}s", n as f64 / 1e9),
        n => format!("{}m{:02}s", n / 60_000_000_000, (n / 1_000_000_000) % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human_ns(850_000), "850µs");
        assert_eq!(human_ns(12_300_000), "12.3ms");
        assert_eq!(human_ns(4_200_000_000), "4.20s");
        assert_eq!(human_ns(187_000_000_000), "3m07s");
    }
}
