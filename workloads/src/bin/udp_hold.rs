//! Opens many UDP sockets and keeps them open, for measuring a tracer's memory per
//! live socket.
//!
//! `udp_hold --count N [--rate R] [--steps S] [--pc-open ID]`: raises RLIMIT_NOFILE as needed
//! (with `--pc-open`, fires the `pc_open` marker first: a process the daemon judges),
//! prints `{"ready":true,"pid":P}` and waits for a line on stdin; then, S times (default
//! 1), opens N/S more unbound IPv4 UDP sockets (unbound: loopback has only ~28k
//! ephemeral ports), at most R per second if asked, prints `{"open":SO_FAR,"pid":P}`
//! and waits for a line (or EOF). Then it exits.
use socket2::{Domain, Socket, Type};
use workloads::{Pacer, number_arg, ready_then_wait, say, wait_line};

fn raise_nofile(wanted: u64) -> std::io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialized rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= wanted {
        return Ok(());
    }
    lim.rlim_cur = wanted;
    lim.rlim_max = lim.rlim_max.max(wanted);
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count = number_arg(&args, "--count", 10_000);
    if let Err(e) = raise_nofile(count + 64) {
        eprintln!(
            "udp_hold: cannot raise RLIMIT_NOFILE to {}: {e} (run as root)",
            count + 64
        );
        std::process::exit(2);
    }
    let rate = number_arg(&args, "--rate", 0);
    let steps = number_arg(&args, "--steps", 1).clamp(1, count.max(1));
    // A process with sockscope markers (the daemon judges only those): one
    // PeerConnection opened, the sockets held are its process's.
    let pc_open = number_arg(&args, "--pc-open", 0);
    if pc_open != 0 {
        tracer_usdt::pc_open(pc_open);
    }
    ready_then_wait("");
    let mut held = Vec::with_capacity(count as usize);
    for step in 1..=steps {
        let pacer = Pacer::new(Some(rate as f64));
        let target = count * step / steps;
        for i in 0.. {
            if held.len() as u64 >= target {
                break;
            }
            pacer.wait(i);
            match Socket::new(Domain::IPV4, Type::DGRAM, None) {
                Ok(s) => held.push(s),
                Err(e) => {
                    eprintln!("udp_hold: socket {} failed: {e}", held.len());
                    std::process::exit(1);
                }
            }
        }
        say(&format!(
            "{{\"open\":{},\"pid\":{}}}",
            held.len(),
            std::process::id()
        ));
        wait_line();
    }
}
