//! Reading `.note.stapsdt`: one note per probe (owner "stapsdt", type 3) holding the
//! probe's address, the link-time address of `.stapsdt.base`, the semaphore address,
//! then provider, name and argument string, NUL-terminated.
//!
//! A uprobe attaches at a file offset, so the address is first corrected for
//! prelinking (the note's base vs the real `.stapsdt.base` address, as libbpf does)
//! and then mapped to the file through the PT_LOAD segment that contains it.
use std::path::Path;

use object::{
    FileKind, ReadRef,
    elf::{PT_LOAD, SHT_NOBITS},
    read::elf::{FileHeader, ProgramHeader as _, SectionHeader as _},
};

use super::{
    UsdtError,
    argspec::{ArgSpec, parse_args},
};

const NT_STAPSDT: u32 = 3;
const OWNER: &[u8] = b"stapsdt\0";

/// One USDT probe of an ELF object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdtProbe {
    pub provider: String,
    pub name: String,
    /// Address of the probe's `nop` as recorded in the note (link time).
    pub pc: u64,
    /// Link-time address of `.stapsdt.base` recorded in the note.
    pub base: u64,
    /// Semaphore address (0: none).
    pub semaphore: u64,
    /// Address after the prelink correction.
    pub address: u64,
    /// Where a uprobe attaches: file offset of `address`.
    pub file_offset: u64,
    /// The raw argument string.
    pub arg_string: String,
    pub args: Vec<ArgSpec>,
}

/// Reads an ELF file's probes.
///
/// Only the ELF header, the program and section headers, the section names and the
/// note section are read, not the whole file: the daemon looks at every program and
/// shared object the host's processes map, and reading a 200 MB library whole to find
/// it has no notes took as much memory, for nothing.
pub fn read_notes(path: &Path) -> Result<Vec<UsdtProbe>, UsdtError> {
    let file = std::fs::File::open(path).map_err(|source| UsdtError::Io {
        path: path.to_owned(),
        source,
    })?;
    let data = object::ReadCache::new(file);
    read_notes_from(&data).map_err(|e| e.with_path(path))
}

/// Little-endian, bounds-checked reader over a note section.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }

    fn align4(&mut self) {
        self.pos = self.pos.saturating_add(3) & !3;
    }
}

fn addr(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        8 => bytes.try_into().ok().map(u64::from_le_bytes),
        4 => bytes.try_into().ok().map(u32::from_le_bytes).map(u64::from),
        _ => None,
    }
}

/// The NUL-terminated string at the start of `bytes`, and what follows it.
fn cstr(bytes: &[u8]) -> Option<(String, &[u8])> {
    let end = bytes.iter().position(|&b| b == 0)?;
    let s = std::str::from_utf8(&bytes[..end]).ok()?.to_owned();
    Some((s, &bytes[end + 1..]))
}

pub fn read_notes_from_bytes(data: &[u8]) -> Result<Vec<UsdtProbe>, UsdtError> {
    read_notes_from(data)
}

fn read_notes_from<'data, R: ReadRef<'data>>(data: R) -> Result<Vec<UsdtProbe>, UsdtError> {
    match FileKind::parse(data) {
        Ok(FileKind::Elf32) => notes_of::<object::elf::FileHeader32<object::Endianness>, R>(data),
        Ok(FileKind::Elf64) => notes_of::<object::elf::FileHeader64<object::Endianness>, R>(data),
        _ => Err(UsdtError::NotElf { path: None }),
    }
}

fn notes_of<'data, Elf: FileHeader, R: ReadRef<'data>>(
    data: R,
) -> Result<Vec<UsdtProbe>, UsdtError> {
    let not_elf = |_| UsdtError::NotElf { path: None };
    let header = Elf::parse(data).map_err(not_elf)?;
    let endian = header.endian().map_err(not_elf)?;
    let sections = header.sections(endian, data).map_err(not_elf)?;
    let Some((_, section)) = sections.section_by_name(endian, b".note.stapsdt") else {
        return Ok(Vec::new());
    };
    let notes = if section.sh_type(endian) == SHT_NOBITS {
        &[][..]
    } else {
        section
            .data(endian, data)
            .map_err(|_| malformed("note section cannot be read"))?
    };
    let base_section = sections
        .section_by_name(endian, b".stapsdt.base")
        .map(|(_, s)| s.sh_addr(endian).into());
    let addr_size = if header.is_type_64() { 8 } else { 4 };
    // (vaddr, memsz, file offset) of each loadable segment.
    let segments: Vec<(u64, u64, u64)> = header
        .program_headers(endian, data)
        .map_err(not_elf)?
        .iter()
        .filter(|p| p.p_type(endian) == PT_LOAD)
        .map(|p| {
            (
                p.p_vaddr(endian).into(),
                p.p_memsz(endian).into(),
                p.p_offset(endian).into(),
            )
        })
        .collect();

    let mut out = Vec::new();
    let mut cur = Cursor {
        data: notes,
        pos: 0,
    };
    while cur.pos < notes.len() {
        let (Some(namesz), Some(descsz), Some(kind)) = (cur.u32(), cur.u32(), cur.u32()) else {
            return Err(malformed("truncated note header"));
        };
        let name = cur
            .take(namesz as usize)
            .ok_or_else(|| malformed("truncated note name"))?;
        cur.align4();
        let desc = cur
            .take(descsz as usize)
            .ok_or_else(|| malformed("truncated note description"))?;
        cur.align4();
        if kind != NT_STAPSDT || name != OWNER {
            continue;
        }
        out.push(parse_desc(desc, addr_size, base_section, &segments)?);
    }
    Ok(out)
}

fn malformed(what: &str) -> UsdtError {
    UsdtError::MalformedNote {
        path: None,
        reason: what.to_owned(),
    }
}

fn parse_desc(
    desc: &[u8],
    addr_size: usize,
    base_section: Option<u64>,
    segments: &[(u64, u64, u64)],
) -> Result<UsdtProbe, UsdtError> {
    let field = |i: usize| desc.get(i * addr_size..(i + 1) * addr_size).and_then(addr);
    let (Some(pc), Some(base), Some(semaphore)) = (field(0), field(1), field(2)) else {
        return Err(malformed("note shorter than its three addresses"));
    };
    let rest = desc.get(3 * addr_size..).unwrap_or_default();
    let (provider, rest) =
        cstr(rest).ok_or_else(|| malformed("provider is not a NUL-terminated string"))?;
    let (name, rest) =
        cstr(rest).ok_or_else(|| malformed("name is not a NUL-terminated string"))?;
    let (arg_string, _) =
        cstr(rest).ok_or_else(|| malformed("arguments are not a NUL-terminated string"))?;
    // Prelinked objects moved: shift by how far .stapsdt.base moved.
    let address = match base_section {
        Some(actual) if base != 0 => pc.wrapping_add(actual).wrapping_sub(base),
        _ => pc,
    };
    let file_offset = segments
        .iter()
        .find(|(vaddr, memsz, _)| address >= *vaddr && address - vaddr < *memsz)
        .map(|(vaddr, _, offset)| address - vaddr + offset)
        .ok_or_else(|| {
            malformed(&format!(
                "probe {provider}:{name} at {address:#x} is in no loadable segment"
            ))
        })?;
    let args = parse_args(&arg_string)?;
    Ok(UsdtProbe {
        provider,
        name,
        pc,
        base,
        semaphore,
        address,
        file_offset,
        arg_string,
        args,
    })
}
