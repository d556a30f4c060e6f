//! Whether the kernel's verifier accepts BPF's atomic compare-and-exchange (Linux
//! 5.12), which the programs' hand-off slots need (tracer-ebpf/src/slots.rs). Learned by
//! loading a four-instruction socket filter that uses it: a helper name in the BTF or a
//! version number would guess, and distributions backport.
//!
//! Where it is missing the slots are off (`SLOTS_ON` 0, so the code that uses it is
//! never reached), but that is not enough: older verifiers check every instruction's
//! fields before they look at which are reachable, and refuse the whole program. So
//! the object is loaded with those instructions rewritten to a plain move
//! ([`object_for_this_kernel`]).
use std::sync::OnceLock;

use object::{Object as _, ObjectSection as _, SectionFlags, elf::SHF_EXECINSTR};

/// `BPF_PROG_LOAD`, `BPF_PROG_TYPE_SOCKET_FILTER` (uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// The first fields of `union bpf_attr` for `BPF_PROG_LOAD`; the kernel takes the size
/// given and zero beyond it.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    /// Named so it is zero: padding would be whatever the stack held.
    prog_flags: u32,
}

/// One BPF instruction, as `(code, dst | src << 4, off, imm)`.
fn insn(code: u8, regs: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = regs;
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

/// Whether the kernel loads the probe's program; `cmpxchg` false puts a plain store
/// where the compare-and-exchange is (the tests' control).
fn loads(cmpxchg: bool) -> bool {
    const R0: u8 = 0;
    const R1: u8 = 1;
    const R10: u8 = 10;
    let program: Vec<u8> = [
        // *(u64 *)(r10 - 8) = 0
        insn(0x7a, R10, -8, 0),
        // r0 = 0; r1 = 1
        insn(0xb7, R0, 0, 0),
        insn(0xb7, R1, 0, 1),
        if cmpxchg {
            // r0 = cmpxchg_64(r10 - 8, r0, r1): BPF_STX | BPF_ATOMIC | BPF_DW, BPF_CMPXCHG
            insn(0xdb, R10 | (R1 << 4), -8, 0xf1)
        } else {
            // *(u64 *)(r10 - 8) = r1
            insn(0x7b, R10 | (R1 << 4), -8, 0)
        },
        // r0 = 0; exit
        insn(0xb7, R0, 0, 0),
        insn(0x95, 0, 0, 0),
    ]
    .concat();
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: (program.len() / 8) as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    // SAFETY: `attr` and what it points to live across the call; the size given is
    // the struct's.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: a descriptor this call returned and nothing else owns.
    unsafe { libc::close(fd as libc::c_int) };
    true
}

/// Whether BPF programs may use compare-and-exchange here (probed once a process).
pub fn kernel_has_cmpxchg() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| loads(true))
}

/// `BPF_STX | BPF_ATOMIC | BPF_DW` (and `BPF_W`): with `imm` 0 the atomic add older
/// kernels know (`BPF_XADD`), any other (`BPF_CMPXCHG` 0xf1, `BPF_XCHG` 0xe1, the
/// fetch forms) came with compare-and-exchange in 5.12; `BPF_LD | BPF_IMM | BPF_DW`
/// (two slots long); `r0 = 0`, what replaces them.
const ATOMIC_CODES: [u8; 2] = [0xdb, 0xc3];
#[cfg(test)]
const CMPXCHG_CODE: u8 = 0xdb;
#[cfg(test)]
const CMPXCHG_IMM: i32 = 0xf1;
const LD_IMM64_CODE: u8 = 0x18;
const MOV_R0_ZERO: [u8; 8] = [0xb7, 0, 0, 0, 0, 0, 0, 0];

/// The BPF object to load here: the embedded one, or where the kernel has no
/// compare-and-exchange, a copy with every one in its code rewritten (see the module
/// doc), kept 8-byte aligned as the embedded one is.
pub enum LoadableObject {
    Embedded(&'static [u8]),
    Rewritten { words: Vec<u64>, len: usize },
}

impl LoadableObject {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Embedded(bytes) => bytes,
            Self::Rewritten { words, len } => {
                // SAFETY: `words` holds at least `len` initialized bytes; u8 has no
                // alignment or validity requirements.
                unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), *len) }
            }
        }
    }
}

pub fn object_for_this_kernel(object: &'static [u8]) -> LoadableObject {
    if kernel_has_cmpxchg() {
        return LoadableObject::Embedded(object);
    }
    let bytes = without_cmpxchg(object);
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut le = [0u8; 8];
        le[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_ne_bytes(le);
    }
    LoadableObject::Rewritten {
        words,
        len: bytes.len(),
    }
}

