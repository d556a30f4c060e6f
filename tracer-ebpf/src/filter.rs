//! Filters, set by user space before load as read-only globals (libbpf-tools style),
//! so the verifier sees constants and disabled filters cost nothing.
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_task, bpf_probe_read_kernel,
};
use tracer_common::COMM_LEN;

/// Only this process (tgid); 0 = every process.
#[unsafe(no_mangle)]
static FILTER_TGID: u32 = 0;

/// Only tasks in this cgroup v2 (its id, the directory's inode); 0 = any cgroup.
/// `check` runs its command in a cgroup of its own and sets this, so programs that
/// are not cgroup hooks (tracepoints, uprobes) ignore the rest of the host.
#[unsafe(no_mangle)]
static FILTER_CGROUP: u64 = 0;

/// Only tasks with this comm; all zero = any comm.
#[unsafe(no_mangle)]
static FILTER_COMM: [u8; COMM_LEN] = [0; COMM_LEN];

/// A read-only global as user space set it before load (every module's globals go
/// through this one reader).
#[inline(always)]
pub fn read_global<T: Copy>(v: &T) -> T {
    // SAFETY: a static; the volatile read stops the compiler from folding the
    // load-time value away.
    unsafe { core::ptr::read_volatile(v) }
}

/// The current task: (tgid, tid).
#[inline(always)]
pub fn current() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

/// Whether the current task passes the pid and comm filters.
#[inline(always)]
pub fn current_task_wanted(tgid: u32) -> bool {
    let want = read_global(&FILTER_TGID);
    if want != 0 && want != tgid {
        return false;
    }
    let want_cgroup = read_global(&FILTER_CGROUP);
    // SAFETY: no arguments; reads the current task's cgroup.
    if want_cgroup != 0 && unsafe { bpf_get_current_cgroup_id() } != want_cgroup {
        return false;
    }
    let want_comm = read_global(&FILTER_COMM);
    if want_comm[0] == 0 {
        return true;
    }
    match bpf_get_current_comm() {
        Ok(comm) => comm == want_comm,
        Err(_) => false,
    }
}

/// Whether tracing is scoped to a cgroup of sockscope's own (`check`).
#[inline(always)]
pub fn cgroup_filter_set() -> bool {
    read_global(&FILTER_CGROUP) != 0
}

/// The current comm, zeroed if it cannot be read.
#[inline(always)]
pub fn current_comm() -> [u8; COMM_LEN] {
    bpf_get_current_comm().unwrap_or([0; COMM_LEN])
}

/// Whether any filter is set (without filters every UDP socket is wanted, and the
/// tracked-socket map is not needed).
#[inline(always)]
pub fn filters_active() -> bool {
    read_global(&FILTER_TGID) != 0
        || read_global(&FILTER_COMM)[0] != 0
        || read_global(&FILTER_CGROUP) != 0
}

/// 1: take the kernel stack of socket creations too (`trace --stacks`).
#[unsafe(no_mangle)]
static KERNEL_STACKS: u8 = 0;

#[inline(always)]
pub fn kernel_stacks_wanted() -> bool {
    read_global(&KERNEL_STACKS) != 0
}

/// Byte offset of `flags` in the kernel's `struct task_struct` (from kernel BTF, set
/// by user space); 0 = unknown.
#[unsafe(no_mangle)]
static TASK_FLAGS_OFFSET: u32 = 0;

/// `PF_EXITING`: the task is in `do_exit`.
const PF_EXITING: u32 = 0x4;
/// `PF_KTHREAD`: a kernel thread.
const PF_KTHREAD: u32 = 0x0020_0000;

/// The current task's `flags`, 0 when they cannot be read.
#[inline(always)]
fn current_task_flags() -> u32 {
    let offset = read_global(&TASK_FLAGS_OFFSET);
    if offset == 0 {
        return 0;
    }
    // SAFETY: reads the current task's `flags` word through the helper, which fails
    // cleanly on a bad address.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        bpf_probe_read_kernel(task.add(offset as usize).cast::<u32>()).unwrap_or(0)
    }
}

/// Whether the current task is exiting: then the kernel, not the application, is
/// closing its files. 0 when it cannot be told.
#[inline(always)]
pub fn current_exiting() -> u8 {
    u8::from(current_task_flags() & PF_EXITING != 0)
}

/// Whether the current task is a kernel thread (its sockets are the kernel's own:
/// tunnels, NFS; the cgroup backend does not see them either).
#[inline(always)]
pub fn current_is_kthread() -> bool {
    current_task_flags() & PF_KTHREAD != 0
}
