//! Why a leaked socket is still open, from the kernel's record of its sends and
//! receives: a task that keeps using it (active), a task parked on a read (awaited),
//! nothing at all (held). Each leak is one the program makes on purpose, of a known
//! kind: the mDNS query loop of webrtc-rs that keeps asking, the session mux whose read
//! loop waits for datagrams that never come, a socket nothing ever touches.
//!
//! Each verdict is also held against ground truth the test takes itself, from /proc,
//! while the program lives: `check` is read line by line, and the program lingers past
//! the grace, so the test looks when the PeerConnection has closed and again as soon
//! as the leak line comes. The webrtc-rs example runs in a network namespace of its own
//! with only `lo`, whose packet counters (/proc/PID/net/dev follows the process's
//! namespace) count every datagram sent in it; a socket's row of /proc/PID/net/udp
//! gives its queues and drops; /proc/PID/fdinfo of an epoll fd lists what it watches.
mod common;

use std::{
    path::Path,
    process::{Child, Stdio},
    sync::MutexGuard,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

fn only_leak(run: &CheckRun) -> &Value {
    let leaks = by_event(&run.ours, "leak");
    assert_eq!(leaks.len(), 1, "{}\n{leaks:#?}", run.stderr);
    leaks[0]
}

/// A `sockscope check --format json` run read as it goes, so the test can look at the
/// program at the moments that matter. Tests that attach run one at a time
/// ([`serial`]).
struct LiveCheck {
    child: Child,
    out: Lines,
    err: Lines,
    stdout: Vec<String>,
    stderr: Vec<String>,
    /// The command's pid, as `check` names it.
    pid: u32,
    _serial: MutexGuard<'static, ()>,
}

/// "sockscope: checking `CMD` (pid N), grace G" -> N.
fn checked_pid(line: &str) -> Option<u32> {
    let (_, rest) = line.rsplit_once("(pid ")?;
    rest.split(')').next()?.parse().ok()
}

impl LiveCheck {
    fn start(check_args: &[&str], cmd: &Path, cmd_args: &[&str]) -> Self {
        let serial = serial();
        let mut child = check_command(check_args, cmd, cmd_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sockscope check");
        let out = Lines::new(child.stdout.take().expect("stdout"));
        let err = Lines::new(child.stderr.take().expect("stderr"));
        let mut stderr = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let pid = loop {
            let line = deadline
                .checked_duration_since(Instant::now())
                .and_then(|left| err.next(left))
                .unwrap_or_else(|| panic!("check named no command pid: {stderr:#?}"));
            let pid = checked_pid(&line);
            stderr.push(line);
            if let Some(pid) = pid {
                break pid;
            }
        };
        Self {
            child,
            out,
            err,
            stdout: Vec::new(),
            stderr,
            pid,
            _serial: serial,
        }
    }

    /// The next JSON line on stdout (sockscope's or the program's) that `want`s; every
    /// line read is kept for [`Self::finish`].
    fn next_where(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let Some(line) = deadline
                .checked_duration_since(Instant::now())
                .and_then(|left| self.out.next(left))
            else {
                panic!(
                    "no {what} on stdout: {:#?}\nstderr: {:#?}",
                    self.stdout, self.stderr
                );
            };
            let v = serde_json::from_str::<Value>(&line).ok();
            self.stdout.push(line);
            if let Some(v) = v.filter(&want) {
                return v;
            }
        }
    }

    /// Everything until `check` ends (the program's linger, then its exit).
    fn finish(mut self) -> CheckRun {
        let rest = self.out.rest(Duration::from_secs(120));
        self.stdout.extend(rest);
        let status = self.child.wait().expect("wait for sockscope check");
        self.stderr.extend(self.err.rest(Duration::from_secs(10)));
        assert_nothing_attached("after check");
        let lines: Vec<Value> = self
            .stdout
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let (ours, program) = lines.into_iter().partition(|v| v.get("schema").is_some());
        CheckRun {
            code: status.code(),
            ours,
            program,
            stderr: self.stderr.join("\n"),
        }
    }
}

impl Drop for LiveCheck {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Why /proc/PID may be unreadable: said when the program is gone.
fn gone(pid: u32) -> &'static str {
    if Path::new(&format!("/proc/{pid}")).exists() {
        ""
    } else {
        " (the program ended before the test could look: the verdict came after its linger)"
    }
}

/// /proc/PID/`rel`: the program must still run (it lingers past the grace for this).
fn read_proc(pid: u32, rel: &str) -> String {
    let path = format!("/proc/{pid}/{rel}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}{}", gone(pid)))
}

