//! `sockscope report r.json --html r.html` on the report of a real `check` run with
//! leaks of three kinds, opened from disk in a real headless browser (Debian's
//! chromium, driven by playwright-core through `tests/browser/check_report.mjs`): it
//! renders with no console error, fetches nothing, and its DOM shows one bar per
//! PeerConnection with its verdict's outcome and one row per leak record with its
//! cookie and kind.
mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use common::*;
use serde_json::Value;

/// node, playwright-core (in `$SOCKSCOPE_LINTERS/node_modules`, which `cargo xtask
/// test` installs) and chromium (`$SOCKSCOPE_BROWSER`, default Debian's). Missing: a
/// failure in CI, else `None` with the reason printed (the test then skips).
fn browser(test: &str) -> Option<(PathBuf, PathBuf)> {
    let linters = PathBuf::from(
        std::env::var_os("SOCKSCOPE_LINTERS")
            .unwrap_or_else(|| "/var/cache/sockscope/linters".into()),
    );
    let modules = linters.join("node_modules");
    let chromium = PathBuf::from(
        std::env::var_os("SOCKSCOPE_BROWSER").unwrap_or_else(|| "/usr/bin/chromium".into()),
    );
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let why = if !node {
        Some("node is not installed".to_owned())
    } else if !modules.join("playwright-core/package.json").exists() {
        Some(format!(
            "no playwright-core in {}: `cargo xtask test` installs it",
            modules.display()
        ))
    } else if !chromium.exists() {
        Some(format!(
            "no browser at {}: `cargo xtask setup` installs Debian's chromium",
            chromium.display()
        ))
    } else {
        None
    };
    match why {
        None => Some((chromium, modules)),
        Some(why) => {
            missing(test, &why);
            None
        }
    }
}

