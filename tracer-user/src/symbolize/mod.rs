//! Stack symbolization with blazesym (Rust names demangled), kernel stacks through
//! kallsyms.
//!
//! User stacks are taken in two steps. [`Normalizer`] turns addresses into (object
//! file, file offset) while the process still lives, holding the object file open;
//! [`Symbolizer::raw`] names them later, from the file alone. Reading a debug
//! build's DWARF the first time takes most of a second: a process that exits
//! meanwhile (a test binary under `check`) still gets its stacks named.
use std::{
    cell::RefCell,
    collections::HashMap,
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{MapData, StackTraceMap};
use blazesym::{
    Pid,
    normalize::{NormalizeOpts, Normalizer as BlazeNormalizer, UserMeta},
    symbolize::{
        Input, Sym, Symbolized, Symbolizer as Blaze, evict,
        source::{Elf, Kernel, Source},
    },
};

mod source;

pub use source::{FrameFunction, SourceLine, has_path};

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    pub addr: u64,
    /// Demangled function name, without the hash suffix; `None` if unknown.
    pub symbol: Option<String>,
    /// Functions inlined at this address, innermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inlined: Vec<String>,
    /// Where each of `inlined` is in the source (same order): the file and line of this
    /// address inside that function.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inlined_at: Vec<SourceLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl Frame {
    /// Every function this frame stands for, innermost (inlined) first, each with its
    /// own source line.
    pub fn functions(&self) -> impl Iterator<Item = FrameFunction<'_>> {
        let inlined = self.inlined.iter().enumerate().map(|(i, name)| {
            let at = self.inlined_at.get(i);
            FrameFunction {
                name,
                file: at.and_then(|a| a.file.as_deref()),
                line: at.and_then(|a| a.line),
            }
        });
        let outer = self.symbol.iter().map(|name| FrameFunction {
            name,
            file: self.file.as_deref(),
            line: self.line,
        });
        inlined.chain(outer)
    }
}

/// How long an object file no stack used stays open and parsed. Long-running
/// commands (the daemon) see programs come and go: a binary replaced by a new version
/// must not keep its parse (tens of MB for a debug build), its descriptor and, deleted,
/// its disk space for as long as sockscope runs.
pub const OBJECT_IDLE: Duration = Duration::from_secs(60);