/// Packets `lo` sent in the network namespace of `pid` (/proc/PID/net/dev: rx bytes,
/// packets and 6 more receive fields, then tx bytes, tx packets).
fn lo_tx_packets(pid: u32) -> u64 {
    let text = read_proc(pid, "net/dev");
    text.lines()
        .find_map(|l| {
            let (name, counters) = l.split_once(':')?;
            if name.trim() != "lo" {
                return None;
            }
            counters.split_whitespace().nth(9)?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no lo counters in /proc/{pid}/net/dev: {text}"))
}

/// UDP datagrams sent in the network namespace of `pid` (`OutDatagrams` of the `Udp:`
/// lines of /proc/PID/net/snmp: one per datagram a socket sent, whatever the device).
fn udp_out_datagrams(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/net/snmp");
    let text = read_proc(pid, "net/snmp");
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        panic!("no Udp lines in {path}: {text}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find_map(|(n, v)| (n == "OutDatagrams").then(|| v.parse().ok()).flatten())
        .unwrap_or_else(|| panic!("no Udp OutDatagrams in {path}: {text}"))
}

/// A UDP socket's row of /proc/PID/net/udp{,6} (the tables of its namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UdpRow {
    inode: u64,
    tx_queue: u64,
    rx_queue: u64,
    drops: u64,
}

fn udp_rows(pid: u32, port: u16) -> Vec<UdpRow> {
    let mut rows = Vec::new();
    for table in ["udp", "udp6"] {
        let text = read_proc(pid, &format!("net/{table}"));
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |s: &str| u64::from_str_radix(s, 16).ok();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            let queues = f.get(4).and_then(|q| q.split_once(':'));
            let row = (|| {
                Some(UdpRow {
                    tx_queue: hex(queues?.0)?,
                    rx_queue: hex(queues?.1)?,
                    inode: f.get(9)?.parse().ok()?,
                    drops: f.get(12)?.parse().ok()?,
                })
            })();
            if let (Some(p), Some(row)) = (local_port, row)
                && p == port
            {
                rows.push(row);
            }
        }
    }
    rows
}

/// The socket inodes `pid` holds fds of.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}{}", gone(pid)))
        .filter_map(|e| {
            let target = std::fs::read_link(e.ok()?.path()).ok()?;
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The one UDP socket `pid` holds on local `port`.
fn held_socket(pid: u32, port: u16) -> UdpRow {
    let held = socket_inodes(pid);
    let rows: Vec<UdpRow> = udp_rows(pid, port)
        .into_iter()
        .filter(|r| held.contains(&r.inode))
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "pid {pid} holds one UDP socket on port {port}: {rows:?}"
    );
    rows[0]
}

/// A registration in an epoll set of the process: its `tfd:` line in the epoll fd's
/// /proc/PID/fdinfo ("tfd: 9 events: 19 data: ... pos:0 ino:3a8d sdev:9").
#[derive(Debug, Clone, Copy)]
struct EpollEntry {
    epoll_fd: i32,
    target_fd: i32,
    events: u32,
    inode: u64,
}

const EPOLLIN: u32 = 0x1;

fn epoll_entries(pid: u32) -> Vec<EpollEntry> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}{}", gone(pid)))
        .filter_map(Result::ok)
    {
        let Some(epoll_fd) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(info) = std::fs::read_to_string(e.path()) else {
            continue; // closed meanwhile
        };
        for line in info.lines().filter(|l| l.starts_with("tfd:")) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let field = |key: &str| {
                f.iter()
                    .position(|w| *w == key)
                    .and_then(|i| f.get(i + 1).copied())
            };
            let entry = (|| {
                Some(EpollEntry {
                    epoll_fd,
                    target_fd: field("tfd:")?.parse().ok()?,
                    events: u32::from_str_radix(field("events:")?, 16).ok()?,
                    inode: f
                        .iter()
                        .find_map(|w| w.strip_prefix("ino:"))
                        .and_then(|i| u64::from_str_radix(i, 16).ok())?,
                })
            })();
            out.push(entry.unwrap_or_else(|| panic!("unreadable epoll entry: {line}")));
        }
    }
    out
}

