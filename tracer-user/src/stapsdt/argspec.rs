//! x86_64 SDT argument specs: `SIZE@LOCATION`, space-separated, as GCC and the
//! `probe` crate write them into `.note.stapsdt`. A negative size means signed.
//! Locations: `$5` (constant), `%rdx` / `%edx` / `%dx` / `%dl` (register),
//! `-20(%rbp)` (memory at register + displacement). SIB (`-96(%rbp,%rax,8)`) and
//! symbolic displacements (`foo(%rip)`) are rejected with a clear error.
use super::UsdtError;

/// An x86_64 register usable in a spec, by its offset in `struct pt_regs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct X86Reg {
    /// The full register's name (`rdx` for `%dl`).
    pub name: &'static str,
    offset: u16,
}

impl X86Reg {
    /// Byte offset of the full register in x86_64 `struct pt_regs`.
    pub fn pt_regs_offset(&self) -> u16 {
        self.offset
    }
}

/// (full name, pt_regs offset, 32-bit, 16-bit, 8-bit low names).
const REGS: [(&str, u16, &str, &str, &str); 17] = [
    ("r15", 0, "r15d", "r15w", "r15b"),
    ("r14", 8, "r14d", "r14w", "r14b"),
    ("r13", 16, "r13d", "r13w", "r13b"),
    ("r12", 24, "r12d", "r12w", "r12b"),
    ("rbp", 32, "ebp", "bp", "bpl"),
    ("rbx", 40, "ebx", "bx", "bl"),
    ("r11", 48, "r11d", "r11w", "r11b"),
    ("r10", 56, "r10d", "r10w", "r10b"),
    ("r9", 64, "r9d", "r9w", "r9b"),
    ("r8", 72, "r8d", "r8w", "r8b"),
    ("rax", 80, "eax", "ax", "al"),
    ("rcx", 88, "ecx", "cx", "cl"),
    ("rdx", 96, "edx", "dx", "dl"),
    ("rsi", 104, "esi", "si", "sil"),
    ("rdi", 112, "edi", "di", "dil"),
    ("rip", 128, "eip", "ip", ""),
    ("rsp", 152, "esp", "sp", "spl"),
];