pub struct Symbolizer {
    blaze: Blaze,
    /// The objects blazesym has parsed, through our descriptor's path (which must stay
    /// open while blazesym caches it: the path names whatever file has that
    /// descriptor number), with when each was last used.
    held: RefCell<HashMap<PathBuf, (Arc<ObjectFile>, Instant)>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Self {
            blaze: Blaze::builder()
                .enable_demangling(true)
                .enable_inlined_fns(true)
                .build(),
            held: RefCell::new(HashMap::new()),
        }
    }

    /// Forgets the parse of every object no stack used for `idle`, and lets go of its
    /// descriptor (closed once no normalized stack holds it, see
    /// [`Normalizer::close_unused`]). Named again later, it is parsed again.
    pub fn evict_unused(&mut self, idle: Duration) {
        let Self { blaze, held } = self;
        held.get_mut().retain(|path, (_, used)| {
            if used.elapsed() < idle {
                return true;
            }
            let _ = blaze.evict(&evict::Evict::Elf(evict::Elf::new(path.clone())));
            false
        });
    }

    /// Frames of a kernel stack, named through kallsyms.
    pub fn kernel(&self, addrs: &[u64]) -> Vec<Frame> {
        // A failure (kallsyms unreadable) still yields the raw addresses.
        let symbolized = self
            .blaze
            .symbolize(&Source::Kernel(Kernel::default()), Input::AbsAddr(addrs))
            .unwrap_or_default();
        addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| match symbolized.get(i) {
                Some(sym) => Frame::of(addr, sym),
                None => Frame::unknown(addr),
            })
            .collect()
    }

    /// Frames of a stack normalized while its process lived (see [`Normalizer`]).
    pub fn raw(&self, frames: &[RawFrame]) -> Vec<Frame> {
        let mut out: Vec<Frame> = frames
            .iter()
            .map(|f| {
                let mut frame = Frame::unknown(f.addr);
                frame.symbol = f.note.as_ref().map(|n| format!("[{n}]"));
                frame
            })
            .collect();
        // Per object file: which frames, at which file offsets.
        let mut by_object: Vec<(&Arc<ObjectFile>, Vec<usize>, Vec<u64>)> = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let Some((object, offset)) = &f.object else {
                continue;
            };
            // Frames after the first are return addresses: the call is the instruction
            // before (the return address may be the next line, or another function
            // after a call that does not return), as debuggers look them up.
            let offset = if i == 0 {
                *offset
            } else {
                offset.saturating_sub(1)
            };
            match by_object.iter_mut().find(|(o, ..)| Arc::ptr_eq(o, object)) {
                Some((_, idx, offsets)) => {
                    idx.push(i);
                    offsets.push(offset);
                }
                None => by_object.push((object, vec![i], vec![offset])),
            }
        }
        for (object, idx, offsets) in by_object {
            // Through our own descriptor: the file may be gone from its path, or be
            // in another mount namespace; blazesym caches its parse by inode.
            let path = object.fd_path();
            self.held
                .borrow_mut()
                .insert(path.clone(), (Arc::clone(object), Instant::now()));
            let src = Source::Elf(Elf::new(path));
            let Ok(symbolized) = self.blaze.symbolize(&src, Input::FileOffset(&offsets)) else {
                continue;
            };
            for (&i, sym) in idx.iter().zip(&symbolized) {
                let mut frame = Frame::of(frames[i].addr, sym);
                frame.module = Some(object.shown.clone());
                out[i] = frame;
            }
        }
        out
    }
}

impl Frame {
    fn unknown(addr: u64) -> Self {
        Self {
            addr,
            symbol: None,
            inlined: Vec::new(),
            inlined_at: Vec::new(),
            module: None,
            file: None,
            line: None,
        }
    }

    fn of(addr: u64, symbolized: &Symbolized<'_>) -> Self {
        match symbolized {
            Symbolized::Sym(sym) => Self::named(addr, sym),
            _ => Self::unknown(addr),
        }
    }

    fn named(addr: u64, sym: &Sym<'_>) -> Self {
        Self {
            addr,
            symbol: Some(strip_hash(&sym.name).to_owned()),
            inlined: sym
                .inlined
                .iter()
                .rev()
                .map(|f| strip_hash(&f.name).to_owned())
                .collect(),
            inlined_at: sym
                .inlined
                .iter()
                .rev()
                .map(|f| SourceLine {
                    file: f
                        .code_info
                        .as_ref()
                        .map(|c| c.to_path().display().to_string()),
                    line: f.code_info.as_ref().and_then(|c| c.line),
                })
                .collect(),
            module: sym
                .module
                .as_ref()
                .map(|m| m.to_string_lossy().into_owned()),
            file: sym
                .code_info
                .as_ref()
                .map(|c| c.to_path().display().to_string()),
            line: sym.code_info.as_ref().and_then(|c| c.line),
        }
    }
}

/// An object file (executable or shared library) some process had mapped, kept open
/// so its code can be named after the process is gone.
#[derive(Debug)]
pub struct ObjectFile {
    file: File,
    /// Its path as the process saw it, for display.
    shown: String,
}

impl ObjectFile {
    /// An object file opened by another reader of process maps (`crate::unwind`).
    pub(crate) fn new(file: File, shown: String) -> Self {
        Self { file, shown }
    }