/// How long the programs stay after their last PeerConnection closed: past the grace
/// by more than the verdict's lag on a loaded machine (over a second was seen with a
/// debug sockscope and the two cores busy compiling), so the test can look at them
/// when the leak line comes.
const LINGER_AFTER_GRACE_MS: u64 = 3500;

/// The legacy example (webrtc-rs 0.17) with one injected leak in its only session,
/// read as it runs; its first line (printed once it is in its own namespace) is read.
fn proxy_leak(kind: &str) -> LiveCheck {
    let linger = (1500 + LINGER_AFTER_GRACE_MS).to_string();
    let mut live = LiveCheck::start(
        &["--grace", "1500ms"],
        &workload_bin("webrtc-proxy"),
        &[
            "--netns",
            "--sessions",
            "1",
            "--leak",
            kind,
            "--linger",
            &linger,
        ],
    );
    let first = live.next_where("the example's first line", |v| {
        v.get("interfaces").is_some() && v.get("schema").is_none()
    });
    assert_eq!(
        first["interfaces"],
        serde_json::json!(["lo"]),
        "in a namespace with only lo: {first}"
    );
    live
}

/// The session's report, printed right after both its PeerConnections closed.
fn session_report(live: &mut LiveCheck) -> Value {
    live.next_where("the session's report", |v| {
        v.get("pc_ids").is_some() && v.get("schema").is_none()
    })
}

fn leak_line(live: &mut LiveCheck) -> Value {
    live.next_where("a leak line", |v| v["event"] == "leak")
}

/// mDNS (webrtc-rs binds 0.0.0.0:5353).
const MDNS_PORT: u16 = 5353;

