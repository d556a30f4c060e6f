//! What `trace` prints: one [`Record`] per line, as JSON Lines (stable field names and
//! a `schema` version) or as aligned text for people.
use std::{
    borrow::Cow,
    fs::File,
    io::{self, Write},
    net::IpAddr,
    path::Path,
};

use crate::{
    clock::{HumanNs, Rfc3339Cache, WallTime, human_ns},
    error::UsageError,
    events::Family,
    sockets::Origin,
    symbolize::{Frame, Stack},
};

/// Version of the JSON Lines schema; bump on incompatible changes.
pub const SCHEMA: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stacks {
    pub user: Stack,
    pub kernel: Stack,
}

#[derive(Debug, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Record<'a> {
    /// A UDP socket that was open when tracing started.
    Existing {
        cookie: u64,
        family: Family,
        local_addr: IpAddr,
        local_port: u16,
        /// Holding process and fd, when a process holds it.
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        fd: Option<i32>,
    },
    Create {
        time: WallTime,
        mono_ns: u64,
        pid: u32,
        tid: u32,
        /// Borrowed from the kernel record when it is UTF-8.
        comm: Cow<'a, str>,
        fd: i32,
        cookie: u64,
        family: Family,
        #[serde(skip_serializing_if = "Option::is_none")]
        pc_id: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stacks: Option<Stacks>,
    },
    Bind {
        time: WallTime,
        mono_ns: u64,
        pid: u32,
        tid: u32,
        cookie: u64,
        family: Family,
        local_addr: IpAddr,
        local_port: u16,
    },
    Release {
        time: WallTime,
        mono_ns: u64,
        /// The releasing task.
        pid: u32,
        tid: u32,
        /// Borrowed from the kernel record when it is UTF-8.
        comm: Cow<'a, str>,
        cookie: u64,
        family: Family,
        /// How the socket was known: traced creation or present at start.
        origin: Option<Origin>,
        #[serde(skip_serializing_if = "Option::is_none")]
        fd: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        local_addr: Option<IpAddr>,
        #[serde(skip_serializing_if = "Option::is_none")]
        local_port: Option<u16>,
        /// Nanoseconds since creation, when the creation was traced.
        #[serde(skip_serializing_if = "Option::is_none")]
        age_ns: Option<u64>,
        /// Closed by the kernel because the process was exiting, not by the application.
        closed_by_exit: bool,
        /// The releasing stacks (`--stacks`, with a backend that takes them).
        #[serde(skip_serializing_if = "Option::is_none")]
        stacks: Option<Stacks>,
    },
    /// A USDT marker fired.
    Marker {
        time: WallTime,
        mono_ns: u64,
        pid: u32,
        tid: u32,
        provider: String,
        name: String,
        args: Vec<serde_json::Value>,
    },
    /// A traced process is exiting: its sockets still open now are closed by the exit.
    Exit {
        time: WallTime,
        mono_ns: u64,
        pid: u32,
        open_sockets: usize,
    },
    /// The kernel could not hand over `count` records (ring buffer full).
    Lost { count: u64, total: u64 },
    Summary {
        events: u64,
        lost: u64,
        open_sockets: usize,
        duration_ms: u64,
    },
}

#[derive(serde::Serialize)]
struct Line<'a> {
    schema: u32,
    #[serde(flatten)]
    record: &'a Record<'a>,
}

/// Where `trace` prints. Lines are built in a buffer of its own and written in large
/// pieces; the records that come by the thousand (create, bind, release, exit) are
/// printed as JSON without serde (the same bytes: `tests` compare both ways).
pub struct Sink {
    out: Box<dyn Write + Send>,
    format: Format,
    buf: Vec<u8>,
    times: Rfc3339Cache,
}

/// Buffered bytes written out at once.
const WRITE_AT: usize = 64 * 1024;

