//! Just enough of the kernel's BTF (/sys/kernel/btf/vmlinux) to find where a struct
//! member lives, so BPF programs can read a kernel field without CO-RE (aya keeps its
//! BTF type lookup private). Layout: a header, a type section, a string section.
use std::{fs, path::Path};

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u32(&self, at: usize) -> Option<u32> {
        self.0
            .get(at..at.checked_add(4)?)?
            .try_into()
            .ok()
            .map(u32::from_le_bytes)
    }

    fn str(&self, at: usize) -> Option<&str> {
        let bytes = self.0.get(at..)?;
        let end = bytes.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&bytes[..end]).ok()
    }
}

/// Bytes of kind-specific data after a type's 12-byte header.
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
        3 => 12,                      // ARRAY
        4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
        2 | 7..=12 | 16 | 18 => 0,
        _ => return None,
    })
}

/// The type section of a BTF blob, indexed by type id.
pub struct Btf<'a> {
    r: Reader<'a>,
    strings: usize,
    /// Byte position of each type's header; index 0 stands for the void type.
    types: Vec<usize>,
}

const KIND_UNION: u32 = 5;
const KIND_FUNC: u32 = 12;

impl<'a> Btf<'a> {
    /// Parses raw BTF (little-endian); `None` if it is not BTF.
    pub fn parse(btf: &'a [u8]) -> Option<Self> {
        let r = Reader(btf);
        if u16::from_le_bytes(btf.get(0..2)?.try_into().ok()?) != MAGIC {
            return None;
        }
        let hdr_len = r.u32(4)? as usize;
        let (type_off, type_len) = (r.u32(8)? as usize, r.u32(12)? as usize);
        let str_off = r.u32(16)? as usize;
        let first = hdr_len.checked_add(type_off)?;
        let end = first.checked_add(type_len)?;
        let mut types = vec![0];
        let mut at = first;
        while at < end {
            let info = r.u32(at + 4)?;
            types.push(at);
            at = at.checked_add(12 + extra_len((info >> 24) & 0x1f, (info & 0xffff) as usize)?)?;
        }
        Some(Self {
            r,
            strings: hdr_len.checked_add(str_off)?,
            types,
        })
    }

    fn name_at(&self, at: usize) -> Option<&str> {
        let off = self.r.u32(at)? as usize;
        self.r.str(self.strings.checked_add(off)?)
    }

    /// (kind, vlen, kind_flag) of the type whose header is at `at`.
    fn info(&self, at: usize) -> Option<(u32, usize, bool)> {
        let info = self.r.u32(at + 4)?;
        Some((
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
        ))
    }

    /// Byte offset of `member` in `struct name`, looking into anonymous struct and
    /// union members too (`sock_common.skc_num` lives in one).
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        self.types.iter().skip(1).find_map(|&at| {
            let (kind, vlen, _) = self.info(at)?;
            (kind == KIND_STRUCT && vlen > 0 && self.name_at(at) == Some(name))
                .then(|| self.find_member(at, member, 0))
                .flatten()
        })
    }

    fn find_member(&self, at: usize, member: &str, depth: u32) -> Option<u32> {
        let (_, vlen, kind_flag) = self.info(at)?;
        for i in 0..vlen {
            let m = at + 12 + i * 12;
            let bits = self.r.u32(m + 8)?;
            let bits = if kind_flag { bits & 0x00ff_ffff } else { bits };
            if bits % 8 != 0 {
                continue;
            }
            let name_off = self.r.u32(m)?;
            if name_off != 0 {
                if self.name_at(m) == Some(member) {
                    return Some(bits / 8);
                }
                continue;
            }
            // An anonymous struct or union: its members are the parent's.
            let inner = *self.types.get(self.r.u32(m + 4)? as usize)?;
            let (kind, _, _) = self.info(inner)?;
            if (kind == KIND_STRUCT || kind == KIND_UNION)
                && depth < 8
                && let Some(off) = self.find_member(inner, member, depth + 1)
            {
                return Some(bits / 8 + off);
            }
        }
        None
    }

    /// Whether the kernel has a function of this name (the BTF of a function that
    /// fentry can hook; static functions that were inlined everywhere have none).
    pub fn has_function(&self, name: &str) -> bool {
        self.types.iter().skip(1).any(|&at| {
            self.info(at).is_some_and(|(kind, _, _)| kind == KIND_FUNC)
                && self.name_at(at) == Some(name)
        })
    }
}

/// The running kernel's BTF, raw.
pub fn kernel_btf() -> Option<Vec<u8>> {
    fs::read(Path::new("/sys/kernel/btf/vmlinux")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte offset of `member` in `struct name`, from raw BTF.
    fn member_offset_in(btf: &[u8], name: &str, member: &str) -> Option<u32> {
        Btf::parse(btf)?.member_offset(name, member)
    }

    #[test]
    fn finds_members_of_the_running_kernel() {
        let Ok(btf) = fs::read("/sys/kernel/btf/vmlinux") else {
            crate::say!("SKIP: no kernel BTF");
            return;
        };
        // Layouts fixed for decades: the oracle.
        assert_eq!(member_offset_in(&btf, "list_head", "next"), Some(0));
        assert_eq!(member_offset_in(&btf, "list_head", "prev"), Some(8));
        assert_eq!(member_offset_in(&btf, "callback_head", "func"), Some(8));
        let flags = member_offset_in(&btf, "task_struct", "flags").expect("task_struct.flags");
        assert!(
            flags < 256,
            "flags is near the start of task_struct: {flags}"
        );
        assert_eq!(
            member_offset_in(&btf, "task_struct", "no_such_member"),
            None
        );
        assert_eq!(member_offset_in(&btf, "no_such_struct", "x"), None);
    }

    #[test]
    fn finds_members_of_anonymous_unions_and_functions() {
        let Ok(raw) = fs::read("/sys/kernel/btf/vmlinux") else {
            crate::say!("SKIP: no kernel BTF");
            return;
        };
        let btf = Btf::parse(&raw).expect("kernel BTF parses");
        // `struct sock_common` starts with two anonymous unions: { skc_addrpair;
        // { skc_daddr; skc_rcv_saddr } } then { skc_hash; skc_u16hashes[2] }, then
        // { skc_portpair; { skc_dport; skc_num } }: fixed since Linux 3.x.
        assert_eq!(btf.member_offset("sock_common", "skc_daddr"), Some(0));
        assert_eq!(btf.member_offset("sock_common", "skc_rcv_saddr"), Some(4));
        assert_eq!(btf.member_offset("sock_common", "skc_dport"), Some(12));
        assert_eq!(btf.member_offset("sock_common", "skc_num"), Some(14));
        assert_eq!(btf.member_offset("sock_common", "skc_family"), Some(16));
        assert!(btf.has_function("udp_init_sock"));
        assert!(btf.has_function("udp_destroy_sock"));
        assert!(!btf.has_function("no_such_function_in_any_kernel"));
    }

    #[test]
    fn garbage_is_not_btf() {
        assert_eq!(member_offset_in(&[], "a", "b"), None);
        assert_eq!(
            member_offset_in(&[0x9f, 0xeb, 1, 0, 0xff, 0xff, 0xff, 0xff], "a", "b"),
            None
        );
    }
}