#[test]
fn a_query_loop_that_keeps_sending_is_active() {
    if !require_root("a_query_loop_that_keeps_sending_is_active") {
        return;
    }
    let mut live = proxy_leak("mdns");
    let pid = live.pid;
    // Before the leaked mDNS socket exists, lo's count is a floor for everything it
    // will ever send: read lo, then look for the socket, until it is there. (The
    // namespace is the program's own: its lo counted from 0, also a floor.)
    let mut before_socket = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = (lo_tx_packets(pid), udp_out_datagrams(pid));
        if !udp_rows(pid, MDNS_PORT).is_empty() {
            break;
        }
        before_socket = counts;
        assert!(
            Instant::now() < deadline,
            "no mDNS socket in pid {pid} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    session_report(&mut live);
    let after_close = (lo_tx_packets(pid), udp_out_datagrams(pid));
    let leak_seen = leak_line(&mut live);
    let at_verdict = (lo_tx_packets(pid), udp_out_datagrams(pid));
    assert_eq!(
        udp_rows(pid, MDNS_PORT).len(),
        1,
        "the mDNS socket is still open at the verdict"
    );
    let run = live.finish();
    let leak = only_leak(&run);
    assert_eq!(leak, &leak_seen);
    assert_eq!(leak["kind"], "active", "{leak}");
    let io = &leak["io"];
    // The loop asks once a second: within the 1.5 s grace it sent at least once.
    assert!(io["sends_after_end"].as_u64() >= Some(1), "{io}");
    assert!(
        !io["last_stack"].as_array().unwrap().is_empty(),
        "the stack of the last send or receive: {io}"
    );
    // Ground truth: lo carried packets during the grace, after both PeerConnections
    // had closed, UDP datagrams among them (lo also carries the IGMP reports of the
    // mDNS socket's group); and sockscope counts no send that the namespace did not
    // make between a moment before the socket existed and the verdict.
    let moved = |from: (u64, u64)| {
        (
            at_verdict.0.saturating_sub(from.0),
            at_verdict.1.saturating_sub(from.1),
        )
    };
    let (lo, udp) = moved(after_close);
    assert!(
        lo > 0 && udp > 0,
        "during the grace lo carried {lo} packets, {udp} of them UDP datagrams"
    );
    let sends = io["sends_after_end"].as_u64().unwrap_or(u64::MAX);
    let (lo, udp) = moved(before_socket);
    assert!(
        sends <= udp && sends <= lo,
        "{sends} sends after the end, but from before the socket existed to the verdict \
         the namespace sent {udp} UDP datagrams and lo carried {lo} packets: {io}"
    );
}

#[test]
fn a_read_loop_parked_on_the_socket_is_awaited() {
    if !require_root("a_read_loop_parked_on_the_socket_is_awaited") {
        return;
    }
    let mut live = proxy_leak("task");
    let pid = live.pid;
    let report = session_report(&mut live);
    let after_close = (lo_tx_packets(pid), udp_out_datagrams(pid));
    let port = report["leaked"][0]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("the leaked mux socket's port: {report}"));
    let leak_seen = leak_line(&mut live);
    // Ground truth at the verdict, while the program lingers.
    let at_verdict = (lo_tx_packets(pid), udp_out_datagrams(pid));
    let socket = held_socket(pid, port);
    let epoll = epoll_entries(pid);
    let run = live.finish();
    let leak = only_leak(&run);
    assert_eq!(leak, &leak_seen);
    assert_eq!(leak["local_port"], port, "{leak}");
    assert_eq!(leak["kind"], "awaited", "{leak}");
    let io = &leak["io"];
    assert_eq!(
        (io["last_op"].as_str(), io["last_result"].as_i64()),
        (Some("recv"), Some(-11))
    );
    for n in ["sends_after_end", "errors_after_end"] {
        assert_eq!(io[n], 0, "nothing sent after close: {io}");
    }
    // At most the peer's last packets of the teardown were read, right at the close;
    // then nothing for the rest of the grace.
    assert!(io["last_ago_ns"].as_u64() > Some(1_000_000_000), "{io}");
    // Ground truth: nothing waits in its receive queue (a reader has nothing to take),
    // nothing moved on lo during the grace (nothing could wake it), and it is in an
    // epoll set for reading: the runtime's reactor waits on it for its parked task.
    assert_eq!(
        (socket.rx_queue, socket.drops),
        (0, 0),
        "receive queue and drops of the mux socket at the verdict: {socket:?}"
    );
    assert_eq!(
        at_verdict, after_close,
        "(lo packets, UDP datagrams sent) moved during the grace: something still talks"
    );
    let mine: Vec<&EpollEntry> = epoll.iter().filter(|e| e.inode == socket.inode).collect();
    assert!(
        mine.iter().any(|e| e.events & EPOLLIN != 0),
        "the mux socket (inode {}) is in no epoll set with EPOLLIN: {epoll:?}",
        socket.inode
    );
    // sockscope saw the same registrations.
    let reported = leak["epoll"].as_array().cloned().unwrap_or_default();
    for e in &mine {
        assert!(
            reported
                .iter()
                .any(|r| r["epoll_fd"] == e.epoll_fd && r["target_fd"] == e.target_fd),
            "{e:?} missing from the leak's epoll sets: {reported:?}"
        );
    }
}