fn register(name: &str) -> Option<X86Reg> {
    REGS.iter()
        .find(|(full, _, d, w, b)| !name.is_empty() && [*full, *d, *w, *b].contains(&name))
        .map(|(full, offset, ..)| X86Reg {
            name: full,
            offset: *offset,
        })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgKind {
    Const(i64),
    Reg { reg: X86Reg },
    Mem { base: X86Reg, disp: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgSpec {
    /// 1, 2, 4 or 8 bytes.
    pub size: u8,
    pub signed: bool,
    pub kind: ArgKind,
}

fn bad(spec: &str, reason: &str) -> UsdtError {
    UsdtError::BadArgSpec {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    }
}

fn unsupported(spec: &str, reason: &str) -> UsdtError {
    UsdtError::UnsupportedArg {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A decimal or `0x` hexadecimal integer, optionally negative.
fn integer(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<u64>().ok()?,
    };
    if neg {
        // -9223372036854775808 is representable; larger magnitudes are not.
        0i64.checked_sub_unsigned(magnitude)
    } else {
        // Constants are 64-bit patterns: u64::MAX is written as 18446744073709551615.
        Some(magnitude as i64)
    }
}

/// Parses one `SIZE@LOCATION`.
pub fn parse_arg(spec: &str) -> Result<ArgSpec, UsdtError> {
    let (size, loc) = spec
        .split_once('@')
        .ok_or_else(|| bad(spec, "no '@' between size and location"))?;
    let size: i32 = size
        .parse()
        .map_err(|_| bad(spec, "size is not a number"))?;
    let signed = size < 0;
    let size = match size.unsigned_abs() {
        n @ (1 | 2 | 4 | 8) => n as u8,
        _ => return Err(bad(spec, "size must be 1, 2, 4 or 8 bytes")),
    };
    let kind = if let Some(c) = loc.strip_prefix('$') {
        ArgKind::Const(integer(c).ok_or_else(|| unsupported(spec, "constant is not an integer"))?)
    } else if let Some(r) = loc.strip_prefix('%') {
        ArgKind::Reg {
            reg: register(r).ok_or_else(|| bad(spec, "unknown register"))?,
        }
    } else if let Some((disp, rest)) = loc.split_once('(') {
        let inner = rest
            .strip_suffix(')')
            .ok_or_else(|| bad(spec, "memory operand without ')'"))?;
        if inner.contains(',') {
            return Err(unsupported(
                spec,
                "SIB addressing (base,index,scale) is not supported",
            ));
        }
        let base = inner
            .strip_prefix('%')
            .and_then(register)
            .ok_or_else(|| bad(spec, "unknown base register"))?;
        let disp = match disp {
            "" => 0,
            d => integer(d)
                .ok_or_else(|| unsupported(spec, "symbolic displacement is not supported"))?,
        };
        ArgKind::Mem { base, disp }
    } else {
        return Err(bad(spec, "location is not $const, %reg or disp(%reg)"));
    };
    Ok(ArgSpec { size, signed, kind })
}

/// Parses a note's whole argument string (empty: no arguments).
pub fn parse_args(args: &str) -> Result<Vec<ArgSpec>, UsdtError> {
    args.split_whitespace().map(parse_arg).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str) -> X86Reg {
        register(name).unwrap()
    }

    #[test]
    fn every_form_and_size() {
        let cases = [
            (
                "-4@$5",
                ArgSpec {
                    size: 4,
                    signed: true,
                    kind: ArgKind::Const(5),
                },
            ),
            (
                "8@$-1",
                ArgSpec {
                    size: 8,
                    signed: false,
                    kind: ArgKind::Const(-1),
                },
            ),
            (
                "8@%rdx",
                ArgSpec {
                    size: 8,
                    signed: false,
                    kind: ArgKind::Reg { reg: reg("rdx") },
                },
            ),
            (
                "4@%eax",
                ArgSpec {
                    size: 4,
                    signed: false,
                    kind: ArgKind::Reg { reg: reg("rax") },
                },
            ),
            (
                "2@%ax",
                ArgSpec {
                    size: 2,
                    signed: false,
                    kind: ArgKind::Reg { reg: reg("rax") },
                },
            ),
            (
                "1@%dil",
                ArgSpec {
                    size: 1,
                    signed: false,
                    kind: ArgKind::Reg { reg: reg("rdi") },
                },
            ),
            (
                "-1@%al",
                ArgSpec {
                    size: 1,
                    signed: true,
                    kind: ArgKind::Reg { reg: reg("rax") },
                },
            ),
            (
                "4@%r9d",
                ArgSpec {
                    size: 4,
                    signed: false,
                    kind: ArgKind::Reg { reg: reg("r9") },
                },
            ),
            (
                "-2@%r10w",
                ArgSpec {
                    size: 2,
                    signed: true,
                    kind: ArgKind::Reg { reg: reg("r10") },
                },
            ),
            (
                "1@%r11b",
                ArgSpec {
                    size: 1,
                    signed: false,
                    kind: ArgKind::Reg { reg: reg("r11") },
                },
            ),
            (
                "-4@-20(%rbp)",
                ArgSpec {
                    size: 4,
                    signed: true,
                    kind: ArgKind::Mem {
                        base: reg("rbp"),
                        disp: -20,
                    },
                },
            ),
            (
                "8@(%rax)",
                ArgSpec {
                    size: 8,
                    signed: false,
                    kind: ArgKind::Mem {
                        base: reg("rax"),
                        disp: 0,
                    },
                },
            ),
            (
                "8@8(%rsp)",
                ArgSpec {
                    size: 8,
                    signed: false,
                    kind: ArgKind::Mem {
                        base: reg("rsp"),
                        disp: 8,
                    },
                },
            ),
            (
                "8@0x10(%rsp)",
                ArgSpec {
                    size: 8,
                    signed: false,
                    kind: ArgKind::Mem {
                        base: reg("rsp"),
                        disp: 16,
                    },
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_arg(text).unwrap(), want, "{text}");
        }
        assert_eq!(reg("rdx").pt_regs_offset(), 96);
        assert_eq!(reg("rdi").pt_regs_offset(), 112);
        assert_eq!(reg("rsp").pt_regs_offset(), 152);
        assert_eq!(parse_args("-8@%rdi 2@%si").unwrap().len(), 2);
        assert!(parse_args("").unwrap().is_empty());
    }

    #[test]
    fn extremes_of_constants() {
        assert_eq!(
            parse_arg("-8@$-9223372036854775808").unwrap().kind,
            ArgKind::Const(i64::MIN)
        );
        assert_eq!(
            parse_arg("8@$18446744073709551615").unwrap().kind,
            ArgKind::Const(-1)
        );
        assert!(parse_arg("8@$-9223372036854775809").is_err());
    }

    #[test]
    fn rejections_say_why() {
        for (text, unsupported_form) in [
            ("3@%rax", false),
            ("16@%rax", false),
            ("8@%xyz", false),
            ("8%rax", false),
            ("x@%rax", false),
            ("8@rax", false),
            ("8@-96(%rbp,%rax,8)", true),
            ("8@foo(%rip)", true),
            ("8@%ah", false),
            ("8@-20(%rbp", false),
        ] {
            let err = parse_arg(text).unwrap_err();
            assert_eq!(
                matches!(err, UsdtError::UnsupportedArg { .. }),
                unsupported_form,
                "{text}: {err}"
            );
            assert!(
                err.to_string().contains(text),
                "{text}: error names the spec: {err}"
            );
        }
    }
}
