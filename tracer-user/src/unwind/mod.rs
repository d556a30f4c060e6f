//! DWARF unwinding of creating stacks (`--stacks dwarf|auto`), for programs built
//! without frame pointers (Rust release builds by default), where the kernel's
//! frame-pointer walk stops after a frame or two.
//!
//! The BPF side (tracer-ebpf/src/stack_sample.rs) sends a [`StackSample`] — user
//! registers and the top of the user stack — just before the create record of the
//! processes being traced (and before their `pc_open` marker record, whose stack names
//! where the application made its PeerConnection). The ring reader ([`crate::stream`])
//! hands it here with that record; it is unwound with framehop over the CFI (`.eh_frame` with its
//! `.eh_frame_hdr` index, or `.debug_frame`) of the objects the process maps, into the
//! same [`RawStack`] the frame-pointer path makes, so correlation and symbolization do
//! not change. The process's maps are read at its first sample (the kernel wakes the
//! reader at once for it) and kept, with the objects open, so a process that exits
//! right after creating its sockets still gets its stacks unwound and named.
//!
//! Stacks do not lie: a frame is added only when the CFI of the object holding the
//! address covers it (framehop would silently fall back to frame pointers); when
//! unwinding stops early, the stack ends with a note frame that says where and why
//! (no CFI, stack copy too short, address in no object).
use std::{collections::HashMap, fmt, sync::Arc};

use aya::maps::MapData;
use framehop::{FrameAddress, MayAllocateDuringUnwind, Unwinder as _};
use tracer_common::{
    CreateEvent, EventKind, MarkerEvent, ReleaseEvent, STACK_SAMPLE_MAX, StackSample, sample_flags,
    sample_reg,
};

mod object;
mod process;

pub use object::{FramePointers, ObjectCfi};
pub use process::{Objects, ProcessMaps};

use crate::{
    events::IoStackEvent,
    symbolize::{RawFrame, RawStack},
};

/// How creating stacks are taken (`--stacks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StackMode {
    /// The kernel's frame-pointer walk only (cheapest; needs programs built with frame
    /// pointers).
    Fp,
    /// Copy registers and the top of the user stack for every traced socket creation
    /// and unwind it with the objects' CFI.
    Dwarf,
    /// DWARF for processes whose main executable lacks frame pointers (or whose
    /// frame-pointer walk comes back short), frame pointers for the others; a process
    /// not judged yet is sampled.
    #[default]
    Auto,
}

impl StackMode {
    /// `STACK_MODE` in the BPF programs.
    pub fn kernel_value(self) -> u8 {
        match self {
            Self::Fp => 0,
            Self::Dwarf => 1,
            Self::Auto => 2,
        }
    }
}

impl fmt::Display for StackMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fp => "fp",
            Self::Dwarf => "dwarf",
            Self::Auto => "auto",
        })
    }
}

/// `--stacks` and `--stack-bytes`, shared by the commands that judge processes.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct StackArgs {
    /// How creating stacks are taken: fp (the kernel's frame-pointer walk), dwarf (copy
    /// registers and the top of the user stack, unwind with the objects' CFI: for
    /// programs built without frame pointers), auto (dwarf for processes whose
    /// executable lacks frame pointers). `sockscope doctor --pid P` says what auto
    /// picks for a process.
    #[arg(long = "stacks", value_enum, default_value_t = StackMode::Auto, value_name = "MODE")]
    pub mode: StackMode,
    /// Bytes of user stack copied per socket creation in dwarf mode (default 16384, at
    /// most 32704): raise it when stacks end with "beyond the ... bytes of stack copied".
    #[arg(long, value_name = "BYTES")]
    pub stack_bytes: Option<u32>,
}

/// Most frames of an unwound stack (the kernel's default for frame-pointer walks).
pub const MAX_FRAMES: usize = 127;

/// Stack ids the reader gives DWARF-unwound stacks in create records: above any id of
/// the kernel's stack map, one per distinct (process, stack), so consumers that cache
/// stacks by (process, id) keep them apart (the frame-pointer id of a truncated walk
/// is shared by every stack through the same innermost frames).
pub const DWARF_STACK_ID_BASE: i32 = 1 << 30;