    /// Its path as the process saw it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// A user stack frame as an offset into an object file; `object` is `None` where the
/// address is in no file (JIT code, vDSO) or the process was already gone.
#[derive(Clone, Debug)]
pub struct RawFrame {
    pub addr: u64,
    pub object: Option<(Arc<ObjectFile>, u64)>,
    /// Not a frame: why the stack ends here (a DWARF unwinding that stopped early, see
    /// `crate::unwind`). Named `[NOTE]`, address 0, last in its stack.
    pub note: Option<Arc<str>>,
}

impl RawFrame {
    /// The note that ends a stack cut short.
    pub fn note(why: String) -> Self {
        Self {
            addr: 0,
            object: None,
            note: Some(why.into()),
        }
    }
}

/// A normalized user stack, innermost first.
pub type RawStack = Arc<[RawFrame]>;

/// Normalizes user stacks of live processes (cheap: one read of their memory map).
pub struct Normalizer {
    blaze: BlazeNormalizer,
    /// Every object file seen, by (device, inode): one descriptor each, with when
    /// it was last used.
    objects: HashMap<(u64, u64), (Arc<ObjectFile>, Instant)>,
}

impl Default for Normalizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Normalizer {
    pub fn new() -> Self {
        Self {
            blaze: BlazeNormalizer::builder().enable_build_ids(false).build(),
            objects: HashMap::new(),
        }
    }

    /// Closes the object files that no stack holds and none of the last `idle` used:
    /// a program that is gone lets go of its file (and, deleted, its disk space).
    pub fn close_unused(&mut self, idle: Duration) {
        self.objects
            .retain(|_, (object, used)| Arc::strong_count(object) > 1 || used.elapsed() < idle);
    }

    /// The frames of `addrs` in process `pid`; raw addresses if it is gone.
    pub fn user(&mut self, pid: u32, addrs: &[u64]) -> RawStack {
        let opts = NormalizeOpts {
            sorted_addrs: false,
            // Paths under /proc/PID/map_files open the very file mapped, even when
            // it was replaced or lives in another mount namespace.
            map_files: true,
            ..Default::default()
        };
        let Self { blaze, objects } = self;
        let Ok(normalized) = blaze.normalize_user_addrs_opts(Pid::from(pid), addrs, &opts) else {
            return addrs
                .iter()
                .map(|&addr| RawFrame {
                    addr,
                    object: None,
                    note: None,
                })
                .collect();
        };
        let mut opened: HashMap<usize, Option<Arc<ObjectFile>>> = HashMap::new();
        addrs
            .iter()
            .zip(&normalized.outputs)
            .map(|(&addr, &(offset, meta))| {
                let object = opened
                    .entry(meta)
                    .or_insert_with(|| match normalized.meta.get(meta) {
                        Some(UserMeta::Elf(elf)) => open_object(objects, &elf.path),
                        _ => None,
                    })
                    .clone();
                RawFrame {
                    addr,
                    object: object.map(|o| (o, offset)),
                    note: None,
                }
            })
            .collect()
    }
}

/// The object file mapped at `map_file`, opened once per (device, inode).
fn open_object(
    objects: &mut HashMap<(u64, u64), (Arc<ObjectFile>, Instant)>,
    map_file: &Path,
) -> Option<Arc<ObjectFile>> {
    let file = File::open(map_file).ok()?;
    let meta = file.metadata().ok()?;
    let key = (meta.dev(), meta.ino());
    if let Some((known, used)) = objects.get_mut(&key) {
        *used = Instant::now();
        return Some(Arc::clone(known));
    }
    let shown = std::fs::read_link(map_file)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| map_file.to_string_lossy().into_owned());
    let object = Arc::new(ObjectFile { file, shown });
    objects.insert(key, (Arc::clone(&object), Instant::now()));
    Some(object)
}

/// A symbolized stack, innermost first, shared by every socket created through it.
pub type Stack = Arc<[Frame]>;

/// Symbolized stacks by stack id. Symbolizing costs tens of microseconds and a stack's
/// frames take kilobytes, while sockets of one process come from a handful of code
/// paths: each (process, stack id) is symbolized once and shared. Stack ids are
/// stable while the process lives: the ring reader deletes a process's stacks from the
/// stack map only after its exit.
/// How often idle object files are looked for.
pub const EVICT_EVERY: Duration = Duration::from_secs(10);

