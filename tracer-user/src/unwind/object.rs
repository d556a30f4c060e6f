//! One object file's unwind information (CFI), read once per file identity (device,
//! inode) and shared by every process that maps it: the `.eh_frame`/`.eh_frame_hdr` or
//! `.debug_frame` bytes framehop unwinds with, the load segments that place it in a
//! process, and whether its code keeps frame pointers (for `--stacks auto`).
use std::{fs::File, ops::Range, sync::Arc};

use gimli::{BaseAddresses, EhFrame, EhFrameHdr, LittleEndian, UnwindSection as _};
use object::{Object as _, ObjectSection as _, ObjectSegment as _, read::ReadCache};

/// Section bytes, shared by every framehop module made from this object.
pub type Bytes = Arc<[u8]>;

/// A `PT_LOAD` segment: file offsets `offset..offset+filesz` at `vaddr`.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
}

/// What the frame-pointer check found in an object's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramePointers {
    /// Function starts looked at (from the `.eh_frame_hdr` table: every function with
    /// CFI, symbols or not).
    pub sampled: usize,
    /// Of those, the ones that begin by setting up a frame pointer.
    pub with_fp: usize,
}

impl FramePointers {
    /// Frame pointers are kept when most functions set one up. Code built with them
    /// (`-C force-frame-pointers=yes`, `-fno-omit-frame-pointer`) starts nearly every
    /// function with `push rbp; mov rbp, rsp`; code built without them almost never does
    /// (only functions with variable-size frames).
    pub fn kept(self) -> bool {
        self.sampled >= 8 && self.with_fp * 2 >= self.sampled
    }
}

#[derive(Debug)]
pub struct ObjectCfi {
    /// The path the process saw, for messages.
    pub shown: String,
    pub segments: Vec<Segment>,
    pub eh_frame: Option<(Range<u64>, Bytes)>,
    pub eh_frame_hdr: Option<(Range<u64>, Bytes)>,
    pub debug_frame: Option<Bytes>,
    pub text: Option<Range<u64>>,
    pub got: Option<Range<u64>>,
    /// `None`: could not be told (no `.eh_frame_hdr`, another architecture).
    pub frame_pointers: Option<FramePointers>,
}

/// Function starts sampled for the frame-pointer check.
const FP_SAMPLE: usize = 512;

