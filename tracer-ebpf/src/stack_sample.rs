//! DWARF-mode creating stacks: the frame-pointer walk (`bpf_get_stackid`) stops after a
//! frame or two in code built without frame pointers (Rust release builds by default),
//! so for the processes being traced the thread's user registers and the top of its
//! user stack are copied into a [`StackSample`] record, sent just before the create
//! record; user space unwinds it with the objects' CFI (`.eh_frame`, `.debug_frame`).
//!
//! Only tasks that pass the filters (`--pid`, `--comm`, `check`'s cgroup) are ever
//! sampled, or the processes user space lists (the daemon's marked processes, see
//! [`SAMPLE_TGIDS`]); never host-wide: a host-wide trace stays frame-pointer only. In
//! `auto` mode user space tells, per process, whether its frame pointers suffice
//! ([`STACK_MODES`]); a process it has not judged yet is sampled (correctness first).
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_RB_NO_WAKEUP, task_struct},
    helpers::{
        bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs,
        generated::bpf_probe_read_user,
    },
    helpers::{bpf_get_smp_processor_id, bpf_send_signal},
    macros::map,
    maps::{Array, HashMap},
};
use tracer_common::{EventKind, STACK_SAMPLE_MAX, StackSample, sample_flags, sample_reg, stats};

use crate::{
    filter::{filters_active, read_global},
    maps::{EVENTS, SEEN_STACKS, count},
};

/// 0: frame pointers only; 1 (`dwarf`): sample every traced socket creation; 2
/// (`auto`): sample unless [`STACK_MODES`] says the process's frame pointers suffice.
#[unsafe(no_mangle)]
static STACK_MODE: u8 = 0;

/// Bytes of user stack to copy per sample (at most [`STACK_SAMPLE_MAX`]).
#[unsafe(no_mangle)]
static STACK_SAMPLE_BYTES: u32 = tracer_common::STACK_SAMPLE_DEFAULT;

/// 1: stop a process at its first sample (SIGSTOP, see [`sample_flags::STOPPED`]) so
/// that user space reads its memory map before it can exit. Only `check` sets it,
/// which already stops its processes at exec the same way.
#[unsafe(no_mangle)]
static STOP_FOR_MAPS: u8 = 0;

/// `auto` mode: user space's verdict per process (tgid): 0 its frame pointers suffice,
/// 1 it needs samples. Absent: not judged yet, so sampled.
#[map]
pub static STACK_MODES: HashMap<u32, u8> = HashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);

/// A sample is assembled here (the BPF stack is 512 bytes), then copied to the ring
/// with its real length. One slot per CPU, indexed by CPU: an array rather than a
/// per-CPU map so that user space sizes it at load (one slot, 32 KiB, when nothing is
/// sampled; the number of CPUs otherwise).
#[repr(C)]
pub struct Scratch {
    header: StackSample,
    /// Room for any length under [`LEN_MASK`], so the verifier accepts a masked
    /// length; at most [`STACK_SAMPLE_MAX`] bytes are used.
    data: [u8; LEN_MASK as usize + 1],
}

/// Lengths are masked with this before the helpers see them: the verifier must be able
/// to bound them, and the compiler would drop a mere comparison it already made.
const LEN_MASK: u64 = 0x7fff;

#[map]
static SAMPLE_SCRATCH: Array<Scratch> = Array::with_max_entries(1, 0);

const PAGE: u64 = 4096;
const SIGSTOP: u32 = 19;
/// Stack reads tried: the size asked for, then ending at each lower page boundary (the
/// stack mapping ends at one: a main thread with a shallow stack has less above its
/// stack pointer than asked for).
const READ_TRIES: u32 = 9;

/// Offsets in the kernel's `struct pt_regs` of (ip, sp, fp, lr); lr only on aarch64.
#[cfg(bpf_target_arch = "aarch64")]
const REG_OFFSETS: [usize; sample_reg::COUNT] = [256, 248, 29 * 8, 30 * 8];
#[cfg(not(bpf_target_arch = "aarch64"))]
const REG_OFFSETS: [usize; sample_reg::COUNT] = [128, 152, 32, usize::MAX];

/// 1: besides the processes the filters select, sample those user space lists in
/// [`SAMPLE_TGIDS`] (the daemon: the processes it found carrying markers).
#[unsafe(no_mangle)]
static SAMPLE_LISTED: u8 = 0;

/// With [`SAMPLE_LISTED`]: the processes (tgids) being judged, whose stacks are sampled.
#[map]
pub static SAMPLE_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(4096, BPF_F_NO_PREALLOC);

/// Whether the process is one being judged: under a filter, or listed.
#[inline(always)]
fn targeted(tgid: u32) -> bool {
    filters_active() || (read_global(&SAMPLE_LISTED) != 0 && SAMPLE_TGIDS.get_ptr(tgid).is_some())
}

