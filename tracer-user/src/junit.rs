//! `check --junit FILE`: the run as JUnit XML, the format CI systems show test results
//! from (GitHub test reporters, GitLab `artifacts:reports:junit`, Jenkins). One test
//! suite per command run, one test case per PeerConnection judged: a leak is a failure
//! whose message is the leak's one-line report and whose text holds the creating
//! stacks; an incomplete verdict is an error (no verdict could be given); a
//! PeerConnection left open with sockets at its process's exit is a failure under
//! `--strict`, else skipped with the warning.
use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    correlate::{Finding, PcOutcome, PcVerdict, UnclosedPc},
    report::{Summary, write_finding_text},
};

/// What a test case concluded.
enum CaseResult {
    Passed,
    Failure {
        kind: &'static str,
        message: String,
        text: String,
    },
    Error {
        message: String,
        text: String,
    },
    Skipped {
        message: String,
    },
}

struct Case {
    name: String,
    classname: String,
    seconds: f64,
    result: CaseResult,
}

/// Text of a finding as `report` prints it: first line, and everything.
fn finding_text(f: &Finding) -> (String, String) {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_finding_text(&mut buf, f);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let first = text.lines().next().unwrap_or_default().to_owned();
    (first, text)
}

/// The findings about one PeerConnection, in the order they came.
type PerPc<'a> = BTreeMap<(u32, u64), Vec<&'a Finding>>;

fn by_pc(findings: &[Finding]) -> PerPc<'_> {
    let mut m = PerPc::new();
    for f in findings {
        let key = match f {
            Finding::Leak(l) => (l.pid, l.pc_id),
            Finding::PossibleLeak(p) => (p.pid, p.pc_id),
            Finding::Verdict(_) | Finding::Late { .. } | Finding::Unclosed(_) => continue,
        };
        m.entry(key).or_default().push(f);
    }
    m
}

fn verdict_case(v: &PcVerdict, about: &[&Finding]) -> Case {
    let (verdict_line, _) = finding_text(&Finding::Verdict(v.clone()));
    let details: String = about.iter().map(|f| finding_text(f).1).collect();
    let result = match v.outcome {
        PcOutcome::Clean => CaseResult::Passed,
        PcOutcome::Leak => {
            let first_leak = about
                .iter()
                .find(|f| matches!(f, Finding::Leak(_)))
                .map(|f| finding_text(f).0);
            CaseResult::Failure {
                kind: "leak",
                message: first_leak.unwrap_or(verdict_line),
                text: details,
            }
        }
        PcOutcome::Incomplete => CaseResult::Error {
            message: verdict_line,
            text: details,
        },
    };
    Case {
        name: format!("pid {} pc_id {}", v.pid, v.pc_id),
        classname: format!("sockscope.pid{}", v.pid),
        seconds: v.life_ns.unwrap_or(0) as f64 / 1e9,
        result,
    }
}

fn unclosed_case(u: &UnclosedPc, strict: bool) -> Case {
    let (message, text) = finding_text(&Finding::Unclosed(u.clone()));
    Case {
        name: format!("pid {} pc_id {}", u.pid, u.pc_id),
        classname: format!("sockscope.pid{}", u.pid),
        seconds: 0.0,
        result: if strict {
            CaseResult::Failure {
                kind: "unclosed",
                message,
                text,
            }
        } else {
            CaseResult::Skipped {
                message: format!("warning (a failure with --strict): {message}"),
            }
        },
    }
}