impl Sink {
    /// Opens `path` (created or truncated) or stdout; fails early for an unwritable path.
    pub fn open(path: Option<&Path>, format: Format) -> Result<Self, UsageError> {
        let out: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(File::create(p).map_err(|source| UsageError::Output {
                path: p.to_owned(),
                source,
            })?),
            None => Box::new(io::stdout()),
        };
        Ok(Self {
            out,
            format,
            buf: Vec::with_capacity(2 * WRITE_AT),
            times: Rfc3339Cache::default(),
        })
    }

    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        match self.format {
            Format::Json => write_json(&mut self.buf, &mut self.times, record)?,
            Format::Text => write_text(&mut self.buf, &mut self.times, record)?,
        }
        if self.buf.len() >= WRITE_AT {
            self.write_out()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.out.flush()
    }

    fn write_out(&mut self) -> io::Result<()> {
        // Cleared even on error: what could not be written is not tried again.
        let r = self.out.write_all(&self.buf);
        self.buf.clear();
        r
    }
}

impl Drop for Sink {
    /// What was printed before an early return still reaches the output, as a
    /// `BufWriter` would do; errors have nobody to go to here.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// `,"name":` (every field printed here follows another).
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}

/// `,"event":"name"`.
macro_rules! event {
    ($name:literal) => {
        concat!(",\"event\":\"", $name, "\"")
    };
}

/// One JSON line, as serde prints [`Line`].
fn write_json(buf: &mut Vec<u8>, times: &mut Rfc3339Cache, record: &Record) -> io::Result<()> {
    let mut j = Json(buf, times);
    match record {
        Record::Create {
            time,
            mono_ns,
            pid,
            tid,
            comm,
            fd,
            cookie,
            family,
            pc_id,
            stacks,
        } => {
            j.head(event!("create"), *time, *mono_ns, *pid, *tid);
            j.str_field(key!("comm"), comm);
            j.int_field(key!("fd"), *fd);
            j.int_field(key!("cookie"), *cookie);
            j.family(*family);
            if let Some(pc) = pc_id {
                j.int_field(key!("pc_id"), *pc);
            }
            j.stacks(stacks.as_ref())?;
        }
        Record::Bind {
            time,
            mono_ns,
            pid,
            tid,
            cookie,
            family,
            local_addr,
            local_port,
        } => {
            j.head(event!("bind"), *time, *mono_ns, *pid, *tid);
            j.int_field(key!("cookie"), *cookie);
            j.family(*family);
            j.addr_field(key!("local_addr"), *local_addr);
            j.int_field(key!("local_port"), *local_port);
            j.0.push(b'}');
        }
        Record::Release {
            time,
            mono_ns,
            pid,
            tid,
            comm,
            cookie,
            family,
            origin,
            fd,
            local_addr,
            local_port,
            age_ns,
            closed_by_exit,
            stacks,
        } => {
            j.head(event!("release"), *time, *mono_ns, *pid, *tid);
            j.str_field(key!("comm"), comm);
            j.int_field(key!("cookie"), *cookie);
            j.family(*family);
            j.key(match origin {
                Some(Origin::Traced) => concat!(key!("origin"), "\"traced\""),
                Some(Origin::Preexisting) => concat!(key!("origin"), "\"preexisting\""),
                None => concat!(key!("origin"), "null"),
            });
            if let Some(fd) = fd {
                j.int_field(key!("fd"), *fd);
            }
            if let Some(a) = local_addr {
                j.addr_field(key!("local_addr"), *a);
            }
            if let Some(p) = local_port {
                j.int_field(key!("local_port"), *p);
            }
            if let Some(a) = age_ns {
                j.int_field(key!("age_ns"), *a);
            }
            j.key(if *closed_by_exit {
                concat!(key!("closed_by_exit"), "true")
            } else {
                concat!(key!("closed_by_exit"), "false")
            });
            j.stacks(stacks.as_ref())?;
        }
        Record::Exit {
            time,
            mono_ns,
            pid,
            open_sockets,
        } => {
            j.0.extend_from_slice(b"{\"schema\":");
            j.int(SCHEMA);
            j.key(event!("exit"));
            j.time(*time);
            j.int_field(key!("mono_ns"), *mono_ns);
            j.int_field(key!("pid"), *pid);
            j.int_field(key!("open_sockets"), *open_sockets);
            j.0.push(b'}');
        }
        // Rare: serde's own way.
        Record::Existing { .. }
        | Record::Marker { .. }
        | Record::Lost { .. }
        | Record::Summary { .. } => serde_json::to_writer(
            &mut *j.0,
            &Line {
                schema: SCHEMA,
                record,
            },
        )?,
    }
    j.0.push(b'\n');
    Ok(())
}

