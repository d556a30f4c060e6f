//! What each kernel must pass (by backend), the verdicts read from a console, and the
//! kernel × backend × check table.
use std::{collections::BTreeMap, fs, path::Path};

/// The backends, in `sockscope`'s automatic order.
const BACKENDS: [&str; 3] = ["fentry", "cgroup", "kprobe"];

/// Checks of the kernel as a whole (backend column `auto`).
const KERNEL_CHECKS: &[&str] = &["doctor", "doctor_choice"];

/// Checks of each backend that works; one missing is a failure too.
const BACKEND_CHECKS: &[&str] = &[
    "trace_exit",
    "trace_creates",
    "trace_releases",
    "trace_paired",
    "trace_fds",
    "trace_ports",
    "trace_fixed_port_bind",
    "trace_release_stack",
    "trace_release_stack_named",
    "check_leak_exit",
    "check_leak_pc2",
    "check_leak_stack",
    "check_late_released_by",
    "check_late_release_stack",
    "check_late_release_stack_dwarf",
    "check_clean_exit",
];

/// Checks of a backend the kernel refuses.
const REFUSED_CHECKS: &[&str] = &["refused_exit", "refused_one_line"];

/// What a kernel must do: the backend `doctor` picks, those that must work.
pub(super) struct Expect {
    auto: &'static str,
    working: Vec<&'static str>,
    /// The kernel copies user registers and stacks for DWARF unwinding
    /// (`bpf_task_pt_regs`, Linux 5.15): the DWARF-unwound releasing stack is required.
    dwarf: bool,
}

impl Expect {
    /// Every (backend, check) that must be reported as passed.
    pub(super) fn checks(&self) -> Vec<(&'static str, &'static str)> {
        let mut all: Vec<_> = KERNEL_CHECKS.iter().map(|c| ("auto", *c)).collect();
        for b in BACKENDS {
            if self.working.contains(&b) {
                all.extend(
                    BACKEND_CHECKS
                        .iter()
                        // The cgroup backend takes no releasing stacks.
                        .filter(|c| {
                            b != "cgroup"
                                || !(c.starts_with("trace_release_stack")
                                    || c.starts_with("check_late_release_stack"))
                        })
                        .filter(|c| self.dwarf || **c != "check_late_release_stack_dwarf")
                        .map(|c| (b, *c)),
                );
            } else {
                all.extend(REFUSED_CHECKS.iter().map(|c| (b, *c)));
            }
        }
        all
    }

    /// checks.sh's arguments after the label.
    pub(super) fn args(&self) -> Vec<&'static str> {
        let mut args = vec![self.auto];
        args.extend(BACKENDS.iter().filter(|b| self.working.contains(b)));
        args.push("--");
        args.extend(BACKENDS.iter().filter(|b| !self.working.contains(b)));
        args
    }
}

/// Debian's cloud kernels allow everything: lockdown none, BTF, kprobes. On 5.10
/// (Debian 11) fentry is refused: its tracing programs may not call
/// `bpf_get_socket_cookie` (they may from Linux 5.12), and that backend knows sockets by
/// cookie; `doctor` picks cgroup there.
pub(super) fn guest_expect(kernel: &str) -> Expect {
    match kernel {
        "5.10" => Expect {
            auto: "cgroup",
            working: vec!["cgroup", "kprobe"],
            dwarf: false,
        },
        _ => Expect {
            auto: "fentry",
            working: BACKENDS.to_vec(),
            dwarf: true,
        },
    }
}

/// This host: fentry and kprobes only without lockdown and with BTF (and kprobes
/// only with the kprobe event source); cgroup always.
pub(super) fn host_expect() -> Expect {
    let lockdown = fs::read_to_string("/sys/kernel/security/lockdown").unwrap_or_default();
    let locked = lockdown.contains('[') && !lockdown.contains("[none]");
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let kprobes = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    let mut working = Vec::new();
    if !locked && btf {
        working.push("fentry");
    }
    working.push("cgroup");
    if !locked && btf && kprobes {
        working.push("kprobe");
    }
    // bpf_task_pt_regs, looked up as sockscope does (loader: kernel_copies_user_stacks).
    let btf_text = fs::read("/sys/kernel/btf/vmlinux").unwrap_or_default();
    let dwarf = btf_text
        .windows(b"BPF_FUNC_task_pt_regs".len())
        .any(|w| w == b"BPF_FUNC_task_pt_regs");
    Expect {
        auto: working[0],
        working,
        dwarf,
    }
}

