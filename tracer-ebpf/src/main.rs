//! sockscope's BPF programs. One file per hook family (a backend's hooks: cgroup_sock
//! in sock.rs, fentry.rs, kprobe.rs; then syscall.rs and usdt.rs, used by all); the
//! records, maps and filters are shared.
// Built for the BPF target by aya-build; on the host (`cargo build --workspace`,
// clippy) it compiles as an empty program so workspace-wide commands keep working.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// slots.rs: compare-and-exchange (see there).
#![cfg_attr(
    target_arch = "bpf",
    allow(internal_features),
    feature(core_intrinsics)
)]

mod emit;
mod fentry;
mod filter;
mod identity;
mod io;
mod kernel_sock;
mod kprobe;
mod maps;
mod slots;
mod sock;
mod stack_sample;
mod syscall;
mod usdt;
mod walk;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