/// Prints JSON into a buffer, field by field, as serde_json's compact form does.
struct Json<'a>(&'a mut Vec<u8>, &'a mut Rfc3339Cache);

/// An IPv4 address as `Display` prints it, without going through `fmt`.
fn push_ipv4(out: &mut Vec<u8>, addr: std::net::Ipv4Addr) {
    let mut digits = itoa::Buffer::new();
    for (i, octet) in addr.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend_from_slice(digits.format(octet).as_bytes());
    }
}

impl Json<'_> {
    fn int(&mut self, v: impl itoa::Integer) {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    /// A [`key!`].
    fn key(&mut self, key: &'static str) {
        self.0.extend_from_slice(key.as_bytes());
    }

    fn int_field(&mut self, key: &'static str, v: impl itoa::Integer) {
        self.key(key);
        self.int(v);
    }

    fn str_field(&mut self, key: &'static str, v: &str) {
        self.key(key);
        json_str(self.0, v);
    }

    fn time(&mut self, t: WallTime) {
        self.key(concat!(key!("time"), "\""));
        self.0.extend_from_slice(self.1.format(t));
        self.0.push(b'"');
    }

    /// `{"schema":1,"event":EVENT,"time":...,"mono_ns":...,"pid":...,"tid":...`, where
    /// `event` is an [`event!`].
    fn head(&mut self, event: &'static str, time: WallTime, mono_ns: u64, pid: u32, tid: u32) {
        self.0.extend_from_slice(b"{\"schema\":");
        self.int(SCHEMA);
        self.0.extend_from_slice(event.as_bytes());
        self.time(time);
        self.int_field(key!("mono_ns"), mono_ns);
        self.int_field(key!("pid"), pid);
        self.int_field(key!("tid"), tid);
    }

    fn family(&mut self, f: Family) {
        self.key(match f {
            Family::Inet => concat!(key!("family"), "\"inet\""),
            Family::Inet6 => concat!(key!("family"), "\"inet6\""),
            Family::Other => concat!(key!("family"), "\"unknown\""),
        });
    }

    fn addr_field(&mut self, key: &'static str, addr: IpAddr) {
        self.key(key);
        self.0.push(b'"');
        match addr {
            IpAddr::V4(a) => push_ipv4(self.0, a),
            // Display is what serde prints; a v6 address needs no escaping.
            IpAddr::V6(a) => {
                let _ = write!(self.0, "{a}");
            }
        }
        self.0.push(b'"');
    }

    /// The optional `stacks` field, then the closing brace.
    fn stacks(&mut self, stacks: Option<&Stacks>) -> io::Result<()> {
        if let Some(s) = stacks {
            self.key(key!("stacks"));
            serde_json::to_writer(&mut *self.0, s)?;
        }
        self.0.push(b'}');
        Ok(())
    }
}

/// A JSON string, escaped as serde_json escapes it: `"` and `\\`, the control
/// characters (short forms where JSON has them, else `\u00XX`), nothing else.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.push(b'\\');
        buf.push(short);
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            buf.extend_from_slice(b"00");
            buf.push(HEX[usize::from(b >> 4)]);
            buf.push(HEX[usize::from(b & 0xf)]);
        }
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

