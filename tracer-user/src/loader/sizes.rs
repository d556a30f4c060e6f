//! The sizes of the kernel maps that lock the most memory, derived at load from what
//! this tracing and this host need rather than fixed for the largest case. Every byte
//! of a BPF map is locked kernel memory, charged to sockscope whether used or not.
use aya::EbpfLoader;

/// Stack map slots when creating stacks are walked by the create program: the map then
/// holds only marker, after-end I/O, releasing and kernel stacks, a few per call site.
/// Each slot is 127 frames (1 KiB).
pub const STACKS_WALKED: u32 = 2048;
/// When creating stacks go through `bpf_get_stackid` (see `TracerBuilder::walks_stacks`):
/// a stack whose hash bucket is taken is lost, so the map is kept sparse.
pub const STACKS_HELPER: u32 = 16384;
/// Tracked sockets (released by another task) under a comm or cgroup filter.
pub const TRACKED_SCOPED: u32 = 65536;
pub const TRACKED_MAX: u32 = 262_144;
/// Tracked sockets' slots in front of `TRACKED` (16 bytes each; see tracer-ebpf's
/// slots.rs): a power of two, at most this many.
pub const TRACKED_SLOTS_MAX: u32 = 16384;
/// Threads' slots in front of `PENDING` (32 bytes each) and `IO_IN_FLIGHT` (40 bytes),
/// by thread id.
pub const THREAD_SLOTS: u32 = 4096;
/// Watched sockets' slots in front of `WATCHED_FDS` (32 bytes each), by (process, fd):
/// a process's fds below this take a slot each; `check`, `watch` and the daemon only.
pub const WATCHED_SLOTS: u32 = 8192;
/// `WATCH_KEY_OF` entries host-wide (the daemon: every watched socket of the host).
pub const WATCH_KEYS_HOST: u32 = 16384;
/// In a scoped session the kernel's sockets keep their key in `TRACKED`: only the
/// sockets user space watches itself (from before the attach) are here.
pub const WATCH_KEYS_SCOPED: u32 = 1024;

/// Marker specs, one per attached marker (`USDT_SPECS`, about 220 bytes each). Following
/// one process: the markers of its binary and libraries, tens at most.
pub const MARKERS_ONE_PROCESS: u32 = 256;
/// Following many (`check`: every marked binary its command runs; the daemon: every
/// marked binary on the host; trace by comm).
pub const MARKERS_MANY: u32 = 4096;
/// Threads inside a PeerConnection's span at once (`CURRENT_PC`), and PeerConnections
/// ended within their grace (`PC_ENDED`, least recently used first out): one process,
/// or many.
pub const SPANS_ONE_PROCESS: u32 = 1024;
pub const SPANS_MANY: u32 = 8192;
pub const ENDED_ONE_PROCESS: u32 = 1024;
pub const ENDED_MANY: u32 = 4096;
/// Without BPF attach cookies (Linux < 5.15) markers are told apart by file offset
/// (`USDT_SITES`); with them the map is never written.
pub const SITES_WITHOUT_COOKIES: u32 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// `STACKS` entries.
    pub stacks: u32,
    /// `TRACKED` entries: sockets of the traced scope open at once.
    pub tracked: u32,
    /// `TRACKED_SLOTS` entries (1 when nothing is tracked).
    pub tracked_slots: u32,
    /// `tracked_slots - 1`, the programs' index mask.
    tracked_slot_mask: u32,
    /// `PENDING_SLOTS` and `IO_CALL_SLOTS` entries, and their mask.
    pub thread_slots: u32,
    thread_slot_mask: u32,
    /// `WATCHED_SLOTS` entries (1 without the I/O hooks), and their mask.
    pub watched_slots: u32,
    watched_slot_mask: u32,
    /// `WATCH_KEY_OF` entries.
    pub watch_keys: u32,
    /// `USDT_SPECS` entries: markers attached at once.
    pub markers: u32,
    /// `USDT_SITES` entries.
    pub sites: u32,
    /// `CURRENT_PC` entries.
    pub spans: u32,
    /// `PC_ENDED` entries.
    pub ended: u32,
}

impl MapSizes {
    /// `pid`: the `--pid` filter (0: none); `scoped`: a comm or cgroup filter;
    /// `attach_cookies`: markers are told apart by BPF attach cookie.
    pub fn new(walk_stacks: bool, pid: u32, scoped: bool, attach_cookies: bool) -> Self {
        let one_process = pid != 0;
        let tracked = if pid != 0 {
            // One process holds at most its open-file limit of sockets.
            open_files_limit(pid).map_or(TRACKED_SCOPED, |n| n.clamp(1024, TRACKED_MAX))
        } else if scoped {
            TRACKED_SCOPED
        } else {
            // Without a filter every socket is reported, and the map is never used.
            1
        };
        let tracked_slots = if tracked > 1 {
            tracked.next_power_of_two().min(TRACKED_SLOTS_MAX)
        } else {
            1
        };
        Self {
            tracked_slots,
            tracked_slot_mask: tracked_slots - 1,
            thread_slots: THREAD_SLOTS,
            thread_slot_mask: THREAD_SLOTS - 1,
            watched_slots: WATCHED_SLOTS,
            watched_slot_mask: WATCHED_SLOTS - 1,
            stacks: if walk_stacks {
                STACKS_WALKED
            } else {
                STACKS_HELPER
            },
            tracked,
            watch_keys: if tracked > 1 {
                WATCH_KEYS_SCOPED
            } else {
                WATCH_KEYS_HOST
            },
            markers: if one_process {
                MARKERS_ONE_PROCESS
            } else {
                MARKERS_MANY
            },
            sites: if attach_cookies {
                1
            } else {
                SITES_WITHOUT_COOKIES
            },
            spans: if one_process {
                SPANS_ONE_PROCESS
            } else {
                SPANS_MANY
            },
            ended: if one_process {
                ENDED_ONE_PROCESS
            } else {
                ENDED_MANY
            },
        }
    }

