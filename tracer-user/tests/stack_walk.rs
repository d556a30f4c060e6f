//! Creating stacks walked by sockscope's create program (tracer-ebpf/src/walk.rs) are
//! the kernel's own: one process whose call sites the test controls is traced by two
//! tracers at once, one walking stacks itself, one taking them with `bpf_get_stackid`,
//! and every socket must get the very same frames from both.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use serde_json::Value;
use tracer_user::{
    events::KernelEvent,
    loader::{Tracer, TracerBuilder},
    stream::EventStream,
    unwind::StackMode,
};

/// The fixture, built now with frame pointers.
fn build_fixture() -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/call_sites.c");
    let dir = std::env::temp_dir().join(format!("sockscope-walk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bin = dir.join("call_sites");
    let out = Command::new("cc")
        .args(["-O1", "-fno-omit-frame-pointer", "-g", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("cc (apt-get install gcc)");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

fn attach(pid: u32, helper: bool) -> (Tracer, EventStream) {
    let builder = TracerBuilder::new()
        .pid(Some(pid))
        .stack_mode(StackMode::Fp)
        .helper_stacks(helper);
    assert_eq!(
        builder.walks_stacks(),
        !helper && cfg!(target_arch = "x86_64"),
        "this kernel should let the create program walk stacks (bpf_task_pt_regs)"
    );
    let mut tracer = builder.attach().expect("attach");
    let stream = EventStream::new(&mut tracer).expect("ring reader");
    (tracer, stream)
}

/// Each socket's creating user stack (addresses, innermost first), by cookie.
fn stacks(stream: &mut EventStream) -> BTreeMap<u64, Vec<u64>> {
    stream
        .finish()
        .into_iter()
        .filter_map(|r| match r.event {
            KernelEvent::Create(c) => Some((
                c.cookie,
                r.user_stack
                    .map(|s| s.iter().map(|f| f.addr).collect())
                    .unwrap_or_default(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn walked_creating_stacks_equal_the_kernels_frame_pointer_walk() {
    if !require_root("walked_creating_stacks_equal_the_kernels_frame_pointer_walk") {
        return;
    }
    let _serial = serial();
    let bin = build_fixture();
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the fixture");
    let out = Lines::new(child.stdout.take().expect("stdout"));
    let ready: Value =
        serde_json::from_str(&out.wait_for("ready", Duration::from_secs(10))).expect("ready");
    let pid = ready["pid"].as_u64().expect("pid") as u32;

    let (walking_tracer, mut walking) = attach(pid, false);
    let (helper_tracer, mut helper) = attach(pid, true);
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "go").expect("go");
    let done: Value =
        serde_json::from_str(&out.wait_for("sockets", Duration::from_secs(10))).expect("done");
    std::thread::sleep(Duration::from_millis(200));
    let walked = stacks(&mut walking);
    let reference = stacks(&mut helper);
    drop((walking_tracer, helper_tracer));
    drop(stdin);
    let _ = child.wait();

    // 4 call paths x 3 rounds, on the main thread and on a second one.
    let sockets = done["sockets"].as_u64().expect("socket count") as usize;
    assert_eq!(sockets, 24);
    assert_eq!(walked.len(), sockets, "walked: {walked:#x?}");
    assert_eq!(reference.len(), sockets, "reference: {reference:#x?}");
    assert_eq!(
        walked.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>(),
        "both saw the same sockets"
    );
    for (cookie, frames) in &reference {
        assert!(
            frames.len() >= 5,
            "the kernel's walk of socket {cookie} should go from socket() through the fixture's frames: {frames:#x?}"
        );
        assert_eq!(
            walked[cookie], *frames,
            "socket {cookie}: walked stack differs from bpf_get_stackid's"
        );
    }
    // Same-depth callers of one helper stay apart, and threads too: 4 paths x 2
    // threads.
    let distinct: BTreeSet<&Vec<u64>> = walked.values().collect();
    assert_eq!(distinct.len(), 8, "distinct stacks: {distinct:#x?}");
    // The recursion's stacks are walked whole, across several windows and pages.
    assert!(
        walked.values().any(|f| f.len() >= 24 + 3),
        "a stack through the recursion: {walked:#x?}"
    );
    assert_nothing_attached("after the stack walk test");
}
