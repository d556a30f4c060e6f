//! The I/O hooks of the leak explanation (tracer-ebpf's io.rs): which sockets they
//! watch, and what they saw. Attached for `check` and `watch` only.
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
    programs::TracePoint,
};
use tracer_common::{IoStats, WatchedFd, WatchedSlot, watched_fd_key, watched_slot_index};

use super::{Links, prog_err, program, take_map};
use crate::error::TracerError;

/// `BPF_EXIST`: update an entry, never add one.
const BPF_EXIST: u64 = 2;

const SEND_PROGRAM: &str = "sockscope_io_send";
const RECV_PROGRAM: &str = "sockscope_io_recv";
const EXIT_PROGRAM: &str = "sockscope_io_exit";

const SENDS: [&str; 3] = ["sendto", "sendmsg", "sendmmsg"];
const RECVS: [&str; 3] = ["recvfrom", "recvmsg", "recvmmsg"];

/// Watched sockets and their I/O records in the kernel.
pub struct IoWatch {
    /// `WATCHED_SLOTS`, where the kernel watches most of the sockets it traces (see
    /// tracer-ebpf's slots.rs), and the slot count minus one.
    slots: Array<MapData, WatchedSlot>,
    slot_mask: u32,
    /// `WATCHED_FDS`: the rest, and the sockets user space watches itself.
    watched: HashMap<MapData, u64, WatchedFd>,
    /// `WATCH_KEY_OF`: where each watched socket is in `watched`, by cookie.
    key_of: HashMap<MapData, u64, u64>,
    stats: HashMap<MapData, u64, IoStats>,
}

fn fd_key(pid: u32, fd: i32) -> u64 {
    watched_fd_key(pid, fd as u32)
}

/// Attaches `name` to each `syscalls/TRACEPOINT` whose record has `field` where the
/// program reads it (offset 16); a call this kernel has no such tracepoint for is
/// passed over (its I/O is then not seen).
fn attach_each(
    ebpf: &mut Ebpf,
    links: &mut Links,
    name: &'static str,
    tracepoints: &[String],
    field: &str,
) -> Result<(), TracerError> {
    let prog: &mut TracePoint = program(ebpf, name)?;
    prog.load().map_err(prog_err(name, "loaded"))?;
    for tp in tracepoints {
        if crate::system::tracepoint_field_offset("syscalls", tp, field) != Some(16) {
            continue;
        }
        let id = prog
            .attach("syscalls", tp)
            .map_err(prog_err(name, "attached"))?;
        links.adopt(prog.take_link(id));
    }
    Ok(())
}

impl IoWatch {
    pub fn attach(ebpf: &mut Ebpf, links: &mut Links) -> Result<Self, TracerError> {
        let enter = |calls: &[&str]| -> Vec<String> {
            calls.iter().map(|c| format!("sys_enter_{c}")).collect()
        };
        attach_each(ebpf, links, SEND_PROGRAM, &enter(&SENDS), "fd")?;
        attach_each(ebpf, links, RECV_PROGRAM, &enter(&RECVS), "fd")?;
        let exits: Vec<String> = SENDS
            .iter()
            .chain(&RECVS)
            .map(|c| format!("sys_exit_{c}"))
            .collect();
        attach_each(ebpf, links, EXIT_PROGRAM, &exits, "ret")?;
        let slots: Array<MapData, WatchedSlot> = take_map(ebpf, "WATCHED_SLOTS", Array::try_from)?;
        Ok(Self {
            slot_mask: slots.len().saturating_sub(1),
            slots,
            watched: take_map(ebpf, "WATCHED_FDS", HashMap::try_from)?,
            key_of: take_map(ebpf, "WATCH_KEY_OF", HashMap::try_from)?,
            stats: take_map(ebpf, "IO_STATS", HashMap::try_from)?,
        })
    }

    /// Watch the socket `cookie` held as `fd` by `pid`, of PeerConnection `pc_id`;
    /// `ended_ns` (0: still alive) is when that ended. Watching again updates it. The kernel watches
    /// the sockets it traces from their creation: an fd it already watches for another
    /// socket (reused since this one's release, which user space may not have read
    /// yet) is left alone. A full map is not an error: that socket's I/O is then not
    /// seen.
    ///
    /// `traced`: the kernel watches it since its creation and forgets it at its
    /// release, so only an entry still there is updated (one added after the release
    /// would stay forever).
    pub fn watch(
        &mut self,
        pid: u32,
        fd: i32,
        cookie: u64,
        pc_id: u64,
        ended_ns: u64,
        traced: bool,
    ) {
        let key = fd_key(pid, fd);
        let watched = WatchedFd {
            cookie,
            pc_id,
            ended_ns,
        };
        // The fd's slot, if the key holds it: that is the fd's newest socket. (Between
        // this read and the write the kernel may release the socket: the slot then
        // stays held by a socket gone, until the fd's next socket claims it back.)
        let index = watched_slot_index(key, self.slot_mask);
        if let Ok(slot) = self.slots.get(&index, 0)
            && slot.owner == key
        {
            if slot.socket.cookie == cookie {
                let slot = WatchedSlot {
                    owner: key,
                    socket: watched,
                };
                let _ = self.slots.set(index, slot, 0);
            }
            return;
        }
        let current = self.watched.get(&key, 0);
        if current.as_ref().is_ok_and(|w| w.cookie != cookie) || (traced && current.is_err()) {
            return;
        }
        if traced {
            let _ = self.watched.insert(key, watched, BPF_EXIST);
        } else if self.watched.insert(key, watched, 0).is_ok() {
            // For the kernel to forget it at its release.
            let _ = self.key_of.insert(cookie, key, 0);
        }
    }

    /// A socket watched from user space (it predates the tracer) was released: forget
    /// it, in case it was added after its release (the kernel forgets the rest).
    pub fn forget(&mut self, pid: u32, fd: i32, cookie: u64) {
        let key = fd_key(pid, fd);
        if self.watched.get(&key, 0).is_ok_and(|w| w.cookie == cookie) {
            let _ = self.watched.remove(&key);
        }
        let _ = self.key_of.remove(&cookie);
        let _ = self.stats.remove(&cookie);
    }

    /// What the hooks saw of socket `cookie`; `None` if it had no watched I/O.
    pub fn stats(&self, cookie: u64) -> Option<IoStats> {
        self.stats.get(&cookie, 0).ok()
    }
}
