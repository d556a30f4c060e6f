//! The hand-offs on the hot path, kept in arrays of claimable slots with their hash
//! maps behind them:
//! - `PENDING`: what the create hook learned, by thread, until `sys_exit_socket`;
//! - `IO_IN_FLIGHT`: a watched send or receive, by thread, from its enter to its exit;
//! - `TRACKED`: the sockets whose create passed the filters (and where the I/O hooks
//!   watch them), by cookie, until their release;
//! - `WATCHED_FDS` (io.rs): the sockets the I/O hooks watch, by (process, fd), from
//!   their creation to their release.
//!
//! Why: on the kernels measured a hash map update costs 200–270 ns and its delete
//! 100–150 ns (bucket lock, element allocation or free list), a third of all the BPF
//! time spent per socket; an array slot is an indexed load and a compare-and-exchange.
//! A slot is indexed by the low bits of its owner (thread id, socket cookie; a mix of
//! process and fd for `WATCHED_FDS`) and claimed with an atomic compare-and-exchange from 0, so two CPUs cannot both take
//! it; an owner whose slot is taken by another goes to the hash map as before, so
//! nothing is lost to a collision. Kernels without BPF compare-and-exchange (before
//! 5.12) use the hash maps only (`SLOTS_ON` is 0: the verifier never sees the slot
//! code there).
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use tracer_common::stats;

use crate::{
    filter::read_global,
    maps::{PENDING, PendingCreate, TRACKED, count},
};

/// 1: the kernel has BPF atomic compare-and-exchange (set by user space before load).
#[unsafe(no_mangle)]
static SLOTS_ON: u8 = 0;

/// Slot counts minus one (powers of two, set by user space with the arrays' sizes):
/// the arrays by thread, the array by cookie.
#[unsafe(no_mangle)]
static THREAD_SLOT_MASK: u32 = 4095;
#[unsafe(no_mangle)]
static TRACKED_SLOT_MASK: u32 = 16383;

/// A slot: its owner (0: free) and what it holds for the owner.
#[repr(C)]
pub struct Slot<V> {
    owner: u64,
    value: V,
}

/// The arrays of slots by thread have this many entries by default (user space sizes
/// them with `THREAD_SLOT_MASK`).
pub const THREAD_SLOTS: u32 = 4096;

#[map]
static PENDING_SLOTS: Array<Slot<PendingCreate>> = Array::with_max_entries(THREAD_SLOTS, 0);

/// Value: the socket's key in the I/O hooks' `WATCHED_FDS` (0: not watched).
#[map]
static TRACKED_SLOTS: Array<Slot<u64>> = Array::with_max_entries(16384, 0);

#[inline(always)]
fn enabled() -> bool {
    read_global(&SLOTS_ON) != 0
}

#[inline(always)]
fn thread_index(tid: u32) -> u32 {
    tid & read_global(&THREAD_SLOT_MASK)
}

#[inline(always)]
fn tracked_index(cookie: u64) -> u32 {
    cookie as u32 & read_global(&TRACKED_SLOT_MASK)
}

/// The slot at `index` (masked by the caller), if slots are on.
#[inline(always)]
fn slot_at<V>(slots: &Array<Slot<V>>, index: u32) -> Option<*mut Slot<V>> {
    if !enabled() {
        return None;
    }
    slots.get_ptr_mut(index)
}

/// `owner`'s slot at `index`, claimed if free; `None` if another owner holds it.
#[inline(always)]
pub fn claim<V>(slots: &Array<Slot<V>>, index: u32, owner: u64) -> Option<*mut Slot<V>> {
    let slot = slot_at(slots, index)?;
    // SAFETY: a map value, 8-byte aligned; other CPUs touch `owner` only atomically
    // or by reading it.
    let held = unsafe { compare_exchange(&raw mut (*slot).owner, owner) };
    // Free and now ours, or its own already (left by a create that never reached
    // `sys_exit_socket`; for an fd, a socket released after its fd was reused).
    (held == 0 || held == owner).then_some(slot)
}

