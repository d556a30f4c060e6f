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

/// Byte offset of `member` in `struct name`, from raw BTF (little-endian).
pub fn member_offset_in(btf: &[u8], name: &str, member: &str) -> Option<u32> {
    let r = Reader(btf);
    if u16::from_le_bytes(btf.get(0..2)?.try_into().ok()?) != MAGIC {
        return None;
    }
    let hdr_len = r.u32(4)? as usize;
    let (type_off, type_len) = (r.u32(8)? as usize, r.u32(12)? as usize);
    let str_off = r.u32(16)? as usize;
    let types = hdr_len.checked_add(type_off)?;
    let strings = hdr_len.checked_add(str_off)?;
    let name_at = |off: u32| r.str(strings.checked_add(off as usize)?);
    let mut at = types;
    while at < types.checked_add(type_len)? {
        let (name_off, info) = (r.u32(at)?, r.u32(at + 4)?);
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        if kind == KIND_STRUCT && name_at(name_off) == Some(name) {
            for i in 0..vlen {
                let m = at + 12 + i * 12;
                if name_at(r.u32(m)?) == Some(member) {
                    let bits = r.u32(m + 8)?;
                    let bits = if kind_flag { bits & 0x00ff_ffff } else { bits };
                    return (bits % 8 == 0).then_some(bits / 8);
                }
            }
            return None;
        }
        at = at.checked_add(12 + extra_len(kind, vlen)?)?;
    }
    None
}

/// Byte offset of `member` in kernel `struct name`, if the kernel has BTF.
pub fn kernel_member_offset(name: &str, member: &str) -> Option<u32> {
    let btf = fs::read(Path::new("/sys/kernel/btf/vmlinux")).ok()?;
    member_offset_in(&btf, name, member)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_members_of_the_running_kernel() {
        let Ok(btf) = fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("SKIP: no kernel BTF");
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
    fn garbage_is_not_btf() {
        assert_eq!(member_offset_in(&[], "a", "b"), None);
        assert_eq!(
            member_offset_in(&[0x9f, 0xeb, 1, 0, 0xff, 0xff, 0xff, 0xff], "a", "b"),
            None
        );
    }
}
