//! The generic USDT program: one uprobe program serves every marker; the attach
//! cookie selects the marker's argument spec (parsed from its `.note.stapsdt` by user
//! space), so arguments are read the way the compiler placed them.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_attach_cookie, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::{map, uprobe},
    maps::HashMap,
    programs::ProbeContext,
};
use tracer_common::{
    EventKind, MARKER_MAX_ARGS, MarkerEvent, UsdtArg, UsdtSpec, usdt_action, usdt_arg,
};

use crate::{
    emit::StackIds,
    filter::{current, current_task_wanted},
    maps::{CURRENT_PC, reserve, stack_wakeup},
};

/// Argument specs by attach cookie.
#[map]
pub static USDT_SPECS: HashMap<u32, UsdtSpec> = HashMap::with_max_entries(4096, 0);

/// Size of `struct pt_regs` on x86_64: register offsets must fall inside it.
const PT_REGS_SIZE: u32 = 168;

#[uprobe]
pub fn sockscope_usdt(ctx: ProbeContext) -> u32 {
    // SAFETY: the helper only reads the current program's attach cookie.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } as u32;
    // SAFETY: copied out at once.
    let Some(spec) = (unsafe { USDT_SPECS.get(cookie) }).copied() else {
        return 0;
    };
    let (tgid, tid) = current();
    if !current_task_wanted(tgid) {
        return 0;
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