#[test]
fn a_socket_nothing_touches_is_held() {
    if !require_root("a_socket_nothing_touches_is_held") {
        return;
    }
    let linger = (300 + LINGER_AFTER_GRACE_MS).to_string();
    let mut live = LiveCheck::start(
        &["--grace", "300ms"],
        &workload_bin("pc_sim"),
        &["--pcs", "1", "--leak", "1", "--linger", &linger],
    );
    let pid = live.pid;
    let closed = live.next_where("pc_sim's close of PeerConnection 1", |v| {
        v["pc_id"] == 1 && v.get("leaked_ports").is_some()
    });
    let port = closed["leaked_ports"][0]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("the leaked port: {closed}"));
    let at_close = held_socket(pid, port);
    let leak_seen = leak_line(&mut live);
    let at_verdict = held_socket(pid, port);
    let epoll = epoll_entries(pid);
    let run = live.finish();
    let leak = only_leak(&run);
    assert_eq!(leak, &leak_seen);
    assert_eq!(leak["local_port"], port, "{leak}");
    assert_eq!(leak["kind"], "held", "{leak}");
    assert!(
        leak["io"].is_null(),
        "no send or receive was ever seen: {leak}"
    );
    // Ground truth: pc_sim never reads it, so any datagram that came would still be
    // queued or counted as dropped: none came, at the close or at the verdict; nothing
    // is queued to send; and no epoll set watches it (no task can wait on it).
    assert_eq!(at_close.inode, at_verdict.inode, "the same socket");
    for (when, s) in [("at the close", at_close), ("at the verdict", at_verdict)] {
        assert_eq!(
            (s.rx_queue, s.tx_queue, s.drops),
            (0, 0, 0),
            "queues and drops {when}: {s:?}"
        );
    }
    assert!(
        epoll.iter().all(|e| e.inode != at_verdict.inode),
        "an epoll set watches the held socket: {epoll:?}"
    );
}

/// BPF map `name` held by process `pid` (found through its fds in /proc).
fn map_data(pid: u32, name: &str) -> aya::maps::MapData {
    let dir = format!("/proc/{pid}/fdinfo");
    let ids: Vec<u32> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("map_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect();
    for id in ids {
        let Ok(info) = aya::maps::MapInfo::from_id(id) else {
            continue;
        };
        if info.name_as_str() == Some(name) {
            return aya::maps::MapData::from_id(id).expect("open the map by id");
        }
    }
    panic!("process {pid} holds no map {name}")
}

/// The entries of `pid`'s `u64 -> V` hash map `name`, read from the kernel.
fn map_entries<V: aya::Pod>(pid: u32, name: &str) -> Vec<(u64, V)> {
    let map =
        aya::maps::HashMap::<_, u64, V>::try_from(aya::maps::Map::HashMap(map_data(pid, name)))
            .expect("a u64-keyed hash map");
    map.iter().filter_map(Result::ok).collect()
}

/// The held slots (`[owner, value...]`, owner 0 = free) of `pid`'s slot array `name`
/// (tracer-ebpf's slots.rs), as `N` words each.
fn held_slots<const N: usize>(pid: u32, name: &str) -> Vec<[u64; N]> {
    let map = aya::maps::Array::<_, [u64; N]>::try_from(aya::maps::Map::Array(map_data(pid, name)))
        .expect("an array of slots");
    map.iter()
        .filter_map(Result::ok)
        .filter(|slot| slot[0] != 0)
        .collect()
}

/// The kernel's cookie of socket `fd` of this process.
fn so_cookie(fd: i32) -> Option<u64> {
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of 8 bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cookie)
}

