//! The generic USDT program: one uprobe program serves every marker; the attach
//! cookie selects the marker's argument spec (parsed from its `.note.stapsdt` by user
//! space), so arguments are read the way the compiler placed them. Kernels without
//! attach cookies (before Linux 5.15) tell the markers apart by the probed
//! instruction's place in its file instead (see [`site_cookie`]).
use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_user,
    },
    macros::{map, uprobe},
    maps::HashMap,
    programs::ProbeContext,
};
use tracer_common::{
    EventKind, MARKER_MAX_ARGS, MarkerEvent, UsdtArg, UsdtSpec, sample_flags, usdt_action, usdt_arg,
};

use crate::{
    emit::StackIds,
    filter::{current, current_task_wanted, read_global},
    maps::{CURRENT_PC, reserve, stack_wakeup},
};

/// Argument specs by attach cookie.
#[map]
pub static USDT_SPECS: HashMap<u32, UsdtSpec> = HashMap::with_max_entries(4096, 0);

/// 1: markers are told apart by their attach cookie; 0 (the kernel has no attach
/// cookies): by their file offset, through [`USDT_SITES`].
#[unsafe(no_mangle)]
static USDT_BY_COOKIE: u8 = 1;

/// Without attach cookies: the cookie user space gave each marker, by the marker's
/// offset in its file (the uprobe's offset). User space keeps one marker per offset.
#[map]
pub static USDT_SITES: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// Without attach cookies, where the probed address's mapping is found (from BTF):
/// `task_struct.mm`, `mm_struct.mm_rb` (the tree of mappings, before Linux 6.1's maple
/// tree), `vm_area_struct`'s `vm_rb`, `vm_start`, `vm_end`, `vm_pgoff`, and
/// `rb_node`'s `rb_left`, `rb_right`.
#[unsafe(no_mangle)]
static TASK_MM_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static MM_RB_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static VMA_RB_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static VMA_START_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static VMA_END_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static VMA_PGOFF_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static RB_LEFT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static RB_RIGHT_OFFSET: u32 = 0;

/// An rbtree of at most `vm.max_map_count` (65530) mappings is at most 32 deep.
const MAX_RB_DEPTH: u32 = 40;

/// x86_64's page size: `vm_pgoff` counts pages.
const PAGE_SHIFT: u64 = 12;

#[inline(always)]
fn read_at<T>(base: *const u8, offset: &u32) -> Option<T> {
    // SAFETY: the helper reads kernel memory and fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(read_global(offset) as usize).cast::<T>()) }
        .ok()
}

/// The marker at `ip` without an attach cookie: the mapping that holds `ip` gives
/// its file offset (the kernel's own `find_vma` walk of the current task's tree of
/// mappings), and user space stored the marker's cookie under that offset. The probed
/// address is the uprobe's: the kernel sets the instruction pointer back to it before
/// running the program.
#[inline(always)]
fn site_cookie(ip: u64) -> Option<u32> {
    // SAFETY: no arguments; the current task's pointer, only read through the helper.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mm: *const u8 = read_at(task, &TASK_MM_OFFSET)?;
    let mut node: *const u8 = read_at(mm, &MM_RB_OFFSET)?;
    for _ in 0..MAX_RB_DEPTH {
        if node.is_null() {
            return None;
        }
        let vma = node.wrapping_sub(read_global(&VMA_RB_OFFSET) as usize);
        let end: u64 = read_at(vma, &VMA_END_OFFSET)?;
        if end > ip {
            let start: u64 = read_at(vma, &VMA_START_OFFSET)?;
            if start <= ip {
                let pgoff: u64 = read_at(vma, &VMA_PGOFF_OFFSET)?;
                let offset = ip - start + (pgoff << PAGE_SHIFT);
                // SAFETY: copied out at once.
                return unsafe { USDT_SITES.get(offset) }.copied();
            }
            node = read_at(node, &RB_LEFT_OFFSET)?;
        } else {
            node = read_at(node, &RB_RIGHT_OFFSET)?;
        }
    }
    None
}

/// Size of `struct pt_regs` on x86_64: register offsets must fall inside it.
const PT_REGS_SIZE: u32 = 168;