/// A decoded [`StackSample`] record.
#[derive(Clone, Debug)]
pub struct Sample {
    pub pid: u32,
    pub tid: u32,
    pub cookie: u64,
    pub regs: [u64; sample_reg::COUNT],
    pub stack: Vec<u8>,
    pub read_error: i32,
    pub wanted: u32,
    /// The kernel stopped the process for us (see [`sample_flags::STOPPED`]).
    pub stopped: bool,
    /// [`sample_flags`] as the kernel sent them.
    pub flags: u16,
    /// See [`StackSample::ts_ns`].
    pub ts_ns: u64,
}

impl Sample {
    /// Whether a ring record is a stack sample.
    pub fn is_sample(bytes: &[u8]) -> bool {
        bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
            == Some(EventKind::StackSample as u32)
    }

    /// Decodes a record; `None` if it is short or its length field lies.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let head = size_of::<StackSample>();
        if bytes.len() < head {
            return None;
        }
        // SAFETY: length checked; a plain repr(C) record of integers.
        let h: StackSample = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let len = h.len as usize;
        if len > STACK_SAMPLE_MAX {
            return None;
        }
        let stack = bytes.get(head..head + len)?.to_vec();
        Some(Self {
            pid: h.pid,
            tid: h.tid,
            cookie: h.cookie,
            regs: h.regs,
            stack,
            read_error: h.read_error,
            wanted: u32::from(h.wanted),
            stopped: h.flags & sample_flags::STOPPED != 0,
            flags: h.flags,
            ts_ns: h.ts_ns,
        })
    }

    fn read_stack(&self, addr: u64) -> Result<u64, ()> {
        let off = addr.checked_sub(self.regs[sample_reg::SP]).ok_or(())?;
        let off = usize::try_from(off).map_err(|_| ())?;
        let bytes = self
            .stack
            .get(off..off.checked_add(8).ok_or(())?)
            .ok_or(())?;
        Ok(u64::from_ne_bytes(bytes.try_into().map_err(|_| ())?))
    }
}

/// An unwound stack: return addresses (the first is the instruction pointer), each with
/// its mapping, and why unwinding stopped early (`None`: it reached the stack's root).
pub struct Unwound<'a> {
    pub frames: Vec<(u64, Option<&'a process::Mapping>)>,
    pub stop: Option<String>,
}

type Cache = framehop::CacheNative<MayAllocateDuringUnwind>;

fn unwind_regs(regs: &[u64; sample_reg::COUNT]) -> framehop::UnwindRegsNative {
    #[cfg(target_arch = "aarch64")]
    {
        framehop::UnwindRegsNative::new(
            regs[sample_reg::LR],
            regs[sample_reg::SP],
            regs[sample_reg::FP],
        )
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        framehop::UnwindRegsNative::new(
            regs[sample_reg::IP],
            regs[sample_reg::SP],
            regs[sample_reg::FP],
        )
    }
}

