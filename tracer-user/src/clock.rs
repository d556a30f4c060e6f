//! BPF timestamps are CLOCK_MONOTONIC nanoseconds; people want wall-clock times.
use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock time at monotonic zero.
    wall_at_zero: SystemTime,
    /// The same, in nanoseconds since the Unix epoch.
    zero_unix_ns: u64,
}

pub use tracer_common::monotonic_ns;

impl Clock {
    pub fn new() -> Self {
        let mono = Duration::from_nanos(monotonic_ns());
        let now = SystemTime::now();
        Self::at(now.checked_sub(mono).unwrap_or(SystemTime::UNIX_EPOCH))
    }

    fn at(wall_at_zero: SystemTime) -> Self {
        let zero_unix_ns = wall_at_zero
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self {
            wall_at_zero,
            zero_unix_ns,
        }
    }

    /// A clock whose monotonic zero is at `wall_at_zero` (tests pin printed times).
    #[cfg(test)]
    pub fn from_wall_at_zero(wall_at_zero: SystemTime) -> Self {
        Self::at(wall_at_zero)
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        self.wall_at_zero + Duration::from_nanos(mono_ns)
    }

    /// RFC 3339 with microseconds, UTC.
    pub fn format(&self, mono_ns: u64) -> String {
        humantime::format_rfc3339_micros(self.wall(mono_ns)).to_string()
    }

    /// The wall-clock time of `mono_ns`, formatted only when printed (what
    /// [`Self::format`] gives, without its allocation and `fmt` machinery).
    pub fn wall_time(&self, mono_ns: u64) -> WallTime {
        WallTime {
            unix_us: self.zero_unix_ns.saturating_add(mono_ns) / 1_000,
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// A wall-clock time to the microsecond, printed as RFC 3339 in UTC
/// (`2026-11-25T02:26:53.123456Z`), as `humantime::format_rfc3339_micros` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallTime {
    unix_us: u64,
}

/// Bytes of a [`WallTime`] printed.
pub const RFC3339_MICROS_LEN: usize = 27;

impl WallTime {
    /// The RFC 3339 text, on the stack. u64 microseconds reach the year 586912, but
    /// wall times come from a u64 of nanoseconds (year 2554): four year digits suffice.
    pub fn rfc3339(self) -> [u8; RFC3339_MICROS_LEN] {
        let secs = self.unix_us / 1_000_000;
        let micros = (self.unix_us % 1_000_000) as u32;
        let (days, sod) = (secs / 86_400, (secs % 86_400) as u32);
        // Civil date from days since 1970-01-01 (H. Hinnant's `civil_from_days`,
        // days >= 0 only).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + u64::from(month <= 2)) as u32;
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut v: u32| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, sod / 3_600);
        put(14, 2, sod / 60 % 60);
        put(17, 2, sod % 60);
        put(20, 6, micros);
        out
    }
}

/// The text of the last [`WallTime`] printed, so that times within one second only
/// change their microseconds (records come in bursts: the date and clock digits are
/// printed once a second rather than once a record).
#[derive(Clone, Debug)]
pub struct Rfc3339Cache {
    secs: u64,
    text: [u8; RFC3339_MICROS_LEN],
}

impl Default for Rfc3339Cache {
    fn default() -> Self {
        let t = WallTime { unix_us: 0 };
        Self {
            secs: 0,
            text: t.rfc3339(),
        }
    }
}

impl Rfc3339Cache {
    /// `t.rfc3339()`.
    pub fn format(&mut self, t: WallTime) -> &[u8; RFC3339_MICROS_LEN] {
        let secs = t.unix_us / 1_000_000;
        if secs != self.secs {
            self.secs = secs;
            self.text = t.rfc3339();
        } else {
            let mut v = (t.unix_us % 1_000_000) as u32;
            for b in self.text[20..26].iter_mut().rev() {
                *b = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        &self.text
    }
}

impl std::fmt::Display for WallTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.rfc3339();
        // Only ASCII digits and separators.
        f.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?)
    }
}

impl serde::Serialize for WallTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A short human duration: `850µs`, `12.3ms`, `4.20s`, `3m07s`.
pub fn human_ns(ns: u64) -> String {
    HumanNs(ns).to_string()
}

/// [`human_ns`], printed where it goes without a `String` of its own.
#[derive(Clone, Copy, Debug)]
pub struct HumanNs(pub u64);

impl std::fmt::Display for HumanNs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = self.0;
        let us = ns / 1_000;
        match ns {
            n if n < 1_000_000 => write!(f, "{us}µs"),
            n if n < 1_000_000_000 => write!(f, "{:.1}ms", n as f64 / 1e6),
            n if n < 60_000_000_000 => write!(f, "{:.2}s", n as f64 / 1e9),
            n => write!(f, "{}m{:02}s", n / 60_000_000_000, (n / 1_000_000_000) % 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_times_print_as_humantime_does() {
        let clock = Clock::from_wall_at_zero(SystemTime::UNIX_EPOCH);
        // Epoch, leap days, century rules (2000 leap, 2100 not), year ends, the
        // largest u64 of nanoseconds.
        for unix_ns in [
            0,
            999,
            1_000,
            951_782_400_000_000_000,   // 2000-02-29
            951_868_799_999_999_999,   // 2000-02-29T23:59:59.999999
            4_107_542_400_000_000_000, // 2100-03-01
            4_107_455_999_999_999_000, // 2100-02-28T23:59:59.999999
            1_767_225_599_999_999_000, // 2025-12-31T23:59:59.999999
            1_764_037_613_123_456_789,
            u64::MAX,
        ] {
            let want = humantime::format_rfc3339_micros(
                SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_ns),
            )
            .to_string();
            assert_eq!(clock.wall_time(unix_ns).to_string(), want, "{unix_ns}");
        }
    }

    proptest::proptest! {
        #[test]
        fn cached_times_are_the_times(start in 0u64..u64::MAX / 1_000 / 2, steps in proptest::collection::vec(0u64..3_000_000, 1..50)) {
            let mut cache = Rfc3339Cache::default();
            let mut us = start;
            // Forwards, then the same times backwards (records of another CPU can be
            // a little older than the last one printed).
            let mut times = vec![start];
            for s in &steps {
                us += s;
                times.push(us);
            }
            let back: Vec<u64> = times.iter().rev().copied().collect();
            for us in times.into_iter().chain(back).chain([0]) {
                let t = WallTime { unix_us: us };
                proptest::prop_assert_eq!(cache.format(t), &t.rfc3339());
            }
        }

        #[test]
        fn any_wall_time_prints_as_humantime_does(zero in 0u64..u64::MAX / 2, mono in 0u64..u64::MAX / 2) {
            let wall_at_zero = SystemTime::UNIX_EPOCH + Duration::from_nanos(zero);
            let clock = Clock::from_wall_at_zero(wall_at_zero);
            proptest::prop_assert_eq!(clock.wall_time(mono).to_string(), clock.format(mono));
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_ns(850_000), "850µs");
        assert_eq!(human_ns(12_300_000), "12.3ms");
        assert_eq!(human_ns(4_200_000_000), "4.20s");
        assert_eq!(human_ns(187_000_000_000), "3m07s");
    }
}
