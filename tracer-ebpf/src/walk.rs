//! Creating user stacks walked by frame pointers here, instead of `bpf_get_stackid`.
//!
//! Measured (BENCHMARKS.md): `bpf_get_stackid` was ~90% of `sys_exit_socket`, and
//! most of that was not the walk but its end: the outermost frame's saved frame
//! pointer is 0 (glibc clears it at thread start), the kernel reads the next frame at
//! address 0 anyway, and pays a page fault and an exception fixup on every stack.
//! Then it hashes the frames into a preallocated map of 127-frame slots, where a
//! stack whose hash bucket is taken is lost (`-EEXIST`).
//!
//! This walk follows the same rule as the kernel's (`perf_callchain_user` on x86_64:
//! the user `ip`, then the return address of each frame from `bp` up, until a frame
//! cannot be read or [`WALK_MAX_FRAMES`] are taken), stops at a null frame pointer
//! without touching it, and hashes the frames on the way. A (process, hash) seen
//! before costs one LRU lookup; the first one sends its frames to user space
//! ([`WalkedStack`]) and the create record names the stack by hash. Same frames as
//! the kernel's walk, checked by `tests/stack_walk.rs`.
use aya_ebpf::{
    bindings::{BPF_RB_NO_WAKEUP, task_struct},
    helpers::{
        bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs,
        generated::bpf_probe_read_user as bpf_probe_read_user_raw,
    },
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use tracer_common::{EventKind, WALK_MAX_FRAMES, WalkKey, WalkedStack, stats};

use crate::{
    filter::read_global,
    maps::{EVENTS, count},
};

/// 1: walk creating stacks here; 0: `bpf_get_stackid` (kernels without
/// `bpf_task_pt_regs`, or asked for, e.g. to compare both).
#[unsafe(no_mangle)]
static WALK_STACKS: u8 = 0;

#[inline(always)]
pub fn enabled() -> bool {
    read_global(&WALK_STACKS) != 0
}

/// A walk is assembled here (too large for the 512-byte BPF stack), then sent with
/// its real length.
#[repr(C)]
pub struct Scratch {
    header: WalkedStack,
    /// One slot more than [`WALK_MAX_FRAMES`], so a masked index is always in bounds.
    frames: [u64; FRAMES_MASK + 1],
    /// The stack window read last (see [`WINDOW_BYTES`]); twice its size, so that a
    /// masked index and the word after it are always in bounds.
    window: [u64; 2 * WINDOW_WORDS],
}

const FRAMES_MASK: usize = 127;
const _: () = assert!(WALK_MAX_FRAMES <= FRAMES_MASK);

/// The stack is read in windows of up to this many bytes, from a frame to at most the
/// end of its page, and every frame found in the window is taken from there: one
/// helper call for several frames, where reading each frame alone was 40% of the
/// create path's BPF time (BENCHMARKS.md). Never past the page: the frame's own page
/// is mapped when the kernel's 16-byte read would succeed, the next one may not be,
/// and a fault costs more than the reads it saves. Into map memory, not the BPF
/// stack: hardened usercopy checks a stack destination frame by frame.
const WINDOW_BYTES: u64 = 1024;
const WINDOW_WORDS: usize = (WINDOW_BYTES / 8) as usize;
const PAGE_BYTES: u64 = 4096;
/// A saved frame: the caller's frame pointer, then the return address.
const FRAME_BYTES: u64 = 16;

#[map]
static WALK_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// (process, stack hash) pairs whose frames user space has. User space deletes a
/// process's keys when it exits, so a later process with its pid sends its own.
#[map]
pub static WALKED: LruHashMap<WalkKey, u8> = LruHashMap::with_max_entries(4096, 0);

/// Offsets in x86_64 `struct pt_regs` of `ip` and `bp`.
const IP_OFFSET: usize = 128;
const BP_OFFSET: usize = 32;

/// Mixes one frame into the hash (a multiply-xorshift step: every bit of the frame
/// reaches every bit of the state).
#[inline(always)]
fn mix(h: u64, frame: u64) -> u64 {
    let x = (h ^ frame).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 31)
}

/// What [`walk`] found. A plain value, never an `Option` on the BPF stack: the
/// compiler may read an absent payload and select it away, which 5.10's verifier
/// refuses ("invalid read from stack").
#[derive(Clone, Copy)]
pub struct Walked {
    /// Nonzero for a walk; 0 in [`Walked::NONE`].
    pub hash: u64,
    /// This is the first time the process showed this stack (its frames were sent).
    pub first: bool,
}