/// What the browser saw (see check_report.mjs).
fn open_in_browser(page: &Path, shot: &Path, chromium: &Path, modules: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/check_report.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(page)
        .arg(shot)
        .env("SOCKSCOPE_BROWSER", chromium)
        .env("SOCKSCOPE_NODE_MODULES", modules)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check_report.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn the_html_report_of_a_leaking_run_renders_in_a_real_browser() {
    let test = "the_html_report_of_a_leaking_run_renders_in_a_real_browser";
    if !require_root(test) {
        return;
    }
    let Some((chromium, modules)) = browser(test) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("sockscope-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("r.json");

    // One run, three processes, three kinds of leak: the legacy webrtc-rs example's
    // mDNS query loop that keeps sending (active) and its read loop parked on the
    // session mux (awaited), then a simulated PeerConnection whose socket nothing
    // touches (held). `check` follows the programs the shell runs.
    let proxy = workload_bin("webrtc-proxy");
    let pc_sim = workload_bin("pc_sim");
    let script = format!(
        "{p} --netns --sessions 1 --leak mdns --linger 2000 && \
         {p} --netns --sessions 1 --leak task --linger 2000 && \
         {s} --pcs 2 --leak 1 --linger 2500",
        p = proxy.display(),
        s = pc_sim.display()
    );
    let run = run_check(
        &["--grace", "1500ms", "--report", report.to_str().unwrap()],
        Path::new("/bin/sh"),
        &["-c", &script],
    );
    assert_eq!(run.code, Some(1), "leaks found: {}", run.stderr);

    let saved: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let findings = saved["findings"].as_array().unwrap();
    let of =
        |event: &str| -> Vec<&Value> { findings.iter().filter(|f| f["event"] == event).collect() };
    let leaks: BTreeSet<(String, String, String, String)> = of("leak")
        .iter()
        .map(|l| {
            (
                text(&l["pid"]),
                text(&l["pc_id"]),
                text(&l["cookie"]),
                text(&l["kind"]),
            )
        })
        .collect();
    let kinds: BTreeSet<&str> = leaks.iter().map(|l| l.3.as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["active", "awaited", "held"]),
        "the run should leak all three kinds: {leaks:?}\n{}",
        run.stderr
    );
    let verdicts: BTreeSet<(String, String, String)> = of("verdict")
        .iter()
        .map(|v| (text(&v["pid"]), text(&v["pc_id"]), text(&v["outcome"])))
        .collect();
    assert!(
        saved["timeline"]["pcs"].is_array(),
        "check --report saves a timeline"
    );

    // The text rendering still works; --html writes the page and says where.
    let out = Command::new(sockscope_bin())
        .arg("report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("LEAK held"));
    let page = dir.join("r.html");
    let out = Command::new(sockscope_bin())
        .arg("report")
        .arg(&report)
        .arg("--html")
        .arg(&page)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.lines().count(), 1, "one line: {said}");
    assert!(said.contains("r.html"), "{said}");
    let html = std::fs::read_to_string(&page).unwrap();
    for fetch in ["src=", "http://", "https://", "url(", "@import"] {
        assert!(
            !html.contains(fetch),
            "the page must fetch nothing: {fetch}"
        );
    }

    let shot = dir.join("report.png");
    let seen = open_in_browser(&page, &shot, &chromium, &modules);
    eprintln!(
        "{test}: screenshots {} (and -hover, -zoom4)",
        shot.display()
    );
    assert_eq!(seen["status"], 200, "{seen}");
    assert_eq!(seen["errors"], Value::Array(vec![]), "console errors");
    assert_eq!(
        seen["requests"],
        Value::Array(vec![]),
        "requests other than the page"
    );
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000));

    // One row per leak record, with its cookie and kind.
    let rows: BTreeSet<(String, String, String, String)> = seen["leak_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                text(&r["pid"]),
                text(&r["pc_id"]),
                text(&r["cookie"]),
                text(&r["kind"]),
            )
        })
        .collect();
    assert_eq!(seen["leak_rows"].as_array().unwrap().len(), leaks.len());
    assert_eq!(rows, leaks, "leak rows");
    for r in seen["leak_rows"].as_array().unwrap() {
        assert!(
            r["site"].as_str().is_some_and(|s| s.contains(".rs:")),
            "creating site file:line: {r}"
        );
    }

    // One bar per PeerConnection, with its verdict's outcome, drawn.
    let bars = seen["pc_bars"].as_array().unwrap();
    let drawn: BTreeSet<(String, String, String)> = bars
        .iter()
        .map(|b| (text(&b["pid"]), text(&b["pc_id"]), text(&b["outcome"])))
        .collect();
    assert_eq!(bars.len(), drawn.len(), "one bar each: {bars:#?}");
    assert_eq!(drawn, verdicts, "bars and verdicts");
    assert_eq!(
        bars.len(),
        saved["timeline"]["pcs"].as_array().unwrap().len()
    );
    for b in bars {
        assert!(
            b["box"]["width"].as_f64() > Some(0.0) && b["box"]["height"].as_f64() > Some(0.0),
            "visible: {b}"
        );
    }
    // The leaked sockets' bars, with their kinds.
    let leaked_bars: BTreeSet<(String, String)> = seen["socket_bars"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["leaked"] == true)
        .map(|s| (text(&s["cookie"]), text(&s["kind"])))
        .collect();
    let expected: BTreeSet<(String, String)> =
        leaks.iter().map(|l| (l.2.clone(), l.3.clone())).collect();
    assert_eq!(leaked_bars, expected, "leaked socket bars");

    // The header's counts are the summary's; the axis has ticks; hovering a leak
    // shows its details.
    for key in ["judged", "clean", "leaking", "incomplete", "leaks", "lost"] {
        assert_eq!(seen["counts"][key], saved["summary"][key], "count {key}");
    }
    assert!(
        seen["ticks"].as_array().is_some_and(|t| t.len() >= 3) && seen["ticks"][0] == "0 s",
        "time axis: {}",
        seen["ticks"]
    );
    assert_eq!(seen["hover"]["visible"], true, "{}", seen["hover"]);
    let tip = seen["hover"]["text"].as_str().unwrap_or_default();
    assert!(
        tip.contains("cookie") && tip.contains("creating stack"),
        "hover: {tip}"
    );
    assert!(
        seen["zoomed_width"].as_f64() > seen["tl_width"].as_f64().map(|w| w * 2.0),
        "zoom widens the timeline: {} → {}",
        seen["tl_width"],
        seen["zoomed_width"]
    );
}

#[test]
fn report_html_of_a_file_that_is_not_a_report_is_one_error_line() {
    let dir = std::env::temp_dir().join(format!("sockscope-html-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"not\": \"a report\"}").unwrap();
    let out = dir.join("out.html");
    expect_usage_error(
        &[
            "report",
            bad.to_str().unwrap(),
            "--html",
            out.to_str().unwrap(),
        ],
        "is not a sockscope check report",
    );
    assert!(!out.exists(), "nothing written");
    let missing = dir.join("missing.json");
    expect_usage_error(
        &[
            "report",
            missing.to_str().unwrap(),
            "--html",
            out.to_str().unwrap(),
        ],
        "cannot read",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
