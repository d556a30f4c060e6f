//! sockscope's BPF programs. One file per hook family; maps and filters are shared.
#![no_std]
#![no_main]

mod filter;
mod maps;
mod sock;
mod syscall;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
