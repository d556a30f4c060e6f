//! User stacks the create program walked itself (tracer-ebpf/src/walk.rs): their frames
//! come once per (process, stack) in a [`WalkedStack`] record, and each create record
//! names its stack by hash. The ring reader gives each such stack an id of its own, so
//! everything downstream (caches by (process, stack id), symbolization) treats it like a
//! stack of the kernel's stack map.
use std::collections::HashMap;

use aya::maps::{HashMap as MapHandle, MapData};
use tracer_common::{EventKind, WALK_MAX_FRAMES, WalkKey, WalkedStack};

use crate::unwind::DWARF_STACK_ID_BASE;

/// Ids of walked stacks start here: above any id of the kernel's stack map (its size
/// is far below), below the ids of DWARF-unwound stacks.
pub const WALKED_STACK_ID_BASE: i32 = 1 << 29;

/// The kernel's record of which (process, stack) it already sent.
pub type WalkedMap = MapHandle<MapData, WalkKey, u8>;

pub struct WalkedStacks {
    ids: HashMap<(u32, u64), i32>,
    next: i32,
    /// Deletes a process's keys when it exits (a later process with its pid must send
    /// its stacks again); `None` when the kernel does not walk stacks.
    kernel: Option<WalkedMap>,
}

/// A decoded [`WalkedStack`] record.
pub struct Frames {
    pub pid: u32,
    pub hash: u64,
    /// Innermost first; null frames left out (as for stacks of the stack map).
    pub addrs: Vec<u64>,
}

impl WalkedStacks {
    pub fn new(kernel: Option<WalkedMap>) -> Self {
        Self {
            ids: HashMap::new(),
            next: 0,
            kernel,
        }
    }

    pub fn is_walked(bytes: &[u8]) -> bool {
        bytes.get(..4) == Some(&(EventKind::WalkedStack as u32).to_ne_bytes())
    }

    /// Decodes a [`WalkedStack`] record; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<Frames> {
        let head = size_of::<WalkedStack>();
        if bytes.len() < head {
            return None;
        }
        // SAFETY: length checked; a plain repr(C) record of integers.
        let h: WalkedStack = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let nr = h.nr as usize;
        if nr > WALK_MAX_FRAMES || bytes.len() < head + nr * 8 {
            return None;
        }
        let addrs = bytes[head..head + nr * 8]
            .chunks_exact(8)
            .filter_map(|c| c.try_into().ok().map(u64::from_ne_bytes))
            .filter(|&a| a != 0)
            .collect();
        Some(Frames {
            pid: h.pid,
            hash: h.hash,
            addrs,
        })
    }

    /// The id of stack `hash` of process `pid`, given now if it has none; `None` when
    /// all ids below the DWARF ones are in use (then the stack goes without).
    pub fn id(&mut self, pid: u32, hash: u64) -> Option<i32> {
        if let Some(&id) = self.ids.get(&(pid, hash)) {
            return Some(id);
        }
        let id = WALKED_STACK_ID_BASE.checked_add(self.next)?;
        if id >= DWARF_STACK_ID_BASE {
            // Ids go back to the base only once every process that had one exited.
            if !self.ids.is_empty() {
                return None;
            }
            self.next = 0;
            return self.id(pid, hash);
        }
        self.next += 1;
        self.ids.insert((pid, hash), id);
        Some(id)
    }

    /// The id of a stack whose frames came earlier; `None` if they never came (their
    /// record was lost).
    pub fn known(&self, pid: u32, hash: u64) -> Option<i32> {
        self.ids.get(&(pid, hash)).copied()
    }

    pub fn is_walked_id(id: i32) -> bool {
        (WALKED_STACK_ID_BASE..DWARF_STACK_ID_BASE).contains(&id)
    }

    /// The process exited: forget its stacks here and in the kernel.
    pub fn exited(&mut self, pid: u32) {
        let kernel = &mut self.kernel;
        self.ids.retain(|&(p, hash), _| {
            if p != pid {
                return true;
            }
            if let Some(map) = kernel.as_mut() {
                let _ = map.remove(&WalkKey {
                    tgid: pid,
                    _pad: 0,
                    hash,
                });
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32, hash: u64, frames: &[u64]) -> Vec<u8> {
        let h = WalkedStack {
            kind: EventKind::WalkedStack as u32,
            pid,
            hash,
            nr: frames.len() as u32,
            _pad: 0,
        };
        // SAFETY: test-only view of a repr(C) record.
        let mut v = unsafe {
            std::slice::from_raw_parts((&h as *const WalkedStack).cast::<u8>(), size_of_val(&h))
        }
        .to_vec();
        for f in frames {
            v.extend_from_slice(&f.to_ne_bytes());
        }
        v
    }

    #[test]
    fn decodes_frames_and_drops_null_ones() {
        let bytes = record(7, 99, &[0x10, 0x20, 0]);
        assert!(WalkedStacks::is_walked(&bytes));
        let f = WalkedStacks::decode(&bytes).unwrap();
        assert_eq!((f.pid, f.hash, f.addrs), (7, 99, vec![0x10, 0x20]));
    }

    #[test]
    fn rejects_a_record_shorter_than_its_frame_count() {
        let mut bytes = record(7, 99, &[0x10, 0x20]);
        bytes.truncate(bytes.len() - 1);
        assert!(WalkedStacks::decode(&bytes).is_none());
    }

    #[test]
    fn ids_are_per_process_and_stack_and_forgotten_at_exit() {
        let mut w = WalkedStacks::new(None);
        let a = w.id(1, 5).unwrap();
        let b = w.id(2, 5).unwrap();
        assert_ne!(a, b);
        assert_eq!(w.id(1, 5), Some(a));
        assert_eq!(w.known(2, 5), Some(b));
        assert!(WalkedStacks::is_walked_id(a) && !WalkedStacks::is_walked_id(3));
        w.exited(1);
        assert_eq!(w.known(1, 5), None);
        assert_eq!(w.known(2, 5), Some(b));
    }
}