fn family_str(f: Family) -> &'static str {
    match f {
        Family::Inet => "ipv4",
        Family::Inet6 => "ipv6",
        Family::Other => "?",
    }
}

fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V6(a) => format!("[{a}]:{port}"),
        IpAddr::V4(a) => format!("{a}:{port}"),
    }
}

/// Clock part of an RFC 3339 time (`2026-11-25T02:26:53.123456Z` → `02:26:53.123456`).
struct Hms(WallTime);

impl std::fmt::Display for Hms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.rfc3339();
        f.write_str(std::str::from_utf8(&text[11..26]).map_err(|_| std::fmt::Error)?)
    }
}

fn hms(time: &WallTime) -> Hms {
    Hms(*time)
}

pub fn write_frames(out: &mut dyn Write, label: &str, frames: &[Frame]) -> io::Result<()> {
    writeln!(out, "    {label} stack:")?;
    if frames.is_empty() {
        writeln!(out, "      (not available)")?;
    }
    for f in frames {
        for (i, inl) in f.inlined.iter().enumerate() {
            match f.inlined_at.get(i).map(|a| (&a.file, a.line)) {
                Some((Some(file), Some(line))) => writeln!(
                    out,
                    "      {:#018x} {inl} (inlined) at {file}:{line}",
                    f.addr
                )?,
                _ => writeln!(out, "      {:#018x} {inl} (inlined)", f.addr)?,
            }
        }
        let name = f.symbol.as_deref().unwrap_or("[unknown]");
        match (&f.file, f.line) {
            (Some(file), Some(line)) => {
                writeln!(out, "      {:#018x} {name} at {file}:{line}", f.addr)?
            }
            _ => writeln!(out, "      {:#018x} {name}", f.addr)?,
        }
    }
    Ok(())
}

fn write_stacks(out: &mut dyn Write, stacks: Option<&Stacks>) -> io::Result<()> {
    if let Some(s) = stacks {
        write_frames(out, "user", &s.user)?;
        write_frames(out, "kernel", &s.kernel)?;
    }
    Ok(())
}

/// One record as text: the records that come by the thousand written straight into
/// the buffer, the others (and the tests' reference) by [`write_text_fmt`].
fn write_text(buf: &mut Vec<u8>, times: &mut Rfc3339Cache, record: &Record) -> io::Result<()> {
    let mut t = TextLine(buf);
    match record {
        Record::Create {
            time,
            pid,
            tid,
            comm,
            fd,
            cookie,
            family,
            pc_id,
            stacks,
            ..
        } => {
            t.head(
                times,
                *time,
                "CREATE   cookie=",
                *cookie,
                *family,
                *pid,
                *tid,
            );
            t.put(" comm=");
            t.put(comm);
            t.put(" fd=");
            t.int(*fd);
            if let Some(pc) = pc_id {
                t.put(" pc_id=");
                t.int(*pc);
            }
            t.0.push(b'\n');
            write_stacks(t.0, stacks.as_ref())
        }
        Record::Bind {
            time,
            pid,
            tid,
            cookie,
            family,
            local_addr,
            local_port,
            ..
        } => {
            t.head(
                times,
                *time,
                "BIND     cookie=",
                *cookie,
                *family,
                *pid,
                *tid,
            );
            t.put(" local=");
            t.endpoint(*local_addr, *local_port);
            t.0.push(b'\n');
            Ok(())
        }
        Record::Release {
            time,
            pid,
            tid,
            comm,
            cookie,
            family,
            fd,
            local_addr,
            local_port,
            age_ns,
            closed_by_exit,
            stacks,
            ..
        } => {
            t.head(
                times,
                *time,
                "RELEASE  cookie=",
                *cookie,
                *family,
                *pid,
                *tid,
            );
            t.put(" comm=");
            t.put(comm);
            if let Some(fd) = fd {
                t.put(" fd=");
                t.int(*fd);
            }
            if let (Some(a), Some(p)) = (local_addr, local_port) {
                t.put(" local=");
                t.endpoint(*a, *p);
            }
            match age_ns {
                Some(a) => write!(t.0, " age={}", HumanNs(*a))?,
                None => t.put(" age=unknown"),
            }
            if *closed_by_exit {
                t.put(" (closed by the process exit)");
            }
            t.0.push(b'\n');
            write_stacks(t.0, stacks.as_ref())
        }
        Record::Exit {
            time,
            pid,
            open_sockets,
            ..
        } => {
            t.0.extend_from_slice(&times.format(*time)[11..26]);
            t.put(" EXIT     pid=");
            t.int(*pid);
            t.put(": ");
            t.int(*open_sockets);
            t.put(" UDP sockets still open are closed by the exit\n");
            Ok(())
        }
        Record::Existing { .. }
        | Record::Marker { .. }
        | Record::Lost { .. }
        | Record::Summary { .. } => write_text_fmt(t.0, record),
    }
}

