//! Says when the ring reader fell behind, and on what. The ring holds a fraction of a
//! second of records at a busy host's rate: a reader that waits longer than that, for
//! the CPU or on its own work, loses records. Those losses are counted by the kernel
//! but say nothing of their cause; this says whether the reader was late to wake (the
//! machine) or slow to read (which of its steps), so a loss can be acted on.
use std::time::{Duration, Instant};

/// A pass or a wake-up this late is reported: the default 1 MiB ring fills in about this
/// long at 170k records/s.
const SLOW: Duration = Duration::from_millis(100);

/// At most one report per this interval (the others are counted into it).
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Steps of a pass whose time is kept apart.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// Reading /proc/PID/maps and opening objects for a new stack.
    Normalize,
    /// Forgetting an exited process's stacks (map deletions).
    Exit,
    /// DWARF unwinding of a sample.
    Unwind,
}

const STEPS: [(Step, &str); 3] = [
    (Step::Normalize, "normalizing new stacks"),
    (Step::Exit, "forgetting exited processes"),
    (Step::Unwind, "unwinding samples"),
];

#[derive(Debug)]
pub struct PassTimer {
    /// When the reader last went to sleep, and for how long at most.
    slept: Option<(Instant, Duration)>,
    /// When the current pass began.
    began: Instant,
    steps: [(Duration, u32); 3],
    records: usize,
    last_report: Option<Instant>,
    /// Slow passes not reported yet (rate limit).
    unreported: u32,
}

impl Default for PassTimer {
    fn default() -> Self {
        Self {
            slept: None,
            began: Instant::now(),
            steps: [(Duration::ZERO, 0); 3],
            records: 0,
            last_report: None,
            unreported: 0,
        }
    }
}

impl PassTimer {
    /// A pass begins.
    pub fn begin(&mut self) {
        self.began = Instant::now();
        self.steps = [(Duration::ZERO, 0); 3];
        self.records = 0;
    }

    /// Runs `f` as one `step` of the pass.
    pub fn time<T>(&mut self, step: Step, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        let s = &mut self.steps[step as usize];
        s.0 += t.elapsed();
        s.1 += 1;
        out
    }

    /// The pass read `records` and is over; the reader now sleeps `timeout` at most.
    /// Returns the report to print, if the pass or the wake-up before it was slow.
    pub fn end(&mut self, records: usize, sleeps_for: Option<Duration>) -> Option<String> {
        let now = Instant::now();
        self.records = records;
        let took = now - self.began;
        let woke_late = self
            .slept
            .map(|(at, timeout)| (self.began - at).saturating_sub(timeout))
            .unwrap_or_default();
        self.slept = sleeps_for.map(|t| (now, t));
        if took < SLOW && woke_late < SLOW {
            return None;
        }
        if self
            .last_report
            .is_some_and(|at| now.duration_since(at) < REPORT_EVERY)
        {
            self.unreported += 1;
            return None;
        }
        self.last_report = Some(now);
        let others = std::mem::take(&mut self.unreported);
        Some(self.describe(took, woke_late, others))
    }

    fn describe(&self, took: Duration, woke_late: Duration, others: u32) -> String {
        let mut why = Vec::new();
        if woke_late >= SLOW {
            why.push(format!(
                "woke {} ms after the ring was due to be read (the machine did not give it the CPU)",
                woke_late.as_millis()
            ));
        }
        if took >= SLOW {
            let mut steps: Vec<String> = STEPS
                .iter()
                .filter(|(s, _)| self.steps[*s as usize].1 > 0)
                .map(|(s, name)| {
                    let (t, n) = self.steps[*s as usize];
                    format!("{name} {} ms ({n})", t.as_millis())
                })
                .collect();
            if steps.is_empty() {
                steps.push("no step stood out".into());
            }
            why.push(format!(
                "took {} ms to read {} records: {}",
                took.as_millis(),
                self.records,
                steps.join(", ")
            ));
        }
        let others = if others > 0 {
            format!(" ({others} more slow passes since the last report)")
        } else {
            String::new()
        };
        format!(
            "sockscope: the ring reader fell behind: {}{others}; records arriving meanwhile may be lost",
            why.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_pass_says_nothing_and_a_slow_step_is_named() {
        let mut t = PassTimer::default();
        t.begin();
        t.time(Step::Normalize, || ());
        assert_eq!(t.end(10, Some(Duration::from_millis(10))), None);
        t.begin();
        t.time(Step::Exit, || {
            std::thread::sleep(SLOW + Duration::from_millis(5))
        });
        let report = t.end(3, None).expect("a slow pass is reported");
        assert!(report.contains("forgetting exited processes"), "{report}");
        assert!(report.contains("3 records"), "{report}");
        // Rate-limited: the next slow pass within the interval is only counted.
        t.begin();
        t.time(Step::Exit, || {
            std::thread::sleep(SLOW + Duration::from_millis(5))
        });
        assert_eq!(t.end(1, None), None);
        assert_eq!(t.unreported, 1);
    }

    #[test]
    fn a_late_wakeup_is_told_from_a_slow_pass() {
        let mut t = PassTimer::default();
        t.begin();
        assert_eq!(t.end(0, Some(Duration::ZERO)), None);
        std::thread::sleep(SLOW + Duration::from_millis(5));
        t.begin();
        let report = t.end(0, Some(Duration::ZERO)).expect("late wake-up");
        assert!(report.contains("did not give it the CPU"), "{report}");
        assert!(!report.contains("took"), "{report}");
    }
}
