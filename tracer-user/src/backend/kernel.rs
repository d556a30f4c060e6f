//! What the programs need to know about the running kernel, from its BTF, read once
//! per load: the offsets of the `struct sock` fields the kernel-function backends'
//! programs read, which of their functions exist, where `task_struct.flags` is, and how
//! USDT markers are told apart.
use aya::{EbpfLoader, programs::ProgramType, sys::BpfHelper};

use super::Unavailable;
use crate::system::{self, Btf};

/// Offsets of the `struct sock` fields the kernel-function programs read, from BTF.
#[derive(Clone, Copy, Debug)]
pub struct SockOffsets {
    family: u32,
    protocol: u32,
    num: u32,
    rcv_saddr: u32,
    v6_rcv_saddr: u32,
    sk_socket: u32,
    socket_inode: u32,
    inode_ino: u32,
}

/// Why the kernel-function backends cannot read `struct sock` on this kernel.
#[derive(Clone, Copy, Debug)]
pub enum BtfGap {
    NoBtf,
    /// This field is missing from the kernel's BTF.
    NoField(&'static str),
}

impl From<BtfGap> for Unavailable {
    fn from(gap: BtfGap) -> Self {
        match gap {
            BtfGap::NoBtf => Unavailable::NoBtf,
            BtfGap::NoField(f) => Unavailable::NoKernelField(f),
        }
    }
}

impl SockOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self, BtfGap> {
        let field = |s: &str, m: &str, what: &'static str| {
            btf.member_offset(s, m).ok_or(BtfGap::NoField(what))
        };
        let common = field("sock", "__sk_common", "sock.__sk_common")?;
        let socket = field("socket_alloc", "socket", "socket_alloc.socket")?;
        Ok(Self {
            family: common + field("sock_common", "skc_family", "sock_common.skc_family")?,
            protocol: field("sock", "sk_protocol", "sock.sk_protocol")?,
            num: common + field("sock_common", "skc_num", "sock_common.skc_num")?,
            rcv_saddr: common + field("sock_common", "skc_rcv_saddr", "sock_common.skc_rcv_saddr")?,
            v6_rcv_saddr: common
                + field(
                    "sock_common",
                    "skc_v6_rcv_saddr",
                    "sock_common.skc_v6_rcv_saddr",
                )?,
            sk_socket: field("sock", "sk_socket", "sock.sk_socket")?,
            socket_inode: field("socket_alloc", "vfs_inode", "socket_alloc.vfs_inode")?
                .checked_sub(socket)
                .ok_or(BtfGap::NoField("socket_alloc.vfs_inode"))?,
            inode_ino: field("inode", "i_ino", "inode.i_ino")?,
        })
    }

    /// Sets the programs' read-only offset globals (see tracer-ebpf's kernel_sock.rs).
    pub fn set_globals<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        for (name, value) in [
            ("SK_FAMILY_OFFSET", &self.family),
            ("SK_PROTOCOL_OFFSET", &self.protocol),
            ("SK_NUM_OFFSET", &self.num),
            ("SK_RCV_SADDR_OFFSET", &self.rcv_saddr),
            ("SK_V6_RCV_SADDR_OFFSET", &self.v6_rcv_saddr),
            ("SK_SOCKET_OFFSET", &self.sk_socket),
            ("SOCKET_INODE_OFFSET", &self.socket_inode),
            ("INODE_INO_OFFSET", &self.inode_ino),
        ] {
            loader.override_global(name, value, true);
        }
    }
}

/// How the USDT program tells which marker fired (one program serves them all).
#[derive(Clone, Copy, Debug)]
pub enum MarkerIds {
    /// By the uprobe's attach cookie (Linux 5.15+).
    Cookie,
    /// By the marker's offset in its file, from the mapping that holds the probed
    /// address (kernels without attach cookies; see tracer-ebpf's usdt.rs).
    FileOffset(MappingOffsets),
}

impl MarkerIds {
    /// Attach cookies if the kernel has them, else file offsets if its BTF says where
    /// the task's mappings are; `None`: markers cannot be told apart here.
    fn detect(btf: Option<&Btf>) -> Option<Self> {
        // aya passes a cookie only through a perf link, which came with the helper.
        let cookies = aya::features().bpf_perf_link()
            && aya::sys::is_helper_supported(
                ProgramType::KProbe,
                BpfHelper::BPF_FUNC_get_attach_cookie,
            )
            .unwrap_or(false);
        if cookies {
            return Some(Self::Cookie);
        }
        MappingOffsets::from_btf(btf?).map(Self::FileOffset)
    }

    /// Sets the USDT program's read-only globals.
    pub fn set_globals<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        match self {
            Self::Cookie => {}
            Self::FileOffset(o) => {
                loader.override_global("USDT_BY_COOKIE", &0u8, true);
                o.set_globals(loader);
            }
        }
    }
}

