//! The kernel-function backends (fentry, kprobe) see a raw `struct sock *`: its fields
//! are read at offsets user space took from the kernel's BTF and set before load (aya
//! has no CO-RE for Rust programs). What both backends do with a socket is here; they
//! differ only in how they get the pointer and which identity they give the socket.
use aya_ebpf::{helpers::bpf_probe_read_kernel, programs::tracing::StackIdContext};
use tracer_common::{IPPROTO_UDP, sample_flags};

use crate::{
    emit::{StackIds, emit_bind, emit_release, stash_create},
    filter::{current, current_exiting, current_is_kthread, read_global},
    stack_sample::sample,
};

/// `sock_common.skc_family` (u16).
#[unsafe(no_mangle)]
static SK_FAMILY_OFFSET: u32 = 0;
/// `sock.sk_protocol` (u16 since Linux 5.6).
#[unsafe(no_mangle)]
static SK_PROTOCOL_OFFSET: u32 = 0;
/// `sock_common.skc_num`: the local port, host order (u16).
#[unsafe(no_mangle)]
static SK_NUM_OFFSET: u32 = 0;
/// `sock_common.skc_rcv_saddr`: the bound IPv4 address.
#[unsafe(no_mangle)]
static SK_RCV_SADDR_OFFSET: u32 = 0;
/// `sock_common.skc_v6_rcv_saddr`: the bound IPv6 address.
#[unsafe(no_mangle)]
static SK_V6_RCV_SADDR_OFFSET: u32 = 0;
/// `sock.sk_socket`, and from it the socket's inode: `socket_alloc.vfs_inode` (the
/// `struct socket` comes first in `socket_alloc`) and `inode.i_ino`.
#[unsafe(no_mangle)]
static SK_SOCKET_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SOCKET_INODE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static INODE_INO_OFFSET: u32 = 0;

const AF_INET6: u16 = tracer_common::AF_INET6;

#[inline(always)]
fn offset(v: &u32) -> usize {
    read_global(v) as usize
}

/// A `struct sock *` the kernel handed to a hooked function.
#[derive(Clone, Copy)]
pub struct KernelSock(pub *const u8);

impl KernelSock {
    #[inline(always)]
    fn read<T>(self, at: &u32) -> Option<T> {
        // SAFETY: the helper reads kernel memory and fails cleanly on a bad address.
        unsafe { bpf_probe_read_kernel(self.0.add(offset(at)).cast::<T>()) }.ok()
    }

    /// The family of a UDP socket; `None` for other protocols (UDP-Lite shares the
    /// hooked functions) and unreadable sockets.
    #[inline(always)]
    fn udp_family(self) -> Option<u16> {
        let protocol: u16 = self.read(&SK_PROTOCOL_OFFSET)?;
        if u32::from(protocol) != IPPROTO_UDP {
            return None;
        }
        self.read(&SK_FAMILY_OFFSET)
    }

    /// The bound (port in host order, address as `BindEvent::addr`).
    #[inline(always)]
    fn local(self, family: u16) -> (u16, [u8; 16]) {
        let port: u16 = self.read(&SK_NUM_OFFSET).unwrap_or(0);
        let mut addr = [0u8; 16];
        if family == AF_INET6 {
            addr = self.read(&SK_V6_RCV_SADDR_OFFSET).unwrap_or(addr);
        } else {
            let v4: [u8; 4] = self.read(&SK_RCV_SADDR_OFFSET).unwrap_or([0; 4]);
            addr[..4].copy_from_slice(&v4);
        }
        (port, addr)
    }

    /// The socket's inode number (`socket:[N]` in /proc/PID/fd), 0 if unreadable.
    #[inline(always)]
    pub fn inode(self) -> u64 {
        let Some(socket) = self.read::<*const u8>(&SK_SOCKET_OFFSET) else {
            return 0;
        };
        let ino = offset(&SOCKET_INODE_OFFSET) + offset(&INODE_INO_OFFSET);
        // SAFETY: as in `read`.
        unsafe { bpf_probe_read_kernel(socket.add(ino).cast::<u64>()) }.unwrap_or(0)
    }
}

/// The socket's protocol state is being set up (`udp_init_sock`, `udpv6_init_sock`):
/// it is being created. Kernel threads' sockets are left out.
#[inline(always)]
pub fn on_init(sk: KernelSock, identity: impl FnOnce() -> u64) {
    if current_is_kthread() {
        return;
    }
    if let Some(family) = sk.udp_family() {
        stash_create(identity(), family);
    }
}

/// The socket got its local port (`udp_v4_get_port`/`udp_v6_get_port` returned 0).
#[inline(always)]
pub fn on_port(sk: KernelSock, identity: impl FnOnce() -> u64) {
    if let Some(family) = sk.udp_family() {
        let (port, addr) = sk.local(family);
        emit_bind(identity(), family, port, addr);
    }
}

/// The socket is being destroyed (`udp_destroy_sock`, `udpv6_destroy_sock`, called
/// when its last reference is closed), with the releasing stacks; in DWARF mode the
/// registers and stack of the releasing thread too (not of an exiting process: the
/// kernel is closing its files, its user stack is gone).
#[inline(always)]
pub fn on_destroy<C: StackIdContext>(ctx: &C, sk: KernelSock, identity: impl FnOnce() -> u64) {
    if let Some(family) = sk.udp_family() {
        let cookie = identity();
        emit_release(cookie, family, || {
            if current_exiting() == 0 {
                let (tgid, tid) = current();
                sample(tgid, tid, cookie, sample_flags::FOR_RELEASE, 0);
            }
            StackIds::current(ctx)
        });
    }
}