    /// Without the I/O hooks (`trace`) their slots are never used.
    pub fn without_io_hooks(self) -> Self {
        Self {
            watched_slots: 1,
            watched_slot_mask: 0,
            ..self
        }
    }

    /// Every slot array of `count` slots (a power of two), whatever the scope:
    /// `SOCKSCOPE_SLOTS` (see `loader::cmpxchg`), so tests can make every concurrent
    /// hand-off collide and take the hash maps.
    pub fn with_slots(self, count: u32) -> Self {
        debug_assert!(count.is_power_of_two());
        Self {
            tracked_slots: count,
            tracked_slot_mask: count - 1,
            thread_slots: count,
            thread_slot_mask: count - 1,
            watched_slots: if self.watched_slots > 1 { count } else { 1 },
            watched_slot_mask: if self.watched_slots > 1 { count - 1 } else { 0 },
            ..self
        }
    }

    pub fn apply<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader.map_max_entries("STACKS", self.stacks);
        loader.map_max_entries("TRACKED", self.tracked);
        loader.map_max_entries("TRACKED_SLOTS", self.tracked_slots);
        loader.override_global("TRACKED_SLOT_MASK", &self.tracked_slot_mask, true);
        loader.map_max_entries("PENDING_SLOTS", self.thread_slots);
        loader.map_max_entries("IO_CALL_SLOTS", self.thread_slots);
        loader.override_global("THREAD_SLOT_MASK", &self.thread_slot_mask, true);
        loader.map_max_entries("WATCHED_SLOTS", self.watched_slots);
        loader.override_global("WATCHED_SLOT_MASK", &self.watched_slot_mask, true);
        loader.map_max_entries("WATCH_KEY_OF", self.watch_keys);
        loader.map_max_entries("USDT_SPECS", self.markers);
        loader.map_max_entries("USDT_SITES", self.sites);
        loader.map_max_entries("CURRENT_PC", self.spans);
        loader.map_max_entries("PC_ENDED", self.ended);
    }
}

/// The hard `RLIMIT_NOFILE` of process `pid` (from /proc/PID/limits).
fn open_files_limit(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    parse_open_files_limit(&text)
}

fn parse_open_files_limit(limits: &str) -> Option<u32> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let hard = line.split_whitespace().nth(4)?;
    match hard {
        "unlimited" => Some(u32::MAX),
        n => n
            .parse::<u64>()
            .ok()
            .map(|n| n.min(u64::from(u32::MAX)) as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_hard_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 20000                files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(20000));
        assert_eq!(
            parse_open_files_limit("Max open files  unlimited  unlimited  files"),
            Some(u32::MAX)
        );
        assert_eq!(parse_open_files_limit("Max processes 1 2 processes"), None);
    }

    #[test]
    fn sizes_follow_the_scope_and_the_stack_walk() {
        let own = std::process::id();
        let by_pid = MapSizes::new(true, own, false, true);
        assert_eq!(by_pid.stacks, STACKS_WALKED);
        assert!((1024..=TRACKED_MAX).contains(&by_pid.tracked));
        assert_eq!(
            (by_pid.markers, by_pid.sites, by_pid.spans, by_pid.ended),
            (MARKERS_ONE_PROCESS, 1, SPANS_ONE_PROCESS, ENDED_ONE_PROCESS)
        );
        assert_eq!(
            MapSizes::new(false, 0, false, false),
            MapSizes {
                stacks: STACKS_HELPER,
                tracked: 1,
                tracked_slots: 1,
                tracked_slot_mask: 0,
                thread_slots: THREAD_SLOTS,
                thread_slot_mask: THREAD_SLOTS - 1,
                watched_slots: WATCHED_SLOTS,
                watched_slot_mask: WATCHED_SLOTS - 1,
                watch_keys: WATCH_KEYS_HOST,
                markers: MARKERS_MANY,
                sites: SITES_WITHOUT_COOKIES,
                spans: SPANS_MANY,
                ended: ENDED_MANY,
            }
        );
        let scoped = MapSizes::new(true, 0, true, true);
        assert_eq!(scoped.tracked, TRACKED_SCOPED);
        // Slots: a power of two (the programs mask with it), bounded.
        assert_eq!(scoped.tracked_slots, TRACKED_SLOTS_MAX);
        assert!(by_pid.tracked_slots.is_power_of_two());
        assert!(by_pid.tracked_slots <= TRACKED_SLOTS_MAX);
        assert_eq!(by_pid.tracked_slot_mask, by_pid.tracked_slots - 1);
        assert_eq!(by_pid.watch_keys, WATCH_KEYS_SCOPED);
        let trace = by_pid.without_io_hooks();
        assert_eq!((trace.watched_slots, trace.watched_slot_mask), (1, 0));
        let one_slot = by_pid.with_slots(1);
        assert_eq!((one_slot.watched_slots, one_slot.tracked_slots), (1, 1));
        assert_eq!(trace.with_slots(4).watched_slots, 1);
    }
}