/// Prints a text line into a buffer.
struct TextLine<'a>(&'a mut Vec<u8>);

impl TextLine<'_> {
    fn put(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, v: impl itoa::Integer) {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    /// `HH:MM:SS.micros KIND...cookie=C FAMILY pid=P tid=T`, where `kind` ends with
    /// `cookie=`.
    #[allow(clippy::too_many_arguments)]
    fn head(
        &mut self,
        times: &mut Rfc3339Cache,
        time: WallTime,
        kind: &str,
        cookie: u64,
        family: Family,
        pid: u32,
        tid: u32,
    ) {
        self.0.extend_from_slice(&times.format(time)[11..26]);
        self.0.push(b' ');
        self.put(kind);
        self.int(cookie);
        self.0.push(b' ');
        self.put(family_str(family));
        self.put(" pid=");
        self.int(pid);
        self.put(" tid=");
        self.int(tid);
    }

    /// As [`endpoint`].
    fn endpoint(&mut self, addr: IpAddr, port: u16) {
        match addr {
            IpAddr::V4(a) => push_ipv4(self.0, a),
            IpAddr::V6(a) => {
                let _ = write!(self.0, "[{a}]");
            }
        }
        self.0.push(b':');
        self.int(port);
    }
}

/// One record as text through `fmt`: every record prints this way (the reference the
/// fast path of [`write_text`] is tested against); used for the rare ones.
fn write_text_fmt(out: &mut dyn Write, record: &Record) -> io::Result<()> {
    match record {
        Record::Existing {
            cookie,
            family,
            local_addr,
            local_port,
            pid,
            fd,
        } => {
            let holder = match (pid, fd) {
                (Some(p), Some(fd)) => format!("pid={p} fd={fd}"),
                _ => "no process holds it".into(),
            };
            writeln!(
                out,
                "{:<15} EXISTING cookie={cookie} {} {} {holder}",
                "(at start)",
                family_str(*family),
                endpoint(*local_addr, *local_port)
            )
        }
        Record::Create {
            time,
            pid,
            tid,
            comm,
            fd,
            cookie,
            family,
            pc_id,
            stacks,
            ..
        } => {
            let pc = pc_id.map(|p| format!(" pc_id={p}")).unwrap_or_default();
            writeln!(
                out,
                "{} CREATE   cookie={cookie} {} pid={pid} tid={tid} comm={comm} fd={fd}{pc}",
                hms(time),
                family_str(*family)
            )?;
            write_stacks(out, stacks.as_ref())
        }
        Record::Bind {
            time,
            pid,
            tid,
            cookie,
            family,
            local_addr,
            local_port,
            ..
        } => writeln!(
            out,
            "{} BIND     cookie={cookie} {} pid={pid} tid={tid} local={}",
            hms(time),
            family_str(*family),
            endpoint(*local_addr, *local_port)
        ),
        Record::Release {
            time,
            pid,
            tid,
            comm,
            cookie,
            family,
            fd,
            local_addr,
            local_port,
            age_ns,
            closed_by_exit,
            stacks,
            ..
        } => {
            let fd = fd.map(|f| format!(" fd={f}")).unwrap_or_default();
            let by_exit = if *closed_by_exit {
                " (closed by the process exit)"
            } else {
                ""
            };
            let local = match (local_addr, local_port) {
                (Some(a), Some(p)) => format!(" local={}", endpoint(*a, *p)),
                _ => String::new(),
            };
            let age = age_ns.map_or(" age=unknown".into(), |a| format!(" age={}", human_ns(a)));
            writeln!(
                out,
                "{} RELEASE  cookie={cookie} {} pid={pid} tid={tid} comm={comm}{fd}{local}{age}{by_exit}",
                hms(time),
                family_str(*family)
            )?;
            write_stacks(out, stacks.as_ref())
        }
        Record::Marker {
            time,
            pid,
            tid,
            provider,
            name,
            args,
            ..
        } => {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            writeln!(
                out,
                "{} MARKER   {provider}:{name}({}) pid={pid} tid={tid}",
                hms(time),
                args.join(", ")
            )
        }
        Record::Exit {
            time,
            pid,
            open_sockets,
            ..
        } => {
            writeln!(
                out,
                "{} EXIT     pid={pid}: {open_sockets} UDP sockets still open are closed by the exit",
                hms(time)
            )
        }
        Record::Lost { count, total } => {
            writeln!(
                out,
                "LOST {count} events (ring buffer full; {total} in total): the trace is incomplete"
            )
        }
        Record::Summary {
            events,
            lost,
            open_sockets,
            duration_ms,
        } => writeln!(
            out,
            "summary: {events} events, {lost} lost, {open_sockets} UDP sockets still open, {}",
            human_ns(duration_ms * 1_000_000)
        ),
    }
}

