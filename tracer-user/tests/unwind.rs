//! DWARF unwinding of creating stacks (`--stacks dwarf|auto`) on programs built without
//! frame pointers, against ground truth: gdb's backtrace of a C program built with
//! `-O2 -fomit-frame-pointer`, and the frame-pointer build of the same Rust program.
mod common;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::Value;

/// The C fixture, built now without frame pointers (with line tables).
fn build_c_fixture(test: &str) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deep_socket.c");
    let dir = std::env::temp_dir().join(format!("sockscope-unwind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bin = dir.join("deep_socket");
    let out = Command::new("cc")
        .args(["-O2", "-fomit-frame-pointer", "-g", "-o"])
        .arg(&bin)
        .arg(&src)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(bin),
        Ok(o) => panic!("cc failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            missing(
                test,
                &format!("no C compiler (cc: {e}): apt-get install gcc"),
            );
            None
        }
    }
}

/// (function, file, line) of each frame gdb shows at a breakpoint on `socket`, from
/// the caller of `socket` down to `main`.
fn gdb_backtrace(test: &str, bin: &Path) -> Option<Vec<(String, String, u32)>> {
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "set debuginfod enabled off"])
        .args(["-ex", "break socket", "-ex", "run", "-ex", "bt", "--args"])
        .arg(bin)
        .arg("--now")
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            missing(test, &format!("no gdb ({e}): apt-get install gdb"));
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // `#1  0x000055555555541c in level_five (depth=...) at /path/deep_socket.c:26`
    let frames: Vec<(String, String, u32)> = text
        .lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| {
            let (_, rest) = l.split_once(" in ")?;
            let func = rest.split_whitespace().next()?.to_owned();
            let (file, line) = rest.rsplit_once(" at ")?.1.trim().rsplit_once(':')?;
            Some((func, file.to_owned(), line.parse().ok()?))
        })
        .collect();
    assert!(
        frames.last().is_some_and(|f| f.0 == "main"),
        "gdb's backtrace should reach main: {text}"
    );
    Some(frames)
}

/// The functions of the user stack `perf record --call-graph dwarf` takes at the C
/// fixture's `socket(2)` (the syscall tracepoint; tracefs must be mounted: sockscope
/// mounts it), innermost first, as `perf script` names them.
fn perf_backtrace(test: &str, bin: &Path) -> Option<Vec<String>> {
    let data = std::env::temp_dir().join(format!("sockscope-perf-{}.data", std::process::id()));
    let record = Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "syscalls:sys_enter_socket",
            "--call-graph",
            "dwarf",
        ])
        .arg("-o")
        .arg(&data)
        .arg("--")
        .arg(bin)
        .arg("--now")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output();
    match record {
        Ok(o) => assert!(
            o.status.success(),
            "perf record failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            missing(test, &format!("no perf ({e}): apt-get install linux-perf"));
            return None;
        }
    }
    let script = Command::new("perf")
        .args(["script", "-F", "ip,sym", "-i"])
        .arg(&data)
        .output()
        .expect("perf script");
    let _ = std::fs::remove_file(&data);
    assert!(script.status.success(), "perf script failed");
    // `            13d3 level_six+0x13 (/tmp/x)` after the sample's header line.
    let text = String::from_utf8_lossy(&script.stdout);
    let frames: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let _ip = u64::from_str_radix(words.next()?, 16).ok()?;
            let sym = words.next()?;
            Some(sym.split('+').next().unwrap_or(sym).to_owned())
        })
        .collect();
    assert!(
        frames.iter().any(|f| f == "main"),
        "perf's stack should reach main: {text}"
    );
    Some(frames)
}

/// Runs the C fixture under `sockscope trace --format json --stacks MODE --pid P` and
/// returns the user frames of its one creating stack.
fn trace_c_fixture(bin: &Path, mode: &str) -> Vec<Value> {
    let mut child = Command::new(bin)
        .arg("--hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the C fixture");
    let out = Lines::new(child.stdout.take().expect("stdout"));
    let ready: Value =
        serde_json::from_str(&out.wait_for("ready", Duration::from_secs(10))).expect("ready");
    let pid = ready["pid"].as_u64().expect("pid").to_string();
    let tracer = Sockscope::start(&["trace", "--format", "json", "--pid", &pid, "--stacks", mode]);
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "go").expect("go");
    out.wait_for("sockets", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let (events, status) = tracer.stop_json();
    drop(stdin);
    let _ = child.wait();
    assert!(status.success(), "sockscope exited with {status}");
    let creates = by_event(&events, "create");
    assert_eq!(creates.len(), 1, "one socket created: {events:#?}");
    creates[0]["stacks"]["user"]
        .as_array()
        .unwrap_or_else(|| panic!("no user stack: {:#}", creates[0]))
        .clone()
}