/// Unwinds `sample` over the process's objects.
pub fn unwind<'a>(maps: &'a ProcessMaps, cache: &mut Cache, sample: &Sample) -> Unwound<'a> {
    let mut frames = Vec::new();
    let ip = sample.regs[sample_reg::IP];
    if sample.stack.is_empty() {
        let stop = format!(
            "the user stack could not be copied (error {}): only the instruction pointer is known",
            sample.read_error
        );
        frames.push((ip, maps.mapping(ip)));
        return Unwound {
            frames,
            stop: Some(stop),
        };
    }
    let mut regs = unwind_regs(&sample.regs);
    let mut address = FrameAddress::from_instruction_pointer(ip);
    let mut read = |a: u64| sample.read_stack(a);
    loop {
        let addr = address.address();
        let mapping = maps.mapping(address.address_for_lookup());
        frames.push((addr, mapping));
        if frames.len() >= MAX_FRAMES {
            let stop = format!("stopped after {MAX_FRAMES} frames");
            return Unwound {
                frames,
                stop: Some(stop),
            };
        }
        if let Err(why) = cfi_covers(maps, mapping, address) {
            return Unwound {
                frames,
                stop: Some(why),
            };
        }
        match maps
            .unwinder
            .unwind_frame(address, &mut regs, cache, &mut read)
        {
            Ok(None) => return Unwound { frames, stop: None },
            Ok(Some(ra)) => match FrameAddress::from_return_address(ra) {
                Some(next) => address = next,
                None => {
                    return Unwound {
                        frames,
                        stop: Some(format!(
                            "the CFI of the frame at {addr:#x} gives a null return address"
                        )),
                    };
                }
            },
            Err(framehop::Error::CouldNotReadStack(at)) => {
                let sp = sample.regs[sample_reg::SP];
                let stop = format!(
                    "the caller of {addr:#x} is saved at sp+{:#x}, beyond the {} bytes of stack copied (asked {}; raise --stack-bytes)",
                    at.wrapping_sub(sp),
                    sample.stack.len(),
                    sample.wanted
                );
                return Unwound {
                    frames,
                    stop: Some(stop),
                };
            }
            Err(e) => {
                return Unwound {
                    frames,
                    stop: Some(format!("unwinding stopped at {addr:#x}: {e}")),
                };
            }
        }
    }
}

/// Ok when the CFI of the object at `address` covers it; otherwise why not.
fn cfi_covers(
    maps: &ProcessMaps,
    mapping: Option<&process::Mapping>,
    address: FrameAddress,
) -> Result<(), String> {
    let addr = address.address();
    let Some(m) = mapping else {
        return Err(format!(
            "{addr:#x} is in no file-backed executable mapping (JIT code, vDSO, or mapped after the process's maps were read)"
        ));
    };
    let cfi = m
        .object
        .cfi
        .as_ref()
        .map_err(|e| format!("cannot read {}: {e}", m.object.file.shown()))?;
    if !cfi.has_cfi() {
        return Err(format!("no CFI (.eh_frame, .debug_frame) in {}", cfi.shown));
    }
    let lookup = address.address_for_lookup();
    let svma = maps.svma(m, lookup).ok_or_else(|| {
        format!(
            "{addr:#x} cannot be placed in {} (its load segments)",
            cfi.shown
        )
    })?;
    match cfi.covers(svma) {
        Some(false) => Err(format!(
            "no CFI covers {addr:#x} ({}+{:#x})",
            cfi.shown,
            lookup - m.start + m.offset
        )),
        _ => Ok(()),
    }
}

/// A distinct unwound stack of a process: its addresses and the note that ends it.
type StackKey = (u32, Vec<u64>, Option<Arc<str>>);

/// The reader's DWARF state: processes' maps, pending samples, auto-mode verdicts.
pub struct DwarfStacks {
    mode: StackMode,
    objects: Objects,
    processes: HashMap<u32, ProcessMaps>,
    /// Processes whose maps could not be read (gone already).
    unreadable: HashMap<u32, ()>,
    cache: Cache,
    /// The last sample of each thread, until its create (or marker) record comes.
    pending: HashMap<u32, Sample>,
    /// `auto`: the kernel's per-process choice (`STACK_MODES`), and ours.
    modes: Option<aya::maps::HashMap<MapData, u32, u8>>,
    verdicts: HashMap<u32, bool>,
    /// Ids given to distinct unwound stacks (see [`DWARF_STACK_ID_BASE`]).
    ids: HashMap<StackKey, i32>,
    next_id: i32,
    /// Processes the kernel stopped at their first sample, to continue once their
    /// create record is handled.
    stopped: Vec<u32>,
    /// Unwound stacks so far and their total time, for the benchmarks.
    pub unwound: u64,
    pub unwind_ns: u64,
}

/// Frame-pointer stacks shorter than this make an `auto` process sampled from then on.
const SHORT_FP_STACK: usize = 3;