impl Walked {
    /// No walk (not enabled here, or it failed): hash 0.
    pub const NONE: Self = Self {
        hash: 0,
        first: false,
    };
}

/// Walks the current thread's user stack; `None` when the registers cannot be read
/// or the frames could not be handed to user space (the ring is full: counted lost).
#[inline(always)]
pub fn walk(tgid: u32) -> Walked {
    walk_or_none(tgid).unwrap_or(Walked::NONE)
}

#[inline(always)]
fn walk_or_none(tgid: u32) -> Option<Walked> {
    let scratch = WALK_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; no one else uses it while this program runs here.
    let frames = unsafe { &mut (*scratch).frames };
    // SAFETY: the helpers return the current task and the user registers saved at
    // syscall entry; the reads go through bpf_probe_read_kernel, which fails cleanly.
    let (ip, mut fp) = unsafe {
        let task: *mut task_struct = bpf_get_current_task_btf();
        let regs = bpf_task_pt_regs(task) as *const u8;
        (
            bpf_probe_read_kernel(regs.add(IP_OFFSET).cast::<u64>()).ok()?,
            bpf_probe_read_kernel(regs.add(BP_OFFSET).cast::<u64>()).ok()?,
        )
    };
    // SAFETY: as above.
    let window = unsafe { &mut (*scratch).window };
    frames[0] = ip;
    let mut hash = mix(0, ip);
    let mut nr = 1usize;
    // The window holds [base, base + len); len 0: none yet.
    let (mut base, mut len) = (0u64, 0u64);
    while nr < WALK_MAX_FRAMES {
        if fp == 0 {
            break;
        }
        let off = fp.wrapping_sub(base);
        // Also a new window for a frame pointer not 8-aligned to this one.
        if len < FRAME_BYTES || fp < base || off > len - FRAME_BYTES || off & 7 != 0 {
            // To the end of fp's page; a frame straddling it is read alone, as the
            // kernel reads it.
            let room = PAGE_BYTES - (fp & (PAGE_BYTES - 1));
            let want = if room < FRAME_BYTES {
                FRAME_BYTES
            } else {
                room.min(WINDOW_BYTES)
            };
            let n = core::hint::black_box(want) & (2 * WINDOW_BYTES - 1);
            // SAFETY: `window` holds 2 * WINDOW_BYTES bytes and `n` is less; the helper
            // fails cleanly on an unmapped or kernel address.
            let r = unsafe {
                bpf_probe_read_user_raw(window.as_mut_ptr().cast(), n as u32, fp as *const _)
            };
            if r != 0 {
                break;
            }
            base = fp;
            len = want;
        }
        // Masked out of the compiler's sight: it knows `off` is in the window and would
        // drop the mask, which older verifiers (6.1) need to bound the index.
        let i = core::hint::black_box((fp.wrapping_sub(base) >> 3) as usize) & (WINDOW_WORDS - 1);
        let ret = window[i + 1];
        frames[nr & FRAMES_MASK] = ret;
        hash = mix(hash, ret);
        fp = window[i];
        nr += 1;
    }
    let hash = mix(hash, nr as u64) | 1;
    let key = WalkKey {
        tgid,
        _pad: 0,
        hash,
    };
    // SAFETY: only whether the key is there is read.
    if unsafe { WALKED.get(&key) }.is_some() {
        return Some(Walked { hash, first: false });
    }
    // SAFETY: as above.
    unsafe {
        (*scratch).header = WalkedStack {
            kind: EventKind::WalkedStack as u32,
            pid: tgid,
            hash,
            nr: nr as u32,
            _pad: 0,
        };
    }
    let len = size_of::<WalkedStack>() + (core::hint::black_box(nr) & FRAMES_MASK) * 8;
    // SAFETY: `len` bytes of the scratch record (header and the frames taken).
    let record = unsafe { core::slice::from_raw_parts(scratch.cast::<u8>(), len) };
    if EVENTS
        .output::<[u8]>(record, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        count(stats::LOST);
        return None;
    }
    let _ = WALKED.insert(&key, &1, 0);
    Some(Walked { hash, first: true })
}