#[test]
fn dwarf_stack_of_c_program_without_frame_pointers_matches_gdb() {
    let test = "dwarf_stack_of_c_program_without_frame_pointers_matches_gdb";
    if !require_root(test) {
        return;
    }
    let Some(bin) = build_c_fixture(test) else {
        return;
    };
    let Some(gdb) = gdb_backtrace(test, &bin) else {
        return;
    };
    let _serial = serial();
    let user = trace_c_fixture(&bin, "dwarf");
    // Ours: libc's socket, then the program's frames; gdb's from its frame 1 on.
    let ours: Vec<(String, String, u32)> = user
        .iter()
        .skip_while(|f| symbol(f) != gdb[0].0)
        .take(gdb.len())
        .map(|f| {
            (
                symbol(f).to_owned(),
                f["file"].as_str().unwrap_or_default().to_owned(),
                f["line"].as_u64().unwrap_or(0) as u32,
            )
        })
        .collect();
    assert_eq!(ours, gdb, "DWARF stack vs gdb; ours in full: {user:#?}");
    // Past main: libc's start code, and no note (the root was reached).
    assert!(
        user.iter()
            .all(|f| !symbol(f).starts_with("[unwinding stopped")),
        "unwinding reached the root: {user:#?}"
    );
    assert!(
        user.iter().any(|f| symbol(f).contains("libc_start")),
        "down through libc's start code: {user:#?}"
    );

    // A second reference: `perf record --call-graph dwarf` (its own unwinder, over
    // the same kind of copied stack): the same functions from the caller of `socket`
    // down through libc's start code.
    if let Some(perf) = perf_backtrace(test, &bin) {
        let from = |s: &[String]| -> Vec<String> {
            s.iter()
                .skip_while(|f| **f != gdb[0].0)
                .take_while(|f| !f.starts_with("_start"))
                .cloned()
                .collect()
        };
        let ours_names: Vec<String> = user.iter().map(|f| symbol(f).to_owned()).collect();
        let (ours, theirs) = (from(&ours_names), from(&perf));
        assert!(theirs.len() > gdb.len(), "perf's stack: {perf:#?}");
        assert_eq!(ours, theirs, "DWARF stack vs perf --call-graph dwarf");
    }

    // auto picks DWARF for this program: the same stack.
    let auto = trace_c_fixture(&bin, "auto");
    let names = |s: &[Value]| s.iter().map(|f| symbol(f).to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&auto), names(&user), "auto = dwarf here");

    // The frame-pointer walk cannot get there (or the test would prove nothing).
    let fp = trace_c_fixture(&bin, "fp");
    assert!(
        !fp.iter().any(|f| symbol(f) == "level_one"),
        "the frame-pointer walk should not reach level_one in a build without frame pointers: {fp:#?}"
    );
    assert_nothing_attached("after the traces");

    // doctor says which mode the process would get.
    let mut child = Command::new(&bin)
        .arg("--hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the C fixture");
    let out = Lines::new(child.stdout.take().expect("stdout"));
    let ready: Value =
        serde_json::from_str(&out.wait_for("ready", Duration::from_secs(10))).expect("ready");
    let pid = ready["pid"].as_u64().expect("pid").to_string();
    let doctor = Command::new(sockscope_bin())
        .args(["doctor", "--pid", &pid])
        .output()
        .expect("doctor");
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&doctor.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("stacks pid {pid}")))
        .unwrap_or_else(|| panic!("doctor --pid has a stacks line: {text}"));
    assert!(line.contains("dwarf"), "{line}");
}

/// The one leak `check --stacks MODE --grace 1s` finds in `pc_sim --pcs 1 --sockets 2
/// --leak 1 SIM_ARGS`.
fn only_leak(bin: &Path, mode: &str, sim_args: &[&str]) -> Value {
    let run = run_check(
        &["--stacks", mode, "--grace", "1s"],
        bin,
        &[&["--pcs", "1", "--sockets", "2", "--leak", "1"], sim_args].concat(),
    );
    assert_eq!(run.code, Some(1), "a leak: {}", run.stderr);
    let leaks = by_event(&run.ours, "leak");
    assert_eq!(leaks.len(), 1, "one leak: {:#?}", run.ours);
    leaks[0].clone()
}

/// The leak of a `pc_sim` that exits right after its sockets are made and closed,
/// leaving the leaked one to the exit: its maps must be read before then.
fn check_leak(bin: &Path, mode: &str) -> Value {
    only_leak(bin, mode, &["--exit-without-cleanup"])
}

