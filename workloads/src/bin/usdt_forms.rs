//! USDT markers (provider `sockscope_test`) whose arguments use every x86_64 argument
//! form sockscope reads — registers of 1, 2, 4 and 8 bytes, constants, memory off a
//! register and off %rsp — signed and unsigned, with extreme values. The `probe` crate
//! only emits `-8@%reg`, so these notes are written by hand in the same layout
//! (see probe's `sdt!`: a `nop`, a `.note.stapsdt` entry, the `.stapsdt.base` anchor).
//!
//! Prints `{"pid":P,"expected":{"marker":[values...]}}`, then fires every marker once
//! per line read on stdin, printing `{"fired":N}`; exits on end of input.
use std::io::{BufRead as _, Write as _};

/// Emits one probe site: `$args` is the note's argument string, the rest are asm
/// operands placing the values where the string says.
macro_rules! marker {
    ($name:literal, $args:literal, $($operands:tt)*) => {
        marker!(pre [], post [], $name, $args, $($operands)*)
    };
    (pre [$($pre:literal),*], post [$($post:literal),*], $name:literal, $args:literal, $($operands:tt)*) => {
        // SAFETY: a nop plus note-section data; the operands are only read; `pre` and
        // `post` (if any) balance the stack around the probe site.
        unsafe {
            core::arch::asm!(
                $($pre,)*
                "990: nop",
                ".pushsection .note.stapsdt,\"?\",\"note\"",
                ".balign 4",
                ".4byte 992f-991f, 994f-993f, 3",
                "991: .asciz \"stapsdt\"",
                "992: .balign 4",
                "993: .8byte 990b",
                ".8byte _.stapsdt.base",
                ".8byte 0",
                ".asciz \"sockscope_test\"",
                concat!(".asciz \"", $name, "\""),
                concat!(".asciz \"", $args, "\""),
                "994: .balign 4",
                ".popsection",
                ".ifndef _.stapsdt.base",
                ".pushsection .stapsdt.base,\"aGR\",\"progbits\",.stapsdt.base,comdat",
                ".weak _.stapsdt.base",
                ".hidden _.stapsdt.base",
                "_.stapsdt.base: .space 1",
                ".size _.stapsdt.base, 1",
                ".popsection",
                ".endif",
                $($post,)*
                $($operands)*
            );
        }
    };
}

/// Values the markers carry; bit patterns chosen so a wrong size or sign extension
/// shows (high bytes set where only low ones count).
const NOISE: u64 = 0xdead_beef_0000_0000;

#[inline(never)]
fn fire() {
    // Registers, every size, signed and unsigned; high garbage must be cut off.
    marker!(
        "regs",
        "-1@%dil -2@%si -4@%edx -8@%rcx 1@%r8b 2@%r9w",
        in("rdi") NOISE | 0xff,                 // i8  -1
        in("rsi") NOISE | 0x8000,               // i16 MIN
        in("rdx") NOISE | 0x8000_0000,          // i32 MIN
        in("rcx") i64::MIN as u64,              // i64 MIN
        in("r8") NOISE | 0xff,                  // u8  MAX
        in("r9") NOISE | 0xffff,                // u16 MAX
    );
    marker!(
        "regs64",
        "4@%eax -8@%r10 8@%r11 -4@%r12d 2@%r13w -2@%r14w",
        in("rax") NOISE | 0xffff_ffff,          // u32 MAX
        in("r10") i64::MAX as u64,              // i64 MAX
        in("r11") u64::MAX,                     // u64 MAX
        in("r12") NOISE | 0xffff_ffff,          // i32 -1
        in("r13") 0x1234u64,                    // u16 0x1234
        in("r14") NOISE | 0x7fff,               // i16 MAX
    );
    // `$` cannot appear in inline asm text (LLVM eats it): `\\044` is its octal escape,
    // which the assembler turns back into `$` in the note.
    marker!(
        "consts",
        "-4@\\044-5 8@\\04418446744073709551615 -8@\\044-9223372036854775808 1@\\044255 2@\\04465535 -1@\\044-1",
    );
    let buf: [u64; 3] = [u64::MAX - 1, 0x0000_0000_ffff_fffe, 0x0102_0304_0506_0708];
    marker!(
        "memory",
        "8@(%rdi) -8@(%rdi) -4@8(%rdi) 4@8(%rdi) 1@16(%rdi) -2@-8(%rsi)",
        in("rdi") buf.as_ptr(),
        in("rsi") buf.as_ptr().wrapping_add(3),
    );
    // Off the stack pointer, as compilers place spilled arguments: one asm block
    // takes a stack slot, fills it, fires, and frees it.
    marker!(
        pre ["sub rsp, 32", "mov qword ptr [rsp + 8], {v}", "mov dword ptr [rsp + 16], {w:e}"],
        post ["add rsp, 32"],
        "stack",
        "-8@8(%rsp) -4@16(%rsp) 4@16(%rsp)",
        v = in(reg) -42i64,
        w = in(reg) 0xffff_fff0u64,
    );
}

fn main() {
    let expected = serde_json::json!({
        "regs": [-1, i16::MIN, i32::MIN, i64::MIN, u8::MAX, u16::MAX],
        "regs64": [u32::MAX, i64::MAX, u64::MAX, -1, 0x1234, i16::MAX],
        "consts": [-5, u64::MAX, i64::MIN, 255, 65535, -1],
        "memory": [u64::MAX - 1, -2, -2, 0xffff_fffeu32, 0x08, 0x0708],
        "stack": [-42, -16, 0xffff_fff0u32],
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::json!({"pid": std::process::id(), "expected": expected})
    );
    let _ = out.flush();
    let mut fired = 0;
    for _ in std::io::stdin().lock().lines().map_while(Result::ok) {
        fire();
        fired += 1;
        let _ = writeln!(out, "{}", serde_json::json!({"fired": fired}));
        let _ = out.flush();
    }
}