impl DwarfStacks {
    pub fn new(mode: StackMode, modes: Option<aya::maps::HashMap<MapData, u32, u8>>) -> Self {
        Self {
            mode,
            objects: Objects::default(),
            processes: HashMap::new(),
            unreadable: HashMap::new(),
            cache: Cache::new(),
            pending: HashMap::new(),
            modes,
            verdicts: HashMap::new(),
            ids: HashMap::new(),
            next_id: 0,
            stopped: Vec::new(),
            unwound: 0,
            unwind_ns: 0,
        }
    }

    /// Whether records may come with samples at all.
    pub fn active(&self) -> bool {
        self.mode != StackMode::Fp
    }

    /// A stack sample record from the ring: kept for the create (or marker) record
    /// that follows; the process's maps are read now if they were not (it may exit
    /// soon). A sample of a send or receive ([`sample_flags::FOR_IO`]) has no record
    /// after it: it is unwound now and returned as one.
    pub fn sample(&mut self, bytes: &[u8]) -> Option<(IoStackEvent, RawStack)> {
        let Some(sample) = Sample::decode(bytes) else {
            crate::say!("sockscope: skipped a malformed stack sample record");
            return None;
        };
        let pid = sample.pid;
        self.ensure_maps(pid);
        if sample.stopped {
            self.stopped.push(pid);
        }
        if sample.flags & sample_flags::FOR_IO != 0 {
            let (id, raw, _) = self.unwind_sample(&sample);
            let event = IoStackEvent {
                pid,
                tid: sample.tid,
                cookie: sample.cookie,
                ts_ns: sample.ts_ns,
                user_stack: id,
            };
            return Some((event, raw));
        }
        self.pending.insert(sample.tid, sample);
        None
    }

    /// Continues the processes the kernel stopped for us (see [`Sample::stopped`]).
    /// Called after each create record and at the end of each pass over the ring: a
    /// process is never left stopped.
    pub fn continue_stopped(&mut self) {
        for pid in self.stopped.drain(..) {
            // SAFETY: continues a process the kernel stopped for us.
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        }
    }

    fn ensure_maps(&mut self, pid: u32) {
        if self.processes.contains_key(&pid) || self.unreadable.contains_key(&pid) {
            return;
        }
        match ProcessMaps::read(pid, &mut self.objects) {
            Some(maps) => {
                self.judge(pid, &maps);
                self.processes.insert(pid, maps);
            }
            None => {
                self.unreadable.insert(pid, ());
            }
        }
    }

    /// `auto`, at a process's first sample: an executable whose functions mostly do
    /// not set up frame pointers needs samples. Otherwise the verdict waits for the
    /// first create record, where both walks are compared ([`fp_walk_suffices`]):
    /// a Rust program built without frame pointers still links the standard library,
    /// which is built with them, so the executable alone cannot tell.
    fn judge(&mut self, pid: u32, maps: &ProcessMaps) {
        if self.mode != StackMode::Auto || self.verdicts.contains_key(&pid) {
            return;
        }
        let fp = maps
            .exe_object()
            .and_then(|o| o.cfi.as_ref().ok())
            .and_then(|c| c.frame_pointers)
            .is_some_and(FramePointers::kept);
        if !fp {
            self.set_verdict(pid, true);
        }
    }

    fn set_verdict(&mut self, pid: u32, dwarf: bool) {
        self.verdicts.insert(pid, dwarf);
        if let Some(modes) = self.modes.as_mut()
            && let Err(e) = modes.insert(pid, u8::from(dwarf), 0)
        {
            crate::say!("sockscope: cannot record the stack mode of pid {pid}: {e}");
        }
    }

    /// The create record `c` was read: its unwound user stack if a sample came with
    /// it (`c.user_stack` then becomes the stack's id, see [`DWARF_STACK_ID_BASE`]);
    /// otherwise its frame-pointer stack, from `fp` (in `auto`, a short one makes the
    /// process sampled from then on).
    pub fn create(
        &mut self,
        c: &mut CreateEvent,
        fp: impl FnOnce() -> Option<RawStack>,
    ) -> Option<RawStack> {
        let cookie = c.cookie;
        self.record(c.pid, c.tid, &mut c.user_stack, fp, |s| {
            s.cookie == cookie
                && s.flags & (sample_flags::FOR_MARKER | sample_flags::FOR_RELEASE) == 0
        })
    }

