//! USDT markers end to end: notes read like readelf reads them, markers attached by
//! binary and by PID deliver their exact arguments, and sockets created inside a
//! PeerConnection's span carry its id.
mod common;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::Value;
use tracer_user::stapsdt::{UsdtError, read_notes};

fn pc_sim_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Ports each PeerConnection announced, from pc_sim's own report.
fn pc_ports(report: &[Value]) -> Vec<(u64, Vec<u64>)> {
    report
        .iter()
        .filter(|v| v.get("ports").is_some())
        .map(|v| {
            let ports = v["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap())
                .collect();
            (v["pc_id"].as_u64().unwrap(), ports)
        })
        .collect()
}

fn cookie_of_port(events: &[Value], port: u64) -> u64 {
    let bind = by_event(events, "bind")
        .into_iter()
        .find(|b| b["local_port"].as_u64() == Some(port));
    bind.unwrap_or_else(|| panic!("no bind of port {port}"))["cookie"]
        .as_u64()
        .unwrap()
}

#[test]
fn markers_by_binary_carry_exact_args_and_spans_tag_sockets() {
    if !require_root("markers_by_binary_carry_exact_args_and_spans_tag_sockets") {
        return;
    }
    let _serial = serial();
    let sim = workload_bin("pc_sim");
    let tracer = Sockscope::start(&["trace", "-f", "json", "--usdt", sim.to_str().unwrap()]);
    let out = Command::new(&sim)
        .args(["--pcs", "3", "--after-span"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(300));
    let (events, _) = tracer.stop_json();
    let report = pc_sim_lines(&String::from_utf8_lossy(&out.stdout));
    let pid = report.last().unwrap()["pid"].as_u64().unwrap();
    let markers: Vec<_> = by_event(&events, "marker")
        .into_iter()
        .filter(|m| m["pid"].as_u64() == Some(pid))
        .collect();

    let named = |name: &str| -> Vec<Vec<i64>> {
        markers
            .iter()
            .filter(|m| m["name"] == name && m["provider"] == "sockscope")
            .map(|m| {
                m["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_i64().unwrap())
                    .collect()
            })
            .collect()
    };
    assert_eq!(named("pc_open"), vec![vec![1], vec![2], vec![3]]);
    assert_eq!(named("pc_close_begin"), vec![vec![1], vec![2], vec![3]]);
    assert_eq!(named("pc_close_end"), vec![vec![1], vec![2], vec![3]]);
    assert_eq!(named("span_enter"), vec![vec![1], vec![2], vec![3]]);
    assert_eq!(named("span_exit"), vec![vec![1], vec![2], vec![3]]);
    let announced: Vec<Vec<i64>> = pc_ports(&report)
        .iter()
        .flat_map(|(pc, ports)| ports.iter().map(move |p| vec![*pc as i64, *p as i64]))
        .collect();
    assert_eq!(
        named("pc_socket"),
        announced,
        "pc_socket(pc_id, port) exactly as the program announced"
    );

    // Sockets made inside span_enter(N)..span_exit(N) carry pc_id N.
    for (pc, ports) in pc_ports(&report) {
        for port in ports {
            let cookie = cookie_of_port(&events, port);
            let create = by_event(&events, "create")
                .into_iter()
                .find(|c| c["cookie"].as_u64() == Some(cookie))
                .unwrap();
            assert_eq!(create["pc_id"].as_u64(), Some(pc), "socket on port {port}");
        }
    }
    // One made right after span_exit(1) carries none.
    let after = report
        .iter()
        .find_map(|v| v["after_span_port"].as_u64())
        .unwrap();
    let cookie = cookie_of_port(&events, after);
    let create = by_event(&events, "create")
        .into_iter()
        .find(|c| c["cookie"].as_u64() == Some(cookie))
        .unwrap();
    assert!(
        create.get("pc_id").is_none(),
        "no pc_id after the span ended: {create}"
    );
}

#[test]
fn markers_by_pid_are_attached_to_a_running_process() {
    if !require_root("markers_by_pid_are_attached_to_a_running_process") {
        return;
    }
    let _serial = serial();
    let mut child = Command::new(workload_bin("pc_sim"))
        .args(["--wait", "--pcs", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Lines::new(child.stdout.take().unwrap());
    let ready: Value =
        serde_json::from_str(&out.wait_for("ready", Duration::from_secs(10))).unwrap();
    let pid = ready["pid"].as_u64().unwrap().to_string();
    let tracer = Sockscope::start(&["trace", "-f", "json", "--pid", &pid]);
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    out.wait_for("done", Duration::from_secs(10));
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    let (events, _) = tracer.stop_json();
    let opens: Vec<_> = by_event(&events, "marker")
        .into_iter()
        .filter(|m| m["name"] == "pc_open")
        .collect();
    assert_eq!(
        opens.len(),
        2,
        "pc_open fired twice in the attached process: {opens:?}"
    );
    assert!(
        opens
            .iter()
            .all(|m| m["pid"].as_u64().map(|p| p.to_string()) == Some(pid.clone()))
    );
}

/// What readelf says of each stapsdt note: (provider, name, location, base, semaphore, args).
fn readelf_notes(path: &Path) -> Vec<(String, String, u64, u64, u64, String)> {
    let out = Command::new("readelf")
        .args(["-n", "--wide"])
        .arg(path)
        .output()
        .expect("readelf (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut notes = Vec::new();
    let mut cur: Option<(String, String, u64, u64, u64)> = None;
    let hex = |s: &str| {
        u64::from_str_radix(s.trim().trim_start_matches("0x").trim_end_matches(','), 16).unwrap()
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some(p) = line.split("Provider: ").nth(1) {
            cur = Some((p.trim().to_owned(), String::new(), 0, 0, 0));
        } else if let (Some(n), Some(c)) = (line.strip_prefix("Name: "), cur.as_mut()) {
            c.1 = n.trim().to_owned();
        } else if let (Some(rest), Some(c)) = (line.strip_prefix("Location: "), cur.as_mut()) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            c.2 = hex(fields[0]);
            c.3 = hex(fields[2]);
            c.4 = hex(fields[4]);
        } else if let Some(args) = line.strip_prefix("Arguments:") {
            let (p, n, l, b, s) = cur.take().unwrap();
            notes.push((p, n, l, b, s, args.trim().to_owned()));
        }
    }
    notes
}

fn system_objects_with_notes() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/lib/x86_64-linux-gnu",
        "/usr/bin",
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if (dir.ends_with("bin") || name.contains(".so"))
                && p.is_file()
                && !readelf_notes(&p).is_empty()
            {
                found.push(p);
            }
            if found.len() >= 12 {
                return found;
            }
        }
    }
    found
}

#[test]
fn reader_agrees_with_readelf_on_real_binaries() {
    let mut objects = vec![workload_bin("pc_sim")];
    let system = system_objects_with_notes();
    assert!(
        !system.is_empty(),
        "no system object with stapsdt notes found (libc has them on Debian)"
    );
    objects.extend(system);
    let (mut compared, mut rejected) = (0, 0);
    for path in &objects {
        let oracle = readelf_notes(path);
        match read_notes(path) {
            Ok(ours) => {
                let ours: Vec<_> = ours
                    .iter()
                    .map(|p| {
                        (
                            p.provider.clone(),
                            p.name.clone(),
                            p.pc,
                            p.base,
                            p.semaphore,
                            p.arg_string.clone(),
                        )
                    })
                    .collect();
                assert_eq!(ours, oracle, "{}", path.display());
                compared += ours.len();
            }
            // An object with an argument form we do not read must be refused for
            // exactly that argument, as readelf shows it, never mis-parsed.
            Err(UsdtError::UnsupportedArg { spec, .. } | UsdtError::BadArgSpec { spec, .. }) => {
                let tokens: Vec<&str> =
                    oracle.iter().flat_map(|n| n.5.split_whitespace()).collect();
                assert!(
                    tokens.contains(&spec.as_str()),
                    "{}: refused {spec:?}, not a readelf argument",
                    path.display()
                );
                rejected += 1;
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    assert!(compared > 6, "compared only {compared} notes");
    eprintln!(
        "compared {compared} notes in {} objects; {rejected} objects refused",
        objects.len()
    );
}

#[test]
fn usdt_list_bad_input() {
    let bin = sockscope_bin();
    let run = |args: &[&str]| Command::new(&bin).args(args).output().unwrap();
    let out = run(&["usdt", "list", "/etc/hostname"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an ELF"),
        "{out:?}"
    );
    let out = run(&["usdt", "list", "/bin/true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no USDT markers in /bin/true"),
        "{out:?}"
    );
    let out = run(&["usdt", "list", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    let out = run(&["usdt", "list", workload_bin("pc_sim").to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("sockscope:pc_socket"));
}

/// Every argument form and size, signed and unsigned, extreme values: what the BPF
/// side reads (and sign- or zero-extends) must equal what the program put there.
#[test]
fn every_argument_form_arrives_exactly() {
    if !require_root("every_argument_form_arrives_exactly") {
        return;
    }
    let _serial = serial();
    let forms = workload_bin("usdt_forms");
    let tracer = Sockscope::start(&[
        "trace",
        "-f",
        "json",
        "--usdt",
        forms.to_str().unwrap(),
        "--usdt-provider",
        "sockscope_test",
    ]);
    let mut child = Command::new(&forms)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Lines::new(child.stdout.take().unwrap());
    let hello: Value = serde_json::from_str(&out.next(Duration::from_secs(10)).unwrap()).unwrap();
    writeln!(child.stdin.as_mut().unwrap(), "fire").unwrap();
    out.wait_for("fired", Duration::from_secs(10));
    drop(child.stdin.take());
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    let (events, _) = tracer.stop_json();
    let expected = hello["expected"].as_object().unwrap();
    let markers = by_event(&events, "marker");
    assert_eq!(
        markers.len(),
        expected.len(),
        "each marker fired once: {markers:#?}"
    );
    for (name, want) in expected {
        let got = markers
            .iter()
            .find(|m| m["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(
            &got["args"], want,
            "{name}: args as read by the BPF program"
        );
        assert_eq!(got["provider"], "sockscope_test");
    }
}

/// tracer-usdt's tracing layer: spans with `pc_id` (and spans inside them, and tasks
/// instrumented with them) tag the sockets created inside; none outside.
#[test]
fn tracing_layer_spans_tag_sockets() {
    if !require_root("tracing_layer_spans_tag_sockets") {
        return;
    }
    let _serial = serial();
    let bin = workload_bin("traced_spans");
    let tracer = Sockscope::start(&["trace", "-f", "json", "--usdt", bin.to_str().unwrap()]);
    let out = Command::new(&bin).output().unwrap();
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(300));
    let (events, _) = tracer.stop_json();
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    for want in said["sockets"].as_array().unwrap() {
        let cookie = cookie_of_port(&events, want["port"].as_u64().unwrap());
        let create = by_event(&events, "create")
            .into_iter()
            .find(|c| c["cookie"].as_u64() == Some(cookie))
            .unwrap();
        assert_eq!(
            create.get("pc_id").unwrap_or(&Value::Null),
            &want["pc_id"],
            "{want}"
        );
    }
}