impl ObjectCfi {
    /// Reads what unwinding needs from `file` (only those sections are read: a debug
    /// build's DWARF is not).
    pub fn read(file: &File, shown: String) -> Result<Self, String> {
        let cache = ReadCache::new(file);
        let obj = object::File::parse(&cache).map_err(|e| format!("not an ELF object: {e}"))?;
        let segments = obj
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                Segment {
                    offset,
                    vaddr: s.address(),
                    filesz,
                }
            })
            .collect();
        let section = |name: &str| -> Option<(Range<u64>, Bytes)> {
            let s = obj.section_by_name(name)?;
            let data = s.data().ok()?;
            if data.is_empty() {
                return None;
            }
            Some((
                s.address()..s.address().saturating_add(s.size()),
                Arc::from(data),
            ))
        };
        let range = |name: &str| {
            obj.section_by_name(name)
                .map(|s| s.address()..s.address().saturating_add(s.size()))
        };
        let eh_frame = section(".eh_frame");
        let eh_frame_hdr = section(".eh_frame_hdr");
        let debug_frame = section(".debug_frame").map(|(_, d)| d);
        let text = range(".text");
        let got = range(".got");
        let frame_pointers = match (&eh_frame_hdr, obj.architecture()) {
            (Some((hdr_range, hdr)), object::Architecture::X86_64) => {
                frame_pointer_check(&obj, hdr_range.start, hdr)
            }
            _ => None,
        };
        Ok(Self {
            shown,
            segments,
            eh_frame,
            eh_frame_hdr,
            debug_frame,
            text,
            got,
            frame_pointers,
        })
    }

    /// Whether the object has any CFI framehop can use.
    pub fn has_cfi(&self) -> bool {
        self.eh_frame.is_some() || self.debug_frame.is_some()
    }

    /// The framehop view of this object, placed at `base_avma` over `avma`.
    pub fn module(&self, avma: Range<u64>, base_avma: u64) -> framehop::Module<Bytes> {
        let info = framehop::ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text.clone(),
            got_svma: self.got.clone(),
            eh_frame_svma: self.eh_frame.as_ref().map(|(r, _)| r.clone()),
            eh_frame: self.eh_frame.as_ref().map(|(_, d)| d.clone()),
            eh_frame_hdr_svma: self.eh_frame_hdr.as_ref().map(|(r, _)| r.clone()),
            eh_frame_hdr: self.eh_frame_hdr.as_ref().map(|(_, d)| d.clone()),
            debug_frame: self.debug_frame.clone(),
            ..Default::default()
        };
        framehop::Module::new(self.shown.clone(), avma, base_avma, info)
    }

    /// Whether the CFI covers `svma` (an address as the object states it). `None`
    /// when it cannot be told cheaply (no `.eh_frame_hdr` search table: framehop then
    /// indexes the CFI itself).
    pub fn covers(&self, svma: u64) -> Option<bool> {
        let (hdr_range, hdr) = self.eh_frame_hdr.as_ref()?;
        let (frame_range, frame) = self.eh_frame.as_ref()?;
        let mut bases = BaseAddresses::default()
            .set_eh_frame_hdr(hdr_range.start)
            .set_eh_frame(frame_range.start);
        if let Some(text) = &self.text {
            bases = bases.set_text(text.start);
        }
        if let Some(got) = &self.got {
            bases = bases.set_got(got.start);
        }
        let parsed = EhFrameHdr::new(hdr, LittleEndian).parse(&bases, 8).ok()?;
        let table = parsed.table()?;
        let eh_frame = EhFrame::new(frame, LittleEndian);
        Some(
            table
                .fde_for_address(&eh_frame, &bases, svma, EhFrame::cie_from_offset)
                .is_ok(),
        )
    }

    /// The segment a mapping of file offsets `offset..offset+len` maps: the one it
    /// overlaps most (a mapping starts at the page below its segment's offset, which
    /// may still be in the segment before it).
    pub fn segment_for(&self, offset: u64, len: u64) -> Option<&Segment> {
        let end = offset.saturating_add(len);
        self.segments
            .iter()
            .map(|s| {
                let overlap = end
                    .min(s.offset.saturating_add(s.filesz))
                    .saturating_sub(offset.max(s.offset));
                (overlap, s)
            })
            .filter(|(overlap, _)| *overlap > 0)
            .max_by_key(|(overlap, _)| *overlap)
            .map(|(_, s)| s)
    }
}

/// Looks at up to [`FP_SAMPLE`] function starts, spread over the `.eh_frame_hdr`
/// search table, for the x86_64 frame-pointer prologue `push rbp; mov rbp, rsp`
/// (after an optional `endbr64`).
fn frame_pointer_check<'a, R: object::ReadRef<'a>>(
    obj: &object::File<'a, R>,
    hdr_svma: u64,
    hdr: &[u8],
) -> Option<FramePointers> {
    let starts = function_starts(hdr_svma, hdr)?;
    if starts.is_empty() {
        return None;
    }
    let step = (starts.len() / FP_SAMPLE).max(1);
    let text = obj.section_by_name(".text")?;
    let text_start = text.address();
    let text_data = text.data().ok()?;
    let mut sampled = 0;
    let mut with_fp = 0;
    for &start in starts.iter().step_by(step) {
        let Some(off) = start.checked_sub(text_start) else {
            continue;
        };
        let Some(code) = usize::try_from(off)
            .ok()
            .and_then(|o| text_data.get(o..o.checked_add(8)?))
        else {
            continue;
        };
        sampled += 1;
        let code = code.strip_prefix(&[0xf3, 0x0f, 0x1e, 0xfa]).unwrap_or(code);
        // push rbp; mov rbp, rsp (either encoding of the mov).
        if code.starts_with(&[0x55, 0x48, 0x89, 0xe5])
            || code.starts_with(&[0x55, 0x48, 0x8b, 0xec])
        {
            with_fp += 1;
        }
    }
    Some(FramePointers { sampled, with_fp })
}