fn without_cmpxchg(object: &[u8]) -> Vec<u8> {
    let mut out = object.to_vec();
    let Ok(elf) = object::File::parse(object) else {
        // Not for this function to judge: the loader says what is wrong with it.
        return out;
    };
    for section in elf.sections() {
        let executable = matches!(section.flags(), SectionFlags::Elf { sh_flags }
            if sh_flags & u64::from(SHF_EXECINSTR) != 0);
        let Some((start, len)) = section.file_range() else {
            continue;
        };
        let (Ok(start), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else {
            continue;
        };
        let Some(code) = out.get_mut(start..start.saturating_add(len)) else {
            continue;
        };
        if executable {
            rewrite_cmpxchg(code);
        }
    }
    out
}

/// Rewrites each atomic instruction of 5.12 (compare-and-exchange, exchange, the
/// fetch forms) in `code` (BPF instructions) to `r0 = 0`; returns how many.
fn rewrite_cmpxchg(code: &mut [u8]) -> usize {
    let mut rewritten = 0;
    let mut at = 0;
    while at + 8 <= code.len() {
        let insn = &mut code[at..at + 8];
        let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
        if ATOMIC_CODES.contains(&insn[0]) && imm != 0 {
            insn.copy_from_slice(&MOV_R0_ZERO);
            rewritten += 1;
        }
        at += if insn[0] == LD_IMM64_CODE { 16 } else { 8 };
    }
    rewritten
}

/// How the hand-off slots are set up for this load: off (no compare-and-exchange, or
/// `SOCKSCOPE_SLOTS=0`), the sizes of `loader::sizes` (`None`), or `SOCKSCOPE_SLOTS=N`
/// slots in each array (a power of two; 1 makes nearly every concurrent hand-off take
/// the hash maps, which is how the tests exercise them).
pub struct SlotSetting {
    pub on: bool,
    pub count: Option<u32>,
}

pub fn slot_setting() -> SlotSetting {
    let asked = std::env::var("SOCKSCOPE_SLOTS").ok();
    let count = asked
        .as_deref()
        .and_then(|v| match v.trim().parse::<u32>() {
            Ok(n) if n == 0 || n.is_power_of_two() => Some(n),
            _ => {
                eprintln!(
                    "sockscope: SOCKSCOPE_SLOTS={v} ignored: it takes 0 (off) or a power of two"
                );
                None
            }
        });
    SlotSetting {
        on: count != Some(0) && kernel_has_cmpxchg(),
        count: count.filter(|&n| n > 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded object has compare-and-exchanges and exchanges (the slots' claims
    /// and releases), and the copy for older kernels has none left, everything else
    /// byte for byte the same.
    #[test]
    fn the_copy_for_older_kernels_has_no_compare_and_exchange() {
        let object = super::super::BPF_OBJECT;
        let copy = without_cmpxchg(object);
        assert_eq!(copy.len(), object.len());
        let differing = object.iter().zip(&copy).filter(|(a, b)| a != b).count();
        assert!(differing > 0, "no compare-and-exchange found in the object");
        let mut again = copy.clone();
        let elf = object::File::parse(&copy[..]).expect("the copy parses");
        let mut left = 0;
        for section in elf.sections() {
            if let (Some((start, len)), SectionFlags::Elf { sh_flags }) =
                (section.file_range(), section.flags())
                && sh_flags & u64::from(SHF_EXECINSTR) != 0
            {
                left += rewrite_cmpxchg(&mut again[start as usize..(start + len) as usize]);
            }
        }
        assert_eq!(left, 0, "compare-and-exchanges left in the copy");
        // Each rewrite changes the instruction's code and registers, and its imm.
        assert!(
            differing <= 8 * 64,
            "{differing} bytes changed: more than rewrites"
        );
    }

    #[test]
    fn only_whole_instructions_are_rewritten() {
        // ld_imm64 whose second half looks like a compare-and-exchange, then one, an
        // exchange, and the atomic add older kernels have (kept).
        let xadd = [CMPXCHG_CODE, 0x1a, 0xf8, 0xff, 0, 0, 0, 0];
        let mut code = [
            [LD_IMM64_CODE, 1, 0, 0, 0, 0, 0, 0],
            [CMPXCHG_CODE, 0, 0, 0, 0xf1, 0, 0, 0],
            [CMPXCHG_CODE, 0x1a, 0xf8, 0xff, CMPXCHG_IMM as u8, 0, 0, 0],
            [CMPXCHG_CODE, 0x10, 0, 0, 0xe1, 0, 0, 0],
            xadd,
        ]
        .concat();
        assert_eq!(rewrite_cmpxchg(&mut code), 2);
        assert_eq!(code[8..16], [CMPXCHG_CODE, 0, 0, 0, 0xf1, 0, 0, 0]);
        assert_eq!(code[16..24], MOV_R0_ZERO);
        assert_eq!(code[24..32], MOV_R0_ZERO);
        assert_eq!(code[32..40], xadd);
    }

    /// A refusal must mean no compare-and-exchange, not a malformed probe: the same
    /// program with a plain store loads; and this project's machines (6.x) have it.
    #[test]
    fn the_probe_tells_compare_and_exchange_apart() {
        // SAFETY: no arguments.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "this test loads BPF: run it as root"
            );
            eprintln!("skipped: loading BPF needs root");
            return;
        }
        assert!(loads(false), "the probe's control program was refused");
        assert!(kernel_has_cmpxchg(), "a 6.x kernel refused BPF cmpxchg");
    }
}