/// Where a task's mappings are, for finding the one that holds an address the way
/// the kernel's `find_vma` does (the tree of mappings: kernels before 6.1).
#[derive(Clone, Copy, Debug)]
pub struct MappingOffsets {
    task_mm: u32,
    mm_rb: u32,
    vma_rb: u32,
    vma_start: u32,
    vma_end: u32,
    vma_pgoff: u32,
    rb_left: u32,
    rb_right: u32,
}

impl MappingOffsets {
    fn from_btf(btf: &Btf) -> Option<Self> {
        Some(Self {
            task_mm: btf.member_offset("task_struct", "mm")?,
            mm_rb: btf.member_offset("mm_struct", "mm_rb")?,
            vma_rb: btf.member_offset("vm_area_struct", "vm_rb")?,
            vma_start: btf.member_offset("vm_area_struct", "vm_start")?,
            vma_end: btf.member_offset("vm_area_struct", "vm_end")?,
            vma_pgoff: btf.member_offset("vm_area_struct", "vm_pgoff")?,
            rb_left: btf.member_offset("rb_node", "rb_left")?,
            rb_right: btf.member_offset("rb_node", "rb_right")?,
        })
    }

    fn set_globals<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        for (name, value) in [
            ("TASK_MM_OFFSET", &self.task_mm),
            ("MM_RB_OFFSET", &self.mm_rb),
            ("VMA_RB_OFFSET", &self.vma_rb),
            ("VMA_START_OFFSET", &self.vma_start),
            ("VMA_END_OFFSET", &self.vma_end),
            ("VMA_PGOFF_OFFSET", &self.vma_pgoff),
            ("RB_LEFT_OFFSET", &self.rb_left),
            ("RB_RIGHT_OFFSET", &self.rb_right),
        ] {
            loader.override_global(name, value, true);
        }
    }
}

/// The kernel facts the programs need, read once per load.
pub struct KernelFacts {
    pub offsets: Result<SockOffsets, BtfGap>,
    /// Where `task_struct.flags` is (release records say whether the process was
    /// exiting), if the kernel has BTF.
    pub task_flags: Option<u32>,
    /// Where a process's start time and executable are (exec records carry them), if
    /// the kernel has BTF.
    pub process: Option<tracer_common::ProcessOffsets>,
    /// The hooked functions this kernel has (in its BTF).
    functions: Vec<&'static str>,
    /// How USDT markers are told apart; `None`: they cannot be on this kernel.
    pub markers: Option<MarkerIds>,
}

impl KernelFacts {
    pub fn read() -> Self {
        let raw = system::kernel_btf();
        let Some(btf) = raw.as_deref().and_then(Btf::parse) else {
            return Self {
                offsets: Err(BtfGap::NoBtf),
                task_flags: None,
                process: None,
                functions: Vec::new(),
                markers: MarkerIds::detect(None),
            };
        };
        Self {
            offsets: SockOffsets::from_btf(&btf),
            task_flags: btf.member_offset("task_struct", "flags"),
            process: process_offsets(&btf),
            functions: super::attach::hooked_functions()
                .filter(|f| btf.has_function(f))
                .collect(),
            markers: MarkerIds::detect(Some(&btf)),
        }
    }

    pub(super) fn has_function(&self, name: &str) -> bool {
        self.functions.contains(&name)
    }
}

/// Where [`tracer_common::ProcessIdentity`]'s fields are; `None` if one is missing.
fn process_offsets(btf: &Btf) -> Option<tracer_common::ProcessOffsets> {
    Some(tracer_common::ProcessOffsets {
        // Named `real_start_time` before Linux 5.5.
        task_start_boottime: btf
            .member_offset("task_struct", "start_boottime")
            .or_else(|| btf.member_offset("task_struct", "real_start_time"))?,
        task_mm: btf.member_offset("task_struct", "mm")?,
        mm_exe_file: btf.member_offset("mm_struct", "exe_file")?,
        file_inode: btf.member_offset("file", "f_inode")?,
        inode_ino: btf.member_offset("inode", "i_ino")?,
        inode_sb: btf.member_offset("inode", "i_sb")?,
        sb_dev: btf.member_offset("super_block", "s_dev")?,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sock_offsets_of_the_running_kernel() {
        let Some(raw) = system::kernel_btf() else {
            crate::say!("SKIP: no kernel BTF");
            return;
        };
        let btf = Btf::parse(&raw).expect("kernel BTF parses");
        let o = SockOffsets::from_btf(&btf).expect("every field is found");
        // struct sock starts with sock_common: the family is at 16, the port at 14.
        assert_eq!((o.family, o.num, o.rcv_saddr), (16, 14, 4));
        assert!(
            o.protocol > o.v6_rcv_saddr,
            "sk_protocol is past sock_common"
        );
        assert!(o.socket_inode > 0 && o.inode_ino > 0);
    }
}