/// Sets `*word` to `new` if it is 0; returns what it was.
///
/// `core`'s atomics have no compare-and-exchange on the BPF target (it gates every
/// read-modify-write on it): the intrinsic, which LLVM lowers to BPF's `cmpxchg_64`.
///
/// # Safety
/// `word`: valid, 8-byte aligned, written by others only atomically.
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn compare_exchange(word: *mut u64, new: u64) -> u64 {
    use core::intrinsics::{AtomicOrdering, atomic_cxchg};
    // SAFETY: as the caller promises.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::AcqRel }, { AtomicOrdering::Acquire }>(word, 0, new)
    }
    .0
}

/// Sets `*word` to `new`; returns what it was. BPF's `xchg_64` (the kernels that have
/// `cmpxchg_64` have it: both came in 5.12).
///
/// # Safety
/// As [`compare_exchange`].
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn exchange(word: *mut u64, new: u64) -> u64 {
    use core::intrinsics::{AtomicOrdering, atomic_xchg};
    // SAFETY: as the caller promises.
    unsafe { atomic_xchg::<u64, { AtomicOrdering::AcqRel }>(word, new) }
}

#[cfg(not(target_arch = "bpf"))]
unsafe fn exchange(word: *mut u64, new: u64) -> u64 {
    use core::sync::atomic::{AtomicU64, Ordering};
    // SAFETY: as the caller promises.
    unsafe { AtomicU64::from_ptr(word) }.swap(new, Ordering::AcqRel)
}

/// The host build (an empty program, for workspace-wide commands) never runs this.
#[cfg(not(target_arch = "bpf"))]
unsafe fn compare_exchange(word: *mut u64, new: u64) -> u64 {
    use core::sync::atomic::{AtomicU64, Ordering};
    // SAFETY: as the caller promises.
    match unsafe { AtomicU64::from_ptr(word) }.compare_exchange(
        0,
        new,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(old) | Err(old) => old,
    }
}

/// `owner`'s slot at `index` if it holds it.
#[inline(always)]
pub fn held<V>(slots: &Array<Slot<V>>, index: u32, owner: u64) -> Option<*mut Slot<V>> {
    let slot = slot_at(slots, index)?;
    // A plain load: only the owner writes a held slot's value, and the owner reads it
    // (or, for a socket released elsewhere, reads it after the creating thread wrote it).
    // SAFETY: a map value.
    // Readers of the value read it volatile too, so the compiler keeps that after this
    // (the BPF target has no compiler fence to select).
    (unsafe { core::ptr::read_volatile(&raw const (*slot).owner) } == owner).then_some(slot)
}

/// A held slot's value, read after its owner (see [`held`]).
#[inline(always)]
pub fn value<V: Copy>(slot: *mut Slot<V>) -> V {
    // SAFETY: a map value.
    unsafe { core::ptr::read_volatile(&raw const (*slot).value) }
}

/// Writes a claimed slot's value.
#[inline(always)]
pub fn set_value<V>(slot: *mut Slot<V>, value: V) {
    // SAFETY: a map value, claimed by the caller.
    unsafe { (*slot).value = value };
}

/// Gives the slot back (its owner only: no one else writes a held slot), after every
/// read of its value: an atomic exchange, a full barrier for the compiler and the CPU.
/// A plain store let LLVM move the value's read after it, so another thread could
/// claim the slot and write its own value in between (a create reported twice and
/// another lost: `tests/trace.rs` caught it with one slot); and on weakly ordered CPUs
/// a plain store may become visible before an earlier load.
#[inline(always)]
pub fn free<V>(slot: *mut Slot<V>) {
    // SAFETY: a map value, 8-byte aligned.
    unsafe { exchange(&raw mut (*slot).owner, 0) };
}