#[cfg(test)]
mod golden {
    //! The bytes `trace` prints for a fixed set of records, in both formats, pinned by
    //! files written before the JSON and time formatting were rewritten for speed.
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::symbolize::SourceLine;

    /// 2025-11-25T02:26:53.123456Z plus `us` microseconds.
    fn time(us: u64) -> WallTime {
        crate::clock::Clock::from_wall_at_zero(std::time::UNIX_EPOCH)
            .wall_time((1_764_037_613_123_456 + us) * 1_000)
    }

    fn stacks() -> Stacks {
        let frame = |addr, symbol: Option<&str>, file: Option<&str>, line| Frame {
            addr,
            symbol: symbol.map(str::to_owned),
            inlined: vec![],
            inlined_at: vec![],
            module: Some("/usr/bin/app".into()),
            file: file.map(str::to_owned),
            line,
        };
        let mut inlined = frame(
            0x5555_0000_1234,
            Some("app::open"),
            Some("src/net.rs"),
            Some(42),
        );
        inlined.inlined = vec!["app::helper".into(), "std::net::bind".into()];
        inlined.inlined_at = vec![
            SourceLine {
                file: Some("src/helper.rs".into()),
                line: Some(7),
            },
            SourceLine {
                file: None,
                line: None,
            },
        ];
        Stacks {
            user: vec![inlined, frame(0x7f00_0000_0001, None, None, None)].into(),
            kernel: vec![frame(
                0xffff_ffff_8100_0000,
                Some("__sys_socket"),
                None,
                None,
            )]
            .into(),
        }
    }