#[inline(always)]
fn wanted(tgid: u32) -> bool {
    match read_global(&STACK_MODE) {
        0 => false,
        1 => targeted(tgid),
        // SAFETY: copied out at once.
        _ => targeted(tgid) && unsafe { STACK_MODES.get(tgid) }.copied() != Some(0),
    }
}

/// What [`sample`] did.
pub enum Sampled {
    /// Not wanted for this task, or not sent (a full ring counts a loss).
    No,
    /// On the ring.
    Sent,
}

/// Copies the current thread's user registers and the top of its user stack into a
/// [`StackSample`] record on the ring, for the record that follows: the create record
/// of `cookie`, or with `purpose` [`sample_flags::FOR_MARKER`] the marker record; with
/// [`sample_flags::FOR_IO`] the sample stands alone (a send or receive on `cookie` at
/// `ts_ns`).
#[inline(always)]
pub fn sample(tgid: u32, tid: u32, cookie: u64, purpose: u16, ts_ns: u64) -> Sampled {
    if !wanted(tgid) {
        return Sampled::No;
    }
    // SAFETY: no arguments. BPF programs do not migrate while they run.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(scratch) = SAMPLE_SCRATCH.get_ptr_mut(cpu) else {
        return Sampled::No;
    };
    let mut regs = [0u64; sample_reg::COUNT];
    // SAFETY: the helpers return the current task and its user registers (the ones
    // saved at syscall entry); the reads go through bpf_probe_read_kernel, which
    // fails cleanly.
    unsafe {
        let task: *mut task_struct = bpf_get_current_task_btf();
        let pt_regs = bpf_task_pt_regs(task) as *const u8;
        let mut i = 0;
        while i < sample_reg::COUNT {
            let off = REG_OFFSETS[i];
            if off != usize::MAX {
                regs[i] = bpf_probe_read_kernel(pt_regs.add(off).cast::<u64>()).unwrap_or(0);
            }
            i += 1;
        }
    }
    let sp = regs[sample_reg::SP];
    let want = u64::from(read_global(&STACK_SAMPLE_BYTES)).min(STACK_SAMPLE_MAX as u64);
    // SAFETY: this CPU's slot; no one else uses it while this program runs here.
    let data = unsafe { (*scratch).data.as_mut_ptr() };
    let mut len = want;
    let mut end = (sp.wrapping_add(want)) & !(PAGE - 1);
    if end == sp.wrapping_add(want) {
        end = end.wrapping_sub(PAGE);
    }
    let mut read_error: i32 = 0;
    let mut tries = 0;
    let mut got = 0u64;
    while tries < READ_TRIES {
        if len == 0 || len > STACK_SAMPLE_MAX as u64 {
            break;
        }
        // A no-op on the value (len <= STACK_SAMPLE_MAX), kept by the compiler.
        let n = core::hint::black_box(len) & LEN_MASK;
        // SAFETY: `data` holds LEN_MASK + 1 bytes and `n` is at most LEN_MASK; the
        // helper fails cleanly on an unmapped user address.
        let r = unsafe { bpf_probe_read_user(data.cast(), n as u32, sp as *const _) };
        if r == 0 {
            got = len;
            break;
        }
        read_error = r as i32;
        if end <= sp {
            break;
        }
        len = end - sp;
        end = end.wrapping_sub(PAGE);
        tries += 1;
    }
    if got > STACK_SAMPLE_MAX as u64 {
        return Sampled::No;
    }
    let key = (u64::from(tgid) << 32) | 0xffff_ffff;
    // SAFETY: only whether the key is there is read.
    let first = unsafe { SEEN_STACKS.get(key) }.is_none();
    let stop = first && read_global(&STOP_FOR_MAPS) != 0;
    // SAFETY: as above.
    unsafe {
        (*scratch).header = StackSample {
            kind: EventKind::StackSample as u32,
            pid: tgid,
            tid,
            len: got as u32,
            cookie,
            regs,
            read_error: if got == 0 { read_error } else { 0 },
            wanted: want as u16,
            flags: purpose | if stop { sample_flags::STOPPED } else { 0 },
            ts_ns,
        };
    }
    let total = size_of::<StackSample>() + (core::hint::black_box(got) & LEN_MASK) as usize;
    // SAFETY: `total` bytes of the scratch record (header and what was copied).
    let record = unsafe { core::slice::from_raw_parts(scratch.cast::<u8>(), total) };
    if EVENTS
        .output::<[u8]>(record, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        count(stats::LOST);
        return Sampled::No;
    }
    if first {
        let _ = SEEN_STACKS.insert(key, 1, 0);
    }
    if stop {
        // Stops the process on its way back to user space, before it can exit.
        // SAFETY: signals the current process only.
        unsafe { bpf_send_signal(SIGSTOP) };
    }
    Sampled::Sent
}
