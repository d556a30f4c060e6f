//! Which process the current task belongs to, as the kernel knows it: when the process
//! started and which file it runs. User space reads a process's context from /proc
//! when it gets to its records, which on a busy host can be after the process exited
//! and its pid went to another: these let it tell the two apart, and still decide
//! whether a process it never saw alive ran a program with markers.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use tracer_common::{ProcessIdentity, ProcessOffsets};

use crate::filter::read_global;

/// Set by user space from the kernel's BTF; all zeros: unknown.
#[unsafe(no_mangle)]
static PROCESS_OFFSETS: ProcessOffsets = ProcessOffsets {
    task_start_boottime: 0,
    task_mm: 0,
    mm_exe_file: 0,
    file_inode: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    _pad: 0,
};

/// Reads a `T` at `base + offset`; `None` on a null base or a failed read.
#[inline(always)]
fn field<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: the helper reads kernel memory and fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize).cast::<T>()).ok() }
}

/// The current process's identity. Meant for `sched_process_exec`, where the current
/// task is the process's leader (a non-leader thread that executes takes the leader's
/// start time), so its start time is the process's, as /proc shows it.
#[inline(always)]
pub fn current_identity() -> ProcessIdentity {
    let o = read_global(&PROCESS_OFFSETS);
    let mut id = ProcessIdentity::default();
    if o.task_start_boottime == 0 {
        return id;
    }
    // SAFETY: the current task pointer is always valid to read through the helper.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    id.start_boottime_ns = field::<u64>(task, o.task_start_boottime).unwrap_or(0);
    let inode = field::<*const u8>(task, o.task_mm)
        .and_then(|mm| field::<*const u8>(mm, o.mm_exe_file))
        .and_then(|file| field::<*const u8>(file, o.file_inode));
    if let Some(inode) = inode {
        id.exe_ino = field::<u64>(inode, o.inode_ino).unwrap_or(0);
        id.exe_dev = field::<*const u8>(inode, o.inode_sb)
            .and_then(|sb| field::<u32>(sb, o.sb_dev))
            .unwrap_or(0);
    }
    id
}