    fn records() -> Vec<Record<'static>> {
        let v6: IpAddr = "fe80::1:2"
            .parse::<Ipv6Addr>()
            .unwrap_or(Ipv6Addr::LOCALHOST)
            .into();
        let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
        vec![
            Record::Existing {
                cookie: 1,
                family: Family::Inet,
                local_addr: Ipv4Addr::UNSPECIFIED.into(),
                local_port: 0,
                pid: None,
                fd: None,
            },
            Record::Existing {
                cookie: u64::MAX,
                family: Family::Inet6,
                local_addr: v6,
                local_port: 5353,
                pid: Some(4_000_000),
                fd: Some(1023),
            },
            Record::Create {
                time: time(0),
                mono_ns: 25_272_120_383_660,
                pid: 11975,
                tid: 12001,
                comm: "udp_churn".into(),
                fd: 3,
                cookie: 24_630_101,
                family: Family::Inet,
                pc_id: None,
                stacks: None,
            },
            Record::Create {
                // Every character JSON escapes, and some it does not.
                time: time(999_999),
                mono_ns: 0,
                pid: 0,
                tid: u32::MAX,
                comm: "a\"b\\c\n\t\r\u{8}\u{c}\u{1}\u{1f}\u{7f}é\u{fffd}/".into(),
                fd: -1,
                cookie: 0,
                family: Family::Other,
                pc_id: Some(u64::MAX),
                stacks: Some(stacks()),
            },
            Record::Bind {
                time: time(1),
                mono_ns: u64::MAX,
                pid: 1,
                tid: 1,
                cookie: 24_630_101,
                family: Family::Inet,
                local_addr: lo,
                local_port: 65535,
            },
            Record::Bind {
                time: time(86_400_000_000 * 400),
                mono_ns: 10,
                pid: 2,
                tid: 3,
                cookie: 4,
                family: Family::Inet6,
                local_addr: v6,
                local_port: 0,
            },
            Record::Release {
                time: time(6),
                mono_ns: 25_272_120_469_058,
                pid: 11975,
                tid: 12001,
                comm: "udp_churn".into(),
                cookie: 24_630_101,
                family: Family::Inet,
                origin: Some(Origin::Traced),
                fd: Some(3),
                local_addr: Some(lo),
                local_port: Some(52627),
                age_ns: Some(85_398),
                closed_by_exit: false,
                stacks: None,
            },
            Record::Release {
                time: time(1_000_000),
                mono_ns: 5,
                pid: 7,
                tid: 8,
                comm: "".into(),
                cookie: 9,
                family: Family::Inet6,
                origin: Some(Origin::Preexisting),
                fd: None,
                local_addr: None,
                local_port: None,
                age_ns: None,
                closed_by_exit: true,
                stacks: Some(Stacks::default()),
            },
            Record::Release {
                time: time(2_000_000),
                mono_ns: 5,
                pid: 7,
                tid: 8,
                comm: "x".into(),
                cookie: 9,
                family: Family::Inet,
                origin: None,
                fd: Some(0),
                local_addr: Some(v6),
                local_port: Some(1),
                age_ns: Some(61_000_000_000),
                closed_by_exit: false,
                stacks: Some(stacks()),
            },
            Record::Marker {
                time: time(3),
                mono_ns: 6,
                pid: 7,
                tid: 8,
                provider: "webrtc".into(),
                name: "pc_open".into(),
                args: vec![1u64.into(), (-2i64).into()],
            },
            Record::Exit {
                time: time(4),
                mono_ns: 9,
                pid: 11975,
                open_sockets: 2,
            },
            Record::Lost {
                count: 17,
                total: 1700,
            },
            Record::Summary {
                events: 120_001,
                lost: 0,
                open_sockets: 0,
                duration_ms: 12_345,
            },
        ]
    }

    fn printed(format: Format) -> String {
        let path = std::env::temp_dir().join(format!(
            "sockscope-golden-{}-{format:?}",
            std::process::id()
        ));
        let mut sink = Sink::open(Some(&path), format).expect("temp file");
        for r in records() {
            sink.write(&r).expect("write");
        }
        sink.flush().expect("flush");
        drop(sink);
        let text = std::fs::read_to_string(&path).expect("read back");
        let _ = std::fs::remove_file(&path);
        text
    }

    #[test]
    fn json_lines_are_unchanged() {
        assert_eq!(
            printed(Format::Json),
            include_str!("../testdata/trace_golden.jsonl")
        );
    }

    /// serde's bytes for one record (what every record printed before).
    fn serde_line(record: &Record) -> String {
        let mut line = serde_json::to_string(&Line {
            schema: SCHEMA,
            record,
        })
        .expect("serializable");
        line.push('\n');
        line
    }

    fn fast_line(record: &Record) -> String {
        let mut buf = Vec::new();
        write_json(&mut buf, &mut Rfc3339Cache::default(), record).expect("write");
        String::from_utf8(buf).expect("UTF-8")
    }

    fn fast_text(record: &Record) -> String {
        let mut buf = Vec::new();
        write_text(&mut buf, &mut Rfc3339Cache::default(), record).expect("write");
        String::from_utf8(buf).expect("UTF-8")
    }

    fn fmt_text(record: &Record) -> String {
        let mut buf = Vec::new();
        write_text_fmt(&mut buf, record).expect("write");
        String::from_utf8(buf).expect("UTF-8")
    }

    #[test]
    fn fast_json_is_serde_json() {
        for r in records() {
            assert_eq!(fast_line(&r), serde_line(&r));
        }
    }

    #[test]
    fn fast_text_is_fmt_text() {
        for r in records() {
            assert_eq!(fast_text(&r), fmt_text(&r));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_comm_and_values_print_as_serde_does(
            comm in ".{0,20}",
            raw in proptest::collection::vec(0u8..0x80, 0..16),
            ints in (proptest::prelude::any::<u64>(), proptest::prelude::any::<u32>(), proptest::prelude::any::<i32>()),
            v4 in proptest::prelude::any::<[u8; 4]>(),
            v6 in proptest::prelude::any::<[u16; 8]>(),
            flags in proptest::prelude::any::<(bool, bool, bool, u8)>(),
        ) {
            let (n, small, fd) = ints;
            let (some, exit, v4_addr, origin) = flags;
            let addr: IpAddr = if v4_addr { Ipv4Addr::from(v4).into() } else { Ipv6Addr::from(v6).into() };
            let control = String::from_utf8_lossy(&raw).into_owned();
            for comm in [comm.clone(), control] {
                let records = [
                    Record::Create {
                        time: time(n % 10_000_000_000_000),
                        mono_ns: n,
                        pid: small,
                        tid: small / 2,
                        comm: comm.as_str().into(),
                        fd,
                        cookie: n / 3,
                        family: if some { Family::Inet6 } else { Family::Inet },
                        pc_id: some.then_some(n),
                        stacks: None,
                    },
                    Record::Bind {
                        time: time(n % 1_000_000),
                        mono_ns: n,
                        pid: small,
                        tid: small,
                        cookie: n,
                        family: Family::Other,
                        local_addr: addr,
                        local_port: small as u16,
                    },
                    Record::Release {
                        time: time(small.into()),
                        mono_ns: n,
                        pid: small,
                        tid: 0,
                        comm: comm.as_str().into(),
                        cookie: n,
                        family: Family::Inet,
                        origin: [None, Some(Origin::Traced), Some(Origin::Preexisting)][usize::from(origin % 3)],
                        fd: some.then_some(fd),
                        local_addr: (!some).then_some(addr),
                        local_port: (exit || !some).then_some(small as u16),
                        age_ns: (!some).then_some(n >> (small % 64)),
                        closed_by_exit: exit,
                        stacks: exit.then(stacks),
                    },
                    Record::Exit {
                        time: time(n % 86_400_000_000),
                        mono_ns: n,
                        pid: small,
                        open_sockets: small as usize,
                    },
                ];
                for r in &records {
                    proptest::prop_assert_eq!(fast_line(r), serde_line(r));
                    proptest::prop_assert_eq!(fast_text(r), fmt_text(r));
                }
            }
        }
    }

    #[test]
    fn text_is_unchanged() {
        assert_eq!(
            printed(Format::Text),
            include_str!("../testdata/trace_golden.txt")
        );
    }
}
