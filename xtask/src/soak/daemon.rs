//! The daemon under soak: started as a user would (`sockscope daemon --output F
//! --metrics ADDR`), watched through its metrics page and /proc, stopped with SIGTERM
//! (or killed), and what it held in the kernel checked after.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A running `sockscope daemon`.
pub struct Daemon {
    child: Option<Child>,
    pub pid: u32,
    pub metrics: SocketAddr,
    pub started: Instant,
    /// Its stderr lines so far (also written to a file).
    stderr: Arc<Mutex<Vec<String>>>,
}

/// A free loopback port.
fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a free port")?;
    l.local_addr().context("cannot read a bound address")
}

impl Daemon {
    /// Starts it and waits until it says it is judging (hooks attached).
    pub fn start(bin: &Path, output: &Path, stderr_file: &Path) -> anyhow::Result<Self> {
        let metrics = free_addr()?;
        let mut child = Command::new(bin)
            .args([
                "daemon",
                "--grace",
                "300ms",
                "--metrics",
                &metrics.to_string(),
            ])
            .arg("--output")
            .arg(output)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {} daemon", bin.display()))?;
        let started = Instant::now();
        let pid = child.id();
        let pipe = child.stderr.take().context("no stderr pipe")?;
        let mut file = std::fs::File::create(stderr_file)
            .with_context(|| format!("cannot create {}", stderr_file.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                let _ = tx.send(line.clone());
                if let Ok(mut v) = kept.lock() {
                    v.push(line);
                }
            }
        });
        let mut d = Self {
            child: Some(child),
            pid,
            metrics,
            started,
            stderr: lines,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains("daemon judging") => break,
                Ok(_) => {}
                Err(_) => {
                    let status = d.kill();
                    bail!(
                        "the daemon did not start judging within 60 s ({status:?}); its stderr:\n{}",
                        d.stderr_lines().join("\n")
                    );
                }
            }
        }
        // The metrics page is first rebuilt a second after the start.
        std::thread::sleep(Duration::from_millis(1100));
        Ok(d)
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// SIGTERM, then its exit status (SIGKILL after `patience`).
    pub fn terminate(&mut self, patience: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        let mut child = self
            .child
            .take()
            .context("the daemon was already stopped")?;
        let t = Instant::now();
        // SAFETY: our own child, not reaped yet.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        loop {
            if let Some(s) = child.try_wait().context("cannot wait for the daemon")? {
                // Its last stderr lines come through the pipe just before it exits.
                std::thread::sleep(Duration::from_millis(100));
                return Ok((s, t.elapsed()));
            }
            if t.elapsed() > patience {
                let _ = child.kill();
                let s = child.wait().context("cannot wait for the daemon")?;
                bail!("the daemon did not exit within {patience:?} of SIGTERM (killed: {s})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// The metrics page as (name, labels) → value.
    pub fn scrape(&self) -> anyhow::Result<Metrics> {
        scrape(self.metrics)
    }

    /// Resident memory now, from /proc.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("cannot read the daemon's /proc status")?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS in the daemon's /proc status")?;
        Ok(kb * 1024)
    }

    /// CPU time it used so far (user + system), from /proc.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .context("cannot read the daemon's /proc stat")?;
        // The fields after the command name (which may hold spaces): state, ppid, ...
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("unexpected /proc stat")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime, fields 14 and 15 of the line: the 12th and 13th here.
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        let ticks = tick(11)
            .zip(tick(12))
            .map(|(u, s)| u + s)
            .context("unexpected /proc stat")?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(ticks / hz.max(1.0))
    }

    /// The BPF programs and links it holds, from its fds.
    pub fn bpf_objects(&self) -> anyhow::Result<BpfObjects> {
        BpfObjects::of(self.pid)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: our own child, not reaped yet.
            unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Samples of one scrape, summed over labels, plus the labelled ones.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    /// The sum of every sample of `name`.
    pub fn total(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, v)| v)
            .sum()
    }
}

fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    let mut map = BTreeMap::new();
    // Label values here never hold `",` (pids, comms without quotes, ids).
    for pair in labels.split("\",").filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once("=\"")?;
        map.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
    }
    Some((name.to_owned(), map, value))
}

pub fn scrape(addr: SocketAddr) -> anyhow::Result<Metrics> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot connect to the metrics endpoint {addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(conn, "GET /metrics HTTP/1.1\r\nHost: soak\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .context("cannot read the metrics page")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("the metrics endpoint gave no HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("the metrics endpoint answered {head}");
    }
    Ok(Metrics {
        samples: body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(parse_sample)
            .collect(),
    })
}

/// BPF programs and links by id.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BpfObjects {
    pub programs: BTreeSet<u32>,
    pub links: BTreeSet<u32>,
    #[serde(skip)]
    pub maps: BTreeSet<u32>,
}

impl BpfObjects {
    /// What process `pid` holds: each BPF fd's fdinfo names its program (`prog_id`)
    /// or link (`link_id`, and its program).
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let dir = PathBuf::from(format!("/proc/{pid}/fdinfo"));
        let mut out = Self::default();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let Ok(entry) = entry else { continue };
            let Ok(info) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let field = |k: &str| -> Option<u32> {
                info.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().parse().ok())
            };
            if let Some(link) = field("link_id:") {
                out.links.insert(link);
            }
            if let Some(prog) = field("prog_id:") {
                out.programs.insert(prog);
            }
            if let Some(map) = field("map_id:") {
                out.maps.insert(map);
            }
        }
        Ok(out)
    }

    /// Those of `self` the kernel still has.
    pub fn still_loaded(&self) -> Self {
        let programs = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .filter(|id| self.programs.contains(id))
            .collect();
        let links = aya::programs::loaded_links()
            .filter_map(Result::ok)
            .map(|l| l.id())
            .filter(|id| self.links.contains(id))
            .collect();
        Self {
            programs,
            links,
            maps: BTreeSet::new(),
        }
    }

    /// Entries used in its BPF stack map(s) and their capacity: stack ids are never
    /// deleted, so a map that fills makes new stacks fail (hash collisions).
    pub fn stack_map_fill(&self) -> Option<(u64, u64)> {
        use aya::maps::{Map, MapData, MapInfo, MapType, StackTraceMap};
        let mut used = 0;
        let mut max = 0;
        for id in &self.maps {
            let Ok(info) = MapInfo::from_id(*id) else {
                continue;
            };
            if !matches!(info.map_type(), Ok(MapType::StackTrace)) {
                continue;
            }
            let Ok(map) = MapData::from_id(*id).and_then(Map::from_map_data) else {
                continue;
            };
            let Ok(stacks) = StackTraceMap::try_from(map) else {
                continue;
            };
            used += stacks.stack_ids().filter(Result::is_ok).count() as u64;
            max += u64::from(info.max_entries());
        }
        (max > 0).then_some((used, max))
    }

    pub fn is_empty(&self) -> bool {
        self.programs.is_empty() && self.links.is_empty()
    }

    /// Waits up to `patience` (the kernel frees them asynchronously) until none of
    /// `self` is loaded; what is left then.
    pub fn wait_gone(&self, patience: Duration) -> Self {
        let t = Instant::now();
        loop {
            let left = self.still_loaded();
            if left.is_empty() || t.elapsed() > patience {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Probe events a process of pid `pid` created through tracefs (aya names them
/// `aya_<pid>_...`; they outlive a killed process, unlike perf-PMU probes).
pub fn tracefs_probes_of(pid: u32) -> Vec<String> {
    let prefix = format!("aya_{pid}_");
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .flat_map(|t| ["uprobe_events", "kprobe_events"].map(|f| Path::new(t).join(f)))
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains(&prefix))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Names of the sockscope programs loaded now, by id (every user's).
pub fn sockscope_programs() -> BTreeMap<u32, String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| Some((p.id(), p.name_as_str()?.to_owned())))
        .filter(|(_, n)| n.starts_with("sockscope_"))
        .collect()
}