#[test]
fn check_on_rust_release_build_without_frame_pointers_matches_the_frame_pointer_build() {
    let test = "check_on_rust_release_build_without_frame_pointers_matches_the_frame_pointer_build";
    if !require_root(test) {
        return;
    }
    let Some((fp_bin, nofp_bin)) = pc_sim_builds(test) else {
        return;
    };
    // The frame-pointer build as users run it today (frame pointers), and unwound with
    // its CFI too (the frame-pointer walk skips the caller of libc's `socket`, a leaf
    // without a frame: std's `bind::inner`).
    let with_fp = check_leak(&fp_bin, "fp");
    let with_fp_dwarf = check_leak(&fp_bin, "dwarf");
    // The release build without frame pointers, with the default `--stacks auto`.
    let without = check_leak(&nofp_bin, "auto");
    let (a, b) = (
        stack_functions(&with_fp_dwarf["stack"]),
        stack_functions(&without["stack"]),
    );
    assert!(
        a.iter().any(|f| f.contains("pc_sim_create_sockets")),
        "the frame-pointer build names the creator: {a:#?}"
    );
    assert!(
        a.last().is_some_and(|f| f.starts_with("clone3")),
        "down to the thread's root: {a:#?}"
    );
    assert_eq!(
        b, a,
        "the stack of the build without frame pointers is the frame-pointer build's (file:line included)"
    );
    // Every frame the frame-pointer walk of the frame-pointer build names is there too.
    // (Frames the fp run could not name are left out: in fp mode nothing holds a
    // process that exits at once until its maps are read, and now and then that race
    // is lost; dwarf and auto stop it for its maps under `check`.)
    let fp_names = stack_functions(&with_fp["stack"]);
    let missing_frames: Vec<&String> = fp_names
        .iter()
        .filter(|f| !f.starts_with("[unknown]"))
        .filter(|f| !b.contains(f))
        .collect();
    assert!(
        missing_frames.is_empty(),
        "frames of the frame-pointer walk missing from the DWARF stack: {missing_frames:#?}"
    );
    // The fp run's site and subsystem come from its stack, which that race can leave
    // unnamed: then the frame-pointer build unwound with DWARF is the reference.
    let fp_named = !fp_names.iter().any(|f| f.starts_with("[unknown]"));
    let reference = if fp_named { &with_fp } else { &with_fp_dwarf };
    for leak in [&with_fp_dwarf, &without] {
        assert_eq!(leak["site"], reference["site"], "creating site");
        assert_eq!(leak["subsystem"], reference["subsystem"], "subsystem");
        assert_eq!(leak["confidence"], with_fp["confidence"], "attribution");
        assert_eq!(leak["pc_id"], with_fp["pc_id"], "PeerConnection");
    }
    assert!(
        without["site"]["function"]
            .as_str()
            .is_some_and(|f| f.contains("pc_sim")),
        "the site is the program's own code: {:#}",
        without["site"]
    );

    // Without DWARF the same build's stack stops short (or this proves nothing).
    let short = check_leak(&nofp_bin, "fp");
    let c = stack_functions(&short["stack"]);
    assert!(
        c.len() < a.len(),
        "frame pointers alone lose frames in the build without them: {c:#?}"
    );
}

/// The leak of a `pc_sim` whose leaked socket keeps sending every 50 ms after the close,
/// from a thread of its own.
fn check_active_leak(bin: &Path, mode: &str) -> Value {
    let leak = only_leak(bin, mode, &["--keep-sending", "--linger", "2500"]);
    assert_eq!(leak["kind"], "active", "it keeps sending: {leak}");
    leak
}

/// The last-I/O stack of the leak explanation (#15, DWARF for stacks besides the
/// creating one): a release build without frame pointers names the same stack as the
/// frame-pointer build of the same source, down to the thread's root; the sample it
/// comes from is of a send after the end, no later than the last one.
#[test]
fn last_io_stack_of_rust_release_build_without_frame_pointers_matches_the_frame_pointer_build() {
    let test = "last_io_stack_of_rust_release_build_without_frame_pointers_matches_the_frame_pointer_build";
    if !require_root(test) {
        return;
    }
    let Some((fp_bin, nofp_bin)) = pc_sim_builds(test) else {
        return;
    };
    let with_fp = check_active_leak(&fp_bin, "dwarf");
    let without = check_active_leak(&nofp_bin, "auto");
    let (a, b) = (
        stack_functions(&with_fp["io"]["last_stack"]),
        stack_functions(&without["io"]["last_stack"]),
    );
    assert!(
        a.iter().any(|f| f.contains("pc_sim_keep_sending")),
        "the frame-pointer build's last send names its sender: {a:#?}"
    );
    assert!(
        a.last().is_some_and(|f| f.starts_with("clone3")),
        "down to the thread's root: {a:#?}"
    );
    assert_eq!(
        b, a,
        "the last-I/O stack of the build without frame pointers is the frame-pointer build's (file:line included)"
    );
    for leak in [&with_fp, &without] {
        let io = &leak["io"];
        assert_eq!(io["last_op"], "send", "{io}");
        let (ended, sampled, last) = (
            leak["ended_ns"].as_u64().expect("ended_ns"),
            io["last_stack_at_ns"].as_u64().expect("last_stack_at_ns"),
            io["last_at_ns"].as_u64().expect("last_at_ns"),
        );
        assert!(
            ended <= sampled && sampled <= last,
            "a send after the end, not after the last: {io}"
        );
    }

    // Frame pointers alone lose frames in the build without them (or this proves
    // nothing).
    let short = check_active_leak(&nofp_bin, "fp");
    let c = stack_functions(&short["io"]["last_stack"]);
    assert!(
        c.len() < a.len(),
        "frame pointers alone lose frames in the build without them: {c:#?}"
    );
}