/// The table's columns for one kernel: each backend, and `auto` for the kernel's own.
fn columns() -> impl Iterator<Item = &'static str> {
    BACKENDS.into_iter().chain(["auto"])
}

/// Every check, kernel-wide ones first.
fn rows() -> impl Iterator<Item = &'static str> {
    KERNEL_CHECKS
        .iter()
        .chain(BACKEND_CHECKS)
        .chain(REFUSED_CHECKS)
        .copied()
}

/// A check's key: (backend or `auto`, check).
pub(super) type Key = (&'static str, &'static str);

/// `VMTEST <kernel> <backend> <check> pass|fail <detail>` lines: (backend, check) →
/// (passed, detail). Lines of unknown backends or checks are left out.
pub(super) fn verdicts(console: &str) -> BTreeMap<Key, (bool, String)> {
    console
        .lines()
        .filter_map(|l| {
            let l = &l[l.find("VMTEST ")?..];
            let mut f = l.split_whitespace().skip(2);
            let (backend, check) = (f.next()?, f.next()?);
            let backend = columns().find(|b| *b == backend)?;
            let check = rows().find(|c| *c == check)?;
            let passed = f.next()? == "pass";
            Some(((backend, check), (passed, f.collect::<Vec<_>>().join(" "))))
        })
        .collect()
}

pub(super) type Results = Vec<(String, Expect, BTreeMap<Key, (bool, String)>)>;

/// One row per check, one column per kernel and backend.
pub(super) fn print_matrix(results: &Results) {
    let columns: Vec<(usize, &str)> = results
        .iter()
        .enumerate()
        .flat_map(|(i, _)| columns().map(move |b| (i, b)))
        .collect();
    // What each kernel had to report, to tell a missing line from a check not run.
    let wanted: Vec<Vec<Key>> = results.iter().map(|(_, e, _)| e.checks()).collect();
    println!();
    let head: Vec<String> = columns
        .iter()
        .map(|(i, b)| format!("{} {b}", results[*i].0))
        .collect();
    println!("| check | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(columns.len()));
    for check in rows() {
        let cells: Vec<String> = columns
            .iter()
            .map(|&(i, b)| {
                let v = &results[i].2;
                match (v.get(&(b, check)), wanted[i].contains(&(b, check))) {
                    (Some((true, _)), _) => "pass".to_owned(),
                    (Some((false, detail)), _) => format!("**fail** ({detail})"),
                    (None, true) => "**not reported**".to_owned(),
                    (None, false) => "".to_owned(),
                }
            })
            .collect();
        println!("| {check} | {} |", cells.join(" | "));
    }
    println!();
}

/// Every check a kernel had to pass and did not (or did not report), as
/// `kernel/backend/check`.
pub(super) fn failures(results: &Results) -> Vec<String> {
    results
        .iter()
        .flat_map(|(k, expect, v)| {
            expect
                .checks()
                .into_iter()
                .filter(|key| v.get(key).is_none_or(|(pass, _)| !pass))
                .map(move |(b, c)| format!("{k}/{b}/{c}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_verdicts_from_console_noise() {
        let console = "\u{1b}[2JVMTEST-BEGIN 6.1\nVMTEST 6.1.0 auto doctor pass 0\r\nnoise VMTEST 6.1.0 kprobe trace_creates fail got=0 want=6\nVMTEST 6.1.0 bogus doctor pass 0\n";
        let v = verdicts(console);
        assert_eq!(v[&("auto", "doctor")], (true, "0".to_owned()));
        assert_eq!(
            v[&("kprobe", "trace_creates")],
            (false, "got=0 want=6".to_owned())
        );
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn refused_backends_are_checked_for_refusal() {
        let e = Expect {
            auto: "cgroup",
            working: vec!["cgroup"],
            dwarf: true,
        };
        assert_eq!(e.args(), ["cgroup", "cgroup", "--", "fentry", "kprobe"]);
        let checks = e.checks();
        assert!(checks.contains(&("fentry", "refused_exit")));
        assert!(checks.contains(&("cgroup", "trace_creates")));
        assert!(!checks.contains(&("cgroup", "trace_release_stack")));
        assert!(!checks.contains(&("fentry", "trace_creates")));
    }
}