pub struct StackCache {
    symbolizer: Symbolizer,
    last_evict: Instant,
    object_idle: Duration,
    /// Looked up once per record: keyed by the kernel's ids, so a fast hash.
    user: rustc_hash::FxHashMap<(u32, i32), Stack>,
    kernel: rustc_hash::FxHashMap<i32, Stack>,
    empty: Stack,
}

impl Default for StackCache {
    fn default() -> Self {
        Self::new()
    }
}

impl StackCache {
    pub fn new() -> Self {
        Self {
            symbolizer: Symbolizer::new(),
            last_evict: Instant::now(),
            object_idle: OBJECT_IDLE,
            user: Default::default(),
            kernel: Default::default(),
            empty: Arc::from(Vec::new()),
        }
    }

    /// User stack `id` of process `pid`, normalized by the reader as `raw` (empty if
    /// no stack was taken).
    pub fn user(&mut self, pid: u32, id: i32, raw: Option<&RawStack>) -> Stack {
        let Some(raw) = raw.filter(|_| id >= 0) else {
            return self.empty.clone();
        };
        let sym = &self.symbolizer;
        self.user
            .entry((pid, id))
            .or_insert_with(|| sym.raw(raw).into())
            .clone()
    }

    pub fn kernel(&mut self, stacks: &StackTraceMap<MapData>, id: i32) -> Stack {
        if id < 0 {
            return self.empty.clone();
        }
        let sym = &self.symbolizer;
        self.kernel
            .entry(id)
            .or_insert_with(|| sym.kernel(&stack_addrs(stacks, id)).into())
            .clone()
    }

    /// User stack `id` of the live process `pid`, read from the stack map and
    /// normalized now (stacks that did not come with a ring record, such as the last
    /// I/O on a leaked socket).
    pub fn user_from_map(&mut self, stacks: &StackTraceMap<MapData>, pid: u32, id: i32) -> Stack {
        if id < 0 {
            return self.empty.clone();
        }
        let raw = Normalizer::new().user(pid, &stack_addrs(stacks, id));
        self.user(pid, id, Some(&raw))
    }

    /// A process exited: its pid may come back with other code at the same addresses.
    pub fn forget_process(&mut self, pid: u32) {
        self.user.retain(|(p, _), _| *p != pid);
    }

    /// How long an object file no stack uses stays parsed ([`OBJECT_IDLE`] by default).
    pub fn object_idle(&mut self, idle: Duration) {
        self.object_idle = idle;
    }

    /// Lets go of the object files no stack has used for a while (see
    /// [`Symbolizer::evict_unused`]); cheap enough to call on every pass.
    pub fn evict_unused(&mut self) {
        if self.last_evict.elapsed() >= EVICT_EVERY {
            self.last_evict = Instant::now();
            self.symbolizer.evict_unused(self.object_idle);
        }
    }
}

/// Legacy Rust mangling leaves a `::h0123456789abcdef` suffix after demangling.
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

/// The instruction pointers of stack `id`, innermost first; empty if the id is
/// negative (no stack was taken) or no longer in the map.
pub fn stack_addrs(stacks: &StackTraceMap<MapData>, id: i32) -> Vec<u64> {
    let Ok(id) = u32::try_from(id) else {
        return Vec::new();
    };
    stacks
        .get(&id, 0)
        .map(|trace| {
            trace
                .frames()
                .iter()
                .map(|f| f.ip)
                .filter(|&ip| ip != 0)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_legacy_hash_only() {
        assert_eq!(
            strip_hash("udp_workload::make::h0123456789abcdef"),
            "udp_workload::make"
        );
        assert_eq!(strip_hash("std::net::h_short"), "std::net::h_short");
        assert_eq!(strip_hash("main"), "main");
    }
}