/// Keeps `value` for thread `tid` until [`thread_take`]: in its slot, or in `map`.
/// False if neither had room.
#[inline(always)]
pub fn thread_put<V: Copy>(
    slots: &Array<Slot<V>>,
    map: &HashMap<u32, V>,
    tid: u32,
    value: V,
) -> bool {
    if let Some(slot) = claim(slots, thread_index(tid), u64::from(tid)) {
        set_value(slot, value);
        return true;
    }
    map.insert(tid, value, 0).is_ok()
}

/// What [`thread_put`] kept for thread `tid`, taken out; `none` if nothing (a plain
/// value, see walk.rs's `Walked` for why not an `Option`).
#[inline(always)]
pub fn thread_take<V: Copy>(slots: &Array<Slot<V>>, map: &HashMap<u32, V>, tid: u32, none: V) -> V {
    if let Some(slot) = held(slots, thread_index(tid), u64::from(tid)) {
        let value = value(slot);
        free(slot);
        return value;
    }
    // SAFETY: copied out before the entry is removed.
    match unsafe { map.get(tid) }.copied() {
        Some(value) => {
            let _ = map.remove(tid);
            value
        }
        None => none,
    }
}

/// Thread `tid` is creating a UDP socket: keep what is known for `sys_exit_socket`.
#[inline(always)]
pub fn pending_put(tid: u32, pending: PendingCreate) {
    if !thread_put(&PENDING_SLOTS, &PENDING, tid, pending) {
        // Its create record cannot be made: a loss like a full ring's.
        count(stats::PENDING_FULL);
        count(stats::LOST);
    }
}

/// What thread `tid`'s create hook kept, taken out (`cookie` 0: none).
#[inline(always)]
pub fn pending_take(tid: u32) -> PendingCreate {
    thread_take(&PENDING_SLOTS, &PENDING, tid, PendingCreate::NONE)
}

/// Socket `cookie` passed the filters at its creation: its release is reported
/// whoever releases it.
#[inline(always)]
pub fn track(cookie: u64) {
    if let Some(slot) = claim(&TRACKED_SLOTS, tracked_index(cookie), cookie) {
        set_value(slot, 0);
        return;
    }
    if TRACKED.insert(cookie, 0, 0).is_err() {
        // Its release by another process would go unseen: a loss too.
        count(stats::TRACK_FULL);
        count(stats::LOST);
    }
}

/// Whether socket `cookie` is tracked.
#[inline(always)]
pub fn is_tracked(cookie: u64) -> bool {
    held(&TRACKED_SLOTS, tracked_index(cookie), cookie).is_some()
        || TRACKED.get_ptr(cookie).is_some()
}

/// Notes the key the I/O hooks watch tracked socket `cookie` under; false if it is not
/// tracked.
#[inline(always)]
pub fn set_tracked_key(cookie: u64, key: u64) -> bool {
    let value = match held(&TRACKED_SLOTS, tracked_index(cookie), cookie) {
        // SAFETY: the slot's value, written only by its socket's creation and release.
        Some(slot) => unsafe { &raw mut (*slot).value },
        None => match TRACKED.get_ptr_mut(cookie) {
            Some(value) => value,
            None => return false,
        },
    };
    // SAFETY: as above (or this socket's hash entry).
    unsafe { *value = key };
    true
}

/// Socket `cookie` is released: (whether it was tracked, its I/O key), and it is no
/// longer tracked. `read_key`: the key is wanted (a hash entry is then read before it
/// is removed).
#[inline(always)]
pub fn untrack(cookie: u64, read_key: bool) -> (bool, u64) {
    if let Some(slot) = held(&TRACKED_SLOTS, tracked_index(cookie), cookie) {
        let key = value(slot);
        free(slot);
        return (true, key);
    }
    if !read_key {
        // Nothing to read from the entry: its removal alone says it was there.
        return (TRACKED.remove(cookie).is_ok(), 0);
    }
    // SAFETY: copied out at once.
    match unsafe { TRACKED.get(&cookie) }.copied() {
        Some(key) => {
            let _ = TRACKED.remove(cookie);
            (true, key)
        }
        None => (false, 0),
    }
}
