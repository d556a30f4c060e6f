//! The machine description and the table of results.
use std::fmt::Write as _;

use super::schema::{Machine, Results};
use crate::util::output;

pub fn utc_now() -> String {
    output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |text: &str, key: &str| -> Option<String> {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    Machine {
        kernel: output("uname", &["-r"])
            .unwrap_or_default()
            .trim()
            .to_owned(),
        cpu: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_mib: field(&meminfo, "MemTotal")
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024),
        rustc: output("rustc", &["--version"])
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

fn num(x: f64) -> String {
    if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// Markdown: the table of figures against their goals, then each figure's details
/// and notes.
pub fn markdown(r: &Results) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "sockscope benchmarks, {} ({}run), kernel {}, {} x {}, {} MiB, {}\n",
        r.date,
        if r.quick { "quick " } else { "full " },
        m.kernel,
        m.cores,
        m.cpu,
        m.memory_mib,
        m.rustc
    );
    let _ = writeln!(s, "| figure | median | range (n) | unit | goal | |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for f in &r.figures {
        let (median, range) = match f.value {
            Some(v) => (
                num(v.median),
                format!("{} – {} ({})", num(v.min), num(v.max), v.n),
            ),
            None => ("–".into(), "–".into()),
        };
        let goal = f
            .goal
            .map_or(String::new(), |g| format!("≤ {}", num(g.at_most)));
        let met = match f.met() {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "",
        };
        let _ = writeln!(
            s,
            "| {} | {median} | {range} | {} | {goal} | {met} |",
            f.title, f.unit
        );
    }
    let _ = writeln!(s);
    for f in &r.figures {
        if f.details.is_empty() && f.notes.is_empty() {
            continue;
        }
        let _ = writeln!(s, "- **{}** (`{}`)", f.title, f.id);
        if !f.details.is_empty() {
            let d: Vec<String> = f
                .details
                .iter()
                .map(|(k, v)| format!("{k} = {}", num(*v)))
                .collect();
            let _ = writeln!(s, "  - {}", d.join("; "));
        }
        for n in &f.notes {
            let _ = writeln!(s, "  - {n}");
        }
    }
    s
}