    /// The marker record `m` was read (`pc_open` carries a stack): as [`Self::create`],
    /// with the sample the kernel sent for the marker.
    pub fn marker(
        &mut self,
        m: &mut MarkerEvent,
        fp: impl FnOnce() -> Option<RawStack>,
    ) -> Option<RawStack> {
        if m.user_stack < 0 {
            return None;
        }
        self.record(m.pid, m.tid, &mut m.user_stack, fp, |s| {
            s.flags & sample_flags::FOR_MARKER != 0
        })
    }

    /// The release record `r` was read (fentry and kprobe backends take its stack): as
    /// [`Self::create`], with the sample the kernel sent for the release.
    pub fn release(
        &mut self,
        r: &mut ReleaseEvent,
        fp: impl FnOnce() -> Option<RawStack>,
    ) -> Option<RawStack> {
        if r.user_stack < 0 && !self.pending.contains_key(&r.tid) {
            return None;
        }
        let cookie = r.cookie;
        self.record(r.pid, r.tid, &mut r.user_stack, fp, |s| {
            s.cookie == cookie && s.flags & sample_flags::FOR_RELEASE != 0
        })
    }

    /// A record with a user stack (`stack_id`) of thread `tid` of `pid` was read: its
    /// sample, if the one pending for the thread is its (`belongs`), is unwound and
    /// `stack_id` set to the unwound stack's id; otherwise the frame-pointer stack
    /// `fp` stands.
    fn record(
        &mut self,
        pid: u32,
        tid: u32,
        stack_id: &mut i32,
        fp: impl FnOnce() -> Option<RawStack>,
        belongs: impl Fn(&Sample) -> bool,
    ) -> Option<RawStack> {
        let sample = match self.pending.remove(&tid) {
            Some(s) if s.pid == pid && belongs(&s) => s,
            _ => {
                let raw = fp();
                if self.mode == StackMode::Auto
                    && self.verdicts.get(&pid) == Some(&false)
                    && raw.as_ref().map_or(0, |r| r.len()) < SHORT_FP_STACK
                {
                    self.set_verdict(pid, true);
                }
                return raw;
            }
        };
        let (id, raw, addrs) = self.unwind_sample(&sample);
        if self.mode == StackMode::Auto && !self.verdicts.contains_key(&pid) {
            let fp_addrs: Vec<u64> = fp()
                .map(|raw| raw.iter().map(|f| f.addr).collect())
                .unwrap_or_default();
            let reached_root = raw.last().is_some_and(|f| f.note.is_none());
            let dwarf = !(reached_root && fp_walk_suffices(&fp_addrs, &addrs));
            self.set_verdict(pid, dwarf);
        }
        *stack_id = id;
        self.continue_stopped();
        Some(raw)
    }

    /// Unwinds `sample`: the stack's id (one per distinct stack of the process, see
    /// [`DWARF_STACK_ID_BASE`]), its frames (ending with a note where unwinding stopped
    /// early) and their addresses.
    fn unwind_sample(&mut self, sample: &Sample) -> (i32, RawStack, Vec<u64>) {
        let pid = sample.pid;
        let started = std::time::Instant::now();
        self.ensure_maps(pid);
        let (addrs, frames) = match self.processes.get(&pid) {
            Some(maps) => {
                let unwound = unwind(maps, &mut self.cache, sample);
                let addrs: Vec<u64> = unwound.frames.iter().map(|(a, _)| *a).collect();
                let mut frames: Vec<RawFrame> = unwound
                    .frames
                    .iter()
                    .map(|&(addr, m)| RawFrame {
                        addr,
                        object: m.map(|m| (Arc::clone(&m.object.file), addr - m.start + m.offset)),
                        note: None,
                    })
                    .collect();
                if let Some(stop) = unwound.stop {
                    frames.push(RawFrame::note(format!("unwinding stopped: {stop}")));
                }
                (addrs, frames)
            }
            None => {
                let ip = sample.regs[sample_reg::IP];
                let frames = vec![
                    RawFrame {
                        addr: ip,
                        object: None,
                        note: None,
                    },
                    RawFrame::note(
                        "unwinding stopped: the process was gone before its memory map could be read"
                            .to_owned(),
                    ),
                ];
                (vec![ip], frames)
            }
        };
        self.unwound += 1;
        self.unwind_ns += started.elapsed().as_nanos() as u64;
        let note = frames.last().and_then(|f| f.note.clone());
        let next = &mut self.next_id;
        let id = *self
            .ids
            .entry((pid, addrs.clone(), note))
            .or_insert_with(|| {
                let id = DWARF_STACK_ID_BASE + *next;
                *next = (*next + 1) % (i32::MAX - DWARF_STACK_ID_BASE);
                id
            });
        (id, frames.into(), addrs)
    }