/// Text made safe for XML: markup escaped, characters XML 1.0 forbids dropped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// The whole run as a JUnit XML document.
pub fn render(
    findings: &[Finding],
    summary: &Summary,
    strict: bool,
    seconds: f64,
    timestamp: &str,
) -> String {
    let about = by_pc(findings);
    let mut cases: Vec<Case> = Vec::new();
    for f in findings {
        match f {
            Finding::Verdict(v) => {
                let mine = about.get(&(v.pid, v.pc_id)).map_or(&[][..], Vec::as_slice);
                cases.push(verdict_case(v, mine));
            }
            Finding::Unclosed(u) => cases.push(unclosed_case(u, strict)),
            _ => {}
        }
    }
    let command = summary.command.join(" ");
    if let Some(status) = &summary.command_status
        && !status.ends_with("status 0")
    {
        cases.push(Case {
            name: format!("command `{command}`"),
            classname: "sockscope.command".into(),
            seconds,
            result: CaseResult::Error {
                message: format!("the command {status}: no clean verdict can be given"),
                text: String::new(),
            },
        });
    }
    if summary.lost > 0 {
        cases.push(Case {
            name: "events".into(),
            classname: "sockscope.kernel".into(),
            seconds: 0.0,
            result: CaseResult::Error {
                message: format!(
                    "{} events were lost: no clean verdict can be given (raise --ring-bytes)",
                    summary.lost
                ),
                text: String::new(),
            },
        });
    }
    let count = |p: fn(&CaseResult) -> bool| cases.iter().filter(|c| p(&c.result)).count();
    let failures = count(|r| matches!(r, CaseResult::Failure { .. }));
    let errors = count(|r| matches!(r, CaseResult::Error { .. }));
    let skipped = count(|r| matches!(r, CaseResult::Skipped { .. }));
    let suite = escape(&format!("sockscope check: {command}"));
    let mut x = String::new();
    // Writing to a String cannot fail: the results of write! are ignored below.
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        x,
        r#"<testsuites name="{suite}" tests="{}" failures="{failures}" errors="{errors}" skipped="{skipped}" time="{seconds:.3}">"#,
        cases.len()
    );
    let _ = writeln!(
        x,
        r#"  <testsuite name="{suite}" tests="{}" failures="{failures}" errors="{errors}" skipped="{skipped}" time="{seconds:.3}" timestamp="{}">"#,
        cases.len(),
        escape(timestamp)
    );
    let _ = writeln!(x, "    <properties>");
    for (name, value) in [
        ("command", command.clone()),
        (
            "command_status",
            summary.command_status.clone().unwrap_or_default(),
        ),
        ("grace_ms", summary.grace_ms.to_string()),
        ("strict", strict.to_string()),
        ("events", summary.events.to_string()),
        ("lost", summary.lost.to_string()),
    ] {
        let _ = writeln!(
            x,
            r#"      <property name="{name}" value="{}"/>"#,
            escape(&value)
        );
    }
    let _ = writeln!(x, "    </properties>");
    for c in &cases {
        let _ = write!(
            x,
            r#"    <testcase classname="{}" name="{}" time="{:.3}""#,
            escape(&c.classname),
            escape(&c.name),
            c.seconds
        );
        match &c.result {
            CaseResult::Passed => {
                let _ = writeln!(x, "/>");
            }
            CaseResult::Failure {
                kind,
                message,
                text,
            } => {
                let _ = writeln!(
                    x,
                    ">\n      <failure type=\"{kind}\" message=\"{}\">{}</failure>\n    </testcase>",
                    escape(message),
                    escape(text)
                );
            }
            CaseResult::Error { message, text } => {
                let _ = writeln!(
                    x,
                    ">\n      <error type=\"incomplete\" message=\"{}\">{}</error>\n    </testcase>",
                    escape(message),
                    escape(text)
                );
            }
            CaseResult::Skipped { message } => {
                let _ = writeln!(
                    x,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    escape(message)
                );
            }
        }
    }
    let mut summary_text = Vec::new();
    let _ = crate::report::write_summary(&mut summary_text, summary, crate::output::Format::Text);
    let _ = writeln!(
        x,
        "    <system-out>{}</system-out>",
        escape(&String::from_utf8_lossy(&summary_text))
    );
    let _ = writeln!(x, "  </testsuite>\n</testsuites>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_what_xml_forbids() {
        assert_eq!(escape("a<b>&\"'\u{1}c\n"), "a&lt;b&gt;&amp;&quot;&apos;c\n");
    }
}