#[uprobe]
pub fn sockscope_usdt(ctx: ProbeContext) -> u32 {
    let cookie = if read_global(&USDT_BY_COOKIE) != 0 {
        // SAFETY: the helper only reads the current program's attach cookie.
        (unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }) as u32
    } else {
        // SAFETY: the probed task's saved instruction pointer.
        let Some(cookie) = site_cookie(unsafe { (*ctx.regs).rip }) else {
            return 0;
        };
        cookie
    };
    // SAFETY: copied out at once.
    let Some(spec) = (unsafe { USDT_SPECS.get(cookie) }).copied() else {
        return 0;
    };
    let (tgid, tid) = current();
    if !current_task_wanted(tgid) {
        return 0;
    }
    // Where the application made the PeerConnection: in DWARF mode its registers and
    // stack go first (before the marker record, as for a creating stack). Taken before
    // the arguments are read, and its outcome not kept: the verifier then walks the
    // sampling code once, not once per way the arguments can be read (6.1's verifier
    // gave up on the program otherwise).
    if spec.action == usdt_action::PC_OPEN {
        let _ = crate::stack_sample::sample(tgid, tid, 0, sample_flags::FOR_MARKER, 0);
    }
    let mut args = [0u64; MARKER_MAX_ARGS];
    for (i, slot) in args.iter_mut().enumerate() {
        if i as u32 >= spec.nargs {
            break;
        }
        *slot = read_arg(&ctx, &spec.args[i]).unwrap_or(0);
    }
    match spec.action {
        usdt_action::SPAN_ENTER => {
            let _ = CURRENT_PC.insert(tid, args[0], 0);
        }
        // Only the span it entered: an exit of another id leaves the current one.
        // SAFETY: copied out at once.
        usdt_action::SPAN_EXIT if unsafe { CURRENT_PC.get(tid) }.copied() == Some(args[0]) => {
            let _ = CURRENT_PC.remove(tid);
        }
        // SAFETY: reads the clock only.
        usdt_action::PC_END => crate::io::pc_ended(tgid, args[0], unsafe { bpf_ktime_get_ns() }),
        _ => {}
    }
    // Where the application made the PeerConnection: the site of sockets that its
    // webrtc-rs tasks create later, with no application frame of their own.
    let user_stack = if spec.action == usdt_action::PC_OPEN {
        StackIds::current(&ctx).1
    } else {
        -1
    };
    if let Some(mut entry) = reserve::<MarkerEvent>() {
        entry.write(MarkerEvent {
            kind: EventKind::Marker as u32,
            pid: tgid,
            tid,
            probe: cookie,
            user_stack,
            _pad: 0,
            // SAFETY: reads the clock only.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            args,
        });
        entry.submit(stack_wakeup(tgid, user_stack));
    }
    0
}

#[inline(always)]
fn read_reg(ctx: &ProbeContext, offset: u32) -> Result<u64, i32> {
    if offset > PT_REGS_SIZE - 8 {
        return Err(-1);
    }
    // SAFETY: a read of the probed task's saved registers, bounds-checked above;
    // the helper copes with any address.
    unsafe { bpf_probe_read_kernel(ctx.regs.cast::<u8>().add(offset as usize).cast::<u64>()) }
}

/// The argument's value, sign- or zero-extended from its size to 64 bits.
#[inline(always)]
fn read_arg(ctx: &ProbeContext, arg: &UsdtArg) -> Result<u64, i32> {
    let raw = match arg.kind {
        usdt_arg::CONST => arg.value as u64,
        usdt_arg::REG => read_reg(ctx, arg.reg_offset)?,
        usdt_arg::MEM => {
            let base = read_reg(ctx, arg.reg_offset)?;
            let addr = base.wrapping_add(arg.value as u64);
            // SAFETY: a user-memory read through the helper, which fails cleanly on a
            // bad address.
            unsafe { bpf_probe_read_user(addr as *const u64) }?
        }
        _ => return Err(-1),
    };
    let shift = match arg.size {
        1 => 56,
        2 => 48,
        4 => 32,
        8 => 0,
        _ => return Err(-1),
    };
    Ok(if arg.signed != 0 {
        (((raw << shift) as i64) >> shift) as u64
    } else {
        (raw << shift) >> shift
    })
}