    /// The process executed a new program: what was known of it no longer holds.
    pub fn exec(&mut self, pid: u32) {
        self.forget(pid);
    }

    /// The process exited.
    pub fn exited(&mut self, pid: u32) {
        self.forget(pid);
    }

    fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.unreadable.remove(&pid);
        self.pending.retain(|_, s| s.pid != pid);
        self.ids.retain(|(p, ..), _| *p != pid);
        if self.verdicts.remove(&pid).is_some()
            && let Some(modes) = self.modes.as_mut()
        {
            let _ = modes.remove(&pid);
        }
        self.objects.prune();
    }
}

/// Whether the kernel's frame-pointer walk (`fp`) found what DWARF unwinding found
/// (`dwarf`, which reached the stack's root): only frames DWARF has too, and at most
/// two fewer (the walk skips the caller of a leaf function without a frame, such as
/// libc's `socket`, and may end a frame earlier or later at the root).
pub fn fp_walk_suffices(fp: &[u64], dwarf: &[u64]) -> bool {
    !fp.is_empty() && fp.len() + 2 >= dwarf.len() && fp.iter().all(|a| dwarf.contains(a))
}

/// What `--stacks auto` would do for process `pid`, and why (for `doctor`).
pub fn explain_auto(pid: u32) -> Result<(StackMode, String), String> {
    let mut objects = Objects::default();
    let maps = ProcessMaps::read(pid, &mut objects)
        .ok_or_else(|| format!("cannot read /proc/{pid}/maps (no such process, or not allowed)"))?;
    let Some(exe) = maps.exe_object() else {
        return Ok((
            StackMode::Dwarf,
            "its main executable is not among its mappings: sampled (dwarf)".to_owned(),
        ));
    };
    let shown = exe.file.shown().to_owned();
    let cfi = match &exe.cfi {
        Ok(cfi) => cfi,
        Err(e) => return Ok((StackMode::Dwarf, format!("{shown}: {e}: sampled (dwarf)"))),
    };
    let cfi_note = if cfi.has_cfi() {
        "has CFI"
    } else {
        "has no CFI: DWARF unwinding stops in it"
    };
    Ok(match cfi.frame_pointers {
        Some(fp) if fp.kept() => (
            StackMode::Auto,
            format!(
                "{shown}: {} of {} sampled functions set up a frame pointer: its first socket is sampled, and it keeps frame pointers (fp) if their walk finds what DWARF unwinding finds, DWARF otherwise (a Rust program built without them links a standard library built with them); {cfi_note}",
                fp.with_fp, fp.sampled
            ),
        ),
        Some(fp) => (
            StackMode::Dwarf,
            format!(
                "{shown}: {} of {} sampled functions set up a frame pointer: built without them, DWARF unwinding (dwarf); {cfi_note}",
                fp.with_fp, fp.sampled
            ),
        ),
        None => (
            StackMode::Dwarf,
            format!(
                "{shown}: frame pointers cannot be told (no .eh_frame_hdr table): sampled (dwarf); {cfi_note}"
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_pointer_walk_suffices_only_when_it_finds_what_dwarf_finds() {
        let dwarf = [1, 2, 3, 4, 5, 6];
        assert!(
            fp_walk_suffices(&[1, 3, 4, 5, 6], &dwarf),
            "caller of a leaf skipped"
        );
        assert!(!fp_walk_suffices(&[1, 2], &dwarf), "short");
        assert!(
            !fp_walk_suffices(&[1, 2, 3, 4, 99], &dwarf),
            "a frame DWARF lacks"
        );
        assert!(!fp_walk_suffices(&[], &dwarf));
    }

    #[test]
    fn decodes_samples_and_refuses_lying_lengths() {
        let h = StackSample {
            kind: EventKind::StackSample as u32,
            pid: 1,
            tid: 2,
            len: 16,
            cookie: 3,
            regs: [0x1000, 0x7000, 0, 0],
            read_error: 0,
            wanted: 16,
            flags: sample_flags::STOPPED,
            ts_ns: 0,
        };
        let mut bytes = unsafe {
            std::slice::from_raw_parts(
                (&h as *const StackSample).cast::<u8>(),
                size_of::<StackSample>(),
            )
        }
        .to_vec();
        bytes.extend(0x1122u64.to_ne_bytes());
        bytes.extend(0x3344u64.to_ne_bytes());
        assert!(Sample::is_sample(&bytes));
        let s = Sample::decode(&bytes).expect("decodes");
        assert_eq!((s.pid, s.tid, s.cookie, s.stack.len()), (1, 2, 3, 16));
        assert!(s.stopped);
        assert_eq!(s.read_stack(0x7008), Ok(0x3344));
        assert_eq!(s.read_stack(0x7010), Err(()), "beyond the copy");
        assert_eq!(s.read_stack(0x6ff8), Err(()), "below the stack pointer");
        assert!(Sample::decode(&bytes[..bytes.len() - 1]).is_none(), "short");
        assert!(Sample::decode(&bytes[..10]).is_none());
    }

    fn record_of(h: &StackSample, stack: &[u8]) -> Vec<u8> {
        // SAFETY: a view of a plain repr(C) record.
        let mut bytes = unsafe {
            std::slice::from_raw_parts(
                (h as *const StackSample).cast::<u8>(),
                size_of::<StackSample>(),
            )
        }
        .to_vec();
        bytes.extend_from_slice(stack);
        bytes
    }

    /// A sample of a send or receive stands alone: it comes back at once as an I/O
    /// stack with the operation's socket and time; one for a create record waits for
    /// it. An instruction pointer in no mapping of this process ends the stack with a
    /// note saying so, not with invented frames.
    #[test]
    fn io_samples_are_unwound_at_once_and_say_where_they_stop() {
        let pid = std::process::id();
        let mut dwarf = DwarfStacks::new(StackMode::Dwarf, None);
        let h = StackSample {
            kind: EventKind::StackSample as u32,
            pid,
            tid: pid,
            len: 16,
            cookie: 77,
            regs: [0x10, 0x7000, 0, 0],
            read_error: 0,
            wanted: 16,
            flags: sample_flags::FOR_IO,
            ts_ns: 123_456,
        };
        let (io, raw) = dwarf
            .sample(&record_of(&h, &[0; 16]))
            .expect("an I/O sample is returned at once");
        assert_eq!(
            (io.pid, io.tid, io.cookie, io.ts_ns),
            (pid, pid, 77, 123_456)
        );
        assert!(io.user_stack >= DWARF_STACK_ID_BASE);
        assert_eq!(raw.len(), 2, "the instruction pointer, then the note");
        assert_eq!(raw[0].addr, 0x10);
        let note = raw[1].note.as_deref().expect("a note ends it");
        assert!(
            note.contains("0x10 is in no file-backed executable mapping"),
            "{note}"
        );
        // The same stack again: the same id.
        let (again, _) = dwarf.sample(&record_of(&h, &[0; 16])).expect("again");
        assert_eq!(again.user_stack, io.user_stack);

        let create = StackSample { flags: 0, ..h };
        assert!(
            dwarf.sample(&record_of(&create, &[0; 16])).is_none(),
            "a create record's sample waits for its record"
        );
    }
}