/// Function start addresses from an `.eh_frame_hdr` binary search table, in the
/// encoding every toolchain emits (table `DW_EH_PE_datarel | sdata4`); `None` for
/// anything else.
fn function_starts(hdr_svma: u64, hdr: &[u8]) -> Option<Vec<u64>> {
    const UDATA4: u8 = 0x03;
    const DATAREL_SDATA4: u8 = 0x3b;
    let (&version, rest) = hdr.split_first()?;
    let [eh_frame_ptr_enc, fde_count_enc, table_enc] = *rest.get(..3)? else {
        return None;
    };
    if version != 1 || fde_count_enc != UDATA4 || table_enc != DATAREL_SDATA4 {
        return None;
    }
    // eh_frame_ptr: 4 bytes for the sdata4/udata4 encodings in use.
    if eh_frame_ptr_enc & 0x0f != 0x0b && eh_frame_ptr_enc & 0x0f != 0x03 {
        return None;
    }
    let word = |at: usize| -> Option<[u8; 4]> { hdr.get(at..at + 4)?.try_into().ok() };
    let count = u32::from_le_bytes(word(8)?) as usize;
    let mut starts = Vec::with_capacity(count.min(1 << 20));
    for i in 0..count {
        let rel = i32::from_le_bytes(word(12 + i * 8)?);
        starts.push(hdr_svma.checked_add_signed(i64::from(rel))?);
    }
    Some(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_eh_frame_hdr_table() {
        let mut hdr = vec![1, 0x1b, 0x03, 0x3b];
        hdr.extend(0x100i32.to_le_bytes());
        hdr.extend(2u32.to_le_bytes());
        for (start, fde) in [(-0x50i32, 0x10i32), (-0x20, 0x30)] {
            hdr.extend(start.to_le_bytes());
            hdr.extend(fde.to_le_bytes());
        }
        assert_eq!(function_starts(0x1000, &hdr), Some(vec![0xfb0, 0xfe0]));
        // Truncated table, unknown encodings: no answer rather than a wrong one.
        assert_eq!(function_starts(0x1000, &hdr[..20]), None);
        let mut other = hdr.clone();
        other[3] = 0x1b;
        assert_eq!(function_starts(0x1000, &other), None);
    }

    #[test]
    fn a_mapping_belongs_to_the_segment_it_overlaps_most() {
        let seg = |offset, vaddr, filesz| Segment {
            offset,
            vaddr,
            filesz,
        };
        let cfi = ObjectCfi {
            shown: String::new(),
            segments: vec![seg(0, 0, 0x1f730), seg(0x1f730, 0x20730, 0x56680)],
            eh_frame: None,
            eh_frame_hdr: None,
            debug_frame: None,
            text: None,
            got: None,
            frame_pointers: None,
        };
        // The text mapping starts at the page below its segment's offset.
        let s = cfi.segment_for(0x1f000, 0x57000).expect("a segment");
        assert_eq!(s.vaddr, 0x20730);
        assert!(cfi.segment_for(0x900000, 0x1000).is_none());
    }

    #[test]
    fn frame_pointers_need_a_majority_of_enough_functions() {
        let fp = |sampled, with_fp| FramePointers { sampled, with_fp }.kept();
        assert!(fp(100, 90));
        assert!(!fp(100, 5));
        assert!(!fp(4, 4), "too few functions to tell");
    }
}