/// Under `sockscope ARGS` (ready when its stderr says `ready`), this process makes and
/// closes 3000 UDP sockets (100 at a time) and keeps 3: returns the keys (`pid << 32 | fd`) of the 3
/// and, of the I/O hooks' maps, the keys of this process watched (`WATCHED_FDS` and
/// its slots, each checked to hold the socket's cookie), and the keys tracked sockets hold (`TRACKED` and its slots) and `WATCH_KEY_OF` holds for its
/// sockets. `slots`: `SOCKSCOPE_SLOTS` for sockscope.
fn io_maps_after_churn(args: &[&str], ready: &str, slots: Option<&str>) -> [Vec<u64>; 4] {
    use std::os::fd::AsRawFd as _;
    let _serial = serial();
    let me = u64::from(std::process::id());
    let mut tracer = std::process::Command::new(sockscope_bin());
    if let Some(n) = slots {
        tracer.env("SOCKSCOPE_SLOTS", n);
    }
    let mut tracer = tracer
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sockscope");
    let err = Lines::new(tracer.stderr.take().expect("stderr"));
    err.wait_for(ready, Duration::from_secs(30));
    // In batches held together, so the fds above the 3 kept are not reused by them:
    // an fd's entry left behind at a release shows.
    for _ in 0..30 {
        let batch: Vec<std::net::UdpSocket> = (0..100)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket"))
            .collect();
        drop(batch);
    }
    let kept: Vec<std::net::UdpSocket> = (0..3)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let mine = |keys: Vec<u64>| -> Vec<u64> {
        let mut k: Vec<u64> = keys.into_iter().filter(|k| k >> 32 == me).collect();
        k.sort();
        k
    };
    let want = mine(
        kept.iter()
            .map(|s| (me << 32) | s.as_raw_fd() as u64)
            .collect(),
    );
    // The kernel writes and removes as the calls happen: no waiting for user space.
    let pid = tracer.id();
    let cookie_of = |key: u64| {
        let fd = kept
            .iter()
            .find(|s| (me << 32) | s.as_raw_fd() as u64 == key)?;
        so_cookie(fd.as_raw_fd())
    };
    let watched_with_cookies: Vec<(u64, u64)> =
        map_entries::<tracer_common::WatchedFd>(pid, "WATCHED_FDS")
            .into_iter()
            .map(|(k, w)| (k, w.cookie))
            .chain(
                held_slots::<4>(pid, "WATCHED_SLOTS")
                    .into_iter()
                    .map(|[owner, cookie, ..]| (owner, cookie)),
            )
            .filter(|(k, _)| k >> 32 == me)
            .collect();
    for (key, cookie) in &watched_with_cookies {
        assert_eq!(
            cookie_of(*key),
            Some(*cookie),
            "key {key:#x} is watched with its own socket's cookie"
        );
    }
    let watched = mine(watched_with_cookies.iter().map(|(k, _)| *k).collect());
    let tracked = mine(
        map_entries::<u64>(pid, "TRACKED")
            .into_iter()
            .map(|(_, v)| v)
            .chain(
                held_slots::<2>(pid, "TRACKED_SLOTS")
                    .into_iter()
                    .map(|[_, key]| key),
            )
            .collect(),
    );
    let key_of = mine(
        map_entries::<u64>(pid, "WATCH_KEY_OF")
            .into_iter()
            .map(|(_, v)| v)
            .collect(),
    );
    // SAFETY: our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = tracer.wait();
    drop(kept);
    assert_nothing_attached("after sockscope");
    [want, watched, tracked, key_of]
}

/// Every socket `watch` traces is watched by the I/O hooks from its creation; its
/// release must take it out of their maps (the kernel does it, not user space), or a
/// process that churns sockets would fill them: after thousands of sockets made and
/// closed, the maps hold exactly the ones still open, under their fds. `watch` keeps
/// where each is in its `TRACKED` entry, the daemon (which has none) in `WATCH_KEY_OF`.
#[test]
fn released_sockets_leave_the_io_hooks_maps() {
    if !require_root("released_sockets_leave_the_io_hooks_maps") {
        return;
    }
    let me = std::process::id().to_string();
    // With the default slots, and with one slot (all but one socket go to the hash).
    for slots in [None, Some("1")] {
        let [want, watched, tracked, key_of] = io_maps_after_churn(
            &["watch", "--pid", &me, "--grace", "1s", "-f", "json"],
            "watching pid",
            slots,
        );
        assert_eq!(
            watched, want,
            "watch (slots {slots:?}): exactly our open sockets are watched, by fd"
        );
        assert_eq!(
            tracked, want,
            "watch (slots {slots:?}): and TRACKED knows where each is"
        );
        assert!(
            key_of.is_empty(),
            "watch: nothing in WATCH_KEY_OF ({} entries)",
            key_of.len()
        );
    }

    let [want, watched, _, key_of] =
        io_maps_after_churn(&["daemon", "--output", "/dev/null"], "daemon judging", None);
    assert_eq!(
        watched, want,
        "daemon: exactly our open sockets are watched, by fd"
    );
    assert_eq!(
        key_of.len(),
        want.len(),
        "daemon: WATCH_KEY_OF knows where each is, released ones are gone"
    );
    assert_eq!(key_of, want);
}
