//! Attaching the USDT markers of a binary or a running process to the generic USDT
//! program: each marker gets an attach cookie, under which its argument spec is
//! stored for the BPF side, and under which user space finds its name again. A kernel
//! without attach cookies (before 5.15) gets no cookie with the uprobe: the BPF side
//! finds the marker's file offset instead, under which the cookie is stored (one
//! marker per offset, see [`MarkerTable::attach`]).
use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    fs,
    num::NonZeroU32,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
use tracer_common::{MARKER_MAX_ARGS, UsdtArg, UsdtSpec, usdt_action, usdt_arg};

use crate::{
    backend::MarkerIds,
    correlate::PcMarker,
    error::TracerError,
    loader::{LinkSlot, Tracer, USDT_PROGRAM},
    stapsdt::{ArgKind, ArgSpec, UsdtError, UsdtProbe, read_notes},
};

/// sockscope's own marker provider (crate `tracer-usdt`).
pub const PROVIDER: &str = "sockscope";

/// Where to find markers.
#[derive(Clone, Debug)]
pub enum MarkerTarget {
    /// A binary or shared object: every process running it, now and later.
    Binary(PathBuf),
    /// A running process: its executable and the shared objects it has mapped.
    Process(u32),
}

/// One attached marker, found again through its attach cookie (its index here).
#[derive(Clone, Debug)]
pub struct AttachedMarker {
    pub provider: String,
    pub name: String,
    /// The object it was first attached in (without attach cookies, the same marker
    /// at the same offset of another object shares its entry).
    pub object: PathBuf,
    /// Per argument: whether it is signed (for printing).
    pub signed: Vec<bool>,
    /// How the BPF side reads it.
    spec: UsdtSpec,
}

impl AttachedMarker {
    /// The PeerConnection lifecycle meaning of this marker, if it is one of ours.
    pub fn pc_marker(&self, args: &[u64]) -> Option<PcMarker> {
        if self.provider != PROVIDER {
            return None;
        }
        let id = *args.first()?;
        Some(match self.name.as_str() {
            "pc_open" => PcMarker::Open(id),
            "pc_close_begin" => PcMarker::CloseBegin(id),
            "pc_close_end" => PcMarker::CloseEnd(id),
            "pc_dropped" => PcMarker::Dropped(id),
            "pc_socket" => PcMarker::Socket {
                pc_id: id,
                port: *args.get(1)? as u16,
            },
            "pc_socket_cookie" => PcMarker::SocketCookie {
                pc_id: id,
                cookie: *args.get(1)?,
            },
            _ => return None,
        })
    }

    /// Arguments as JSON numbers, signed ones as such.
    pub fn json_args(&self, args: &[u64]) -> Vec<serde_json::Value> {
        args.iter()
            .take(self.signed.len())
            .zip(&self.signed)
            .map(|(&v, &signed)| if signed { (v as i64).into() } else { v.into() })
            .collect()
    }
}

/// What an attach did, for the user.
#[derive(Debug, Default)]
pub struct AttachReport {
    pub attached: usize,
    /// Markers that could not be attached, and why (one line each).
    pub skipped: Vec<String>,
}

/// A released marker's cookie is given to another only after this: by then no record
/// naming it can still wait in the ring (the reader passes every few milliseconds).
const COOKIE_QUARANTINE: Duration = Duration::from_secs(10);

/// Every marker sockscope attached, by cookie.
#[derive(Debug, Default)]
pub struct MarkerTable {
    /// By cookie; `None` once released.
    markers: Vec<Option<AttachedMarker>>,
    /// Cookies of released markers, oldest first, with when they were released.
    free: VecDeque<(u32, Instant)>,
    /// The markers attached for every process, by object (device, inode), with their
    /// links: what releasing an object detaches. Only with attach cookies (without,
    /// markers of several objects share one entry by file offset).
    by_object: HashMap<(u64, u64), ObjectMarkers>,
    /// Without attach cookies: the cookie of the marker at each file offset.
    sites: HashMap<u64, u32>,
    /// Markers attached for every process, by (device, inode, file offset): a binary
    /// attached again (after a partial attach) gets only those it lacks.
    everywhere: HashSet<(u64, u64, u64)>,
}

/// What was attached for one object.
#[derive(Debug)]
struct ObjectMarkers {
    path: PathBuf,
    links: Vec<(u32, Option<LinkSlot>)>,
}

impl MarkerTable {
    pub fn get(&self, cookie: u32) -> Option<&AttachedMarker> {
        self.markers.get(cookie as usize)?.as_ref()
    }

    /// Markers attached now.
    pub fn len(&self) -> usize {
        self.markers.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Detaches the markers attached for every process in object `id` (the daemon,
    /// once no process maps it: a binary replaced by a new version, a container gone),
    /// so that the kernel lets go of the file and the cookies serve other objects.
    /// Returns the object's path and how many markers were detached.
    pub fn release_object(
        &mut self,
        tracer: &mut Tracer,
        id: (u64, u64),
    ) -> Option<(PathBuf, usize)> {
        let object = self.by_object.remove(&id)?;
        let parts = tracer.usdt_parts().ok()?;
        let now = Instant::now();
        let count = object.links.len();
        for (cookie, link) in object.links {
            // Without a slot the link stayed with the program: detached at the end.
            if let Some(slot) = link {
                parts.links.detach(slot);
            }
            let _ = parts.specs.remove(&cookie);
            if let Some(slot) = self.markers.get_mut(cookie as usize) {
                *slot = None;
            }
            self.free.push_back((cookie, now));
        }
        self.everywhere.retain(|&(dev, ino, _)| (dev, ino) != id);
        Some((object.path, count))
    }

    /// A cookie for a new marker: a released one past its quarantine, or the next.
    fn new_cookie(&self) -> Result<(u32, bool), String> {
        if let Some(&(cookie, released)) = self.free.front()
            && released.elapsed() >= COOKIE_QUARANTINE
        {
            return Ok((cookie, true));
        }
        u32::try_from(self.markers.len())
            .map(|c| (c, false))
            .map_err(|_| "too many markers".to_string())
    }

    fn store(&mut self, cookie: u32, reused: bool, marker: AttachedMarker) {
        if reused {
            self.free.pop_front();
        }
        match self.markers.get_mut(cookie as usize) {
            Some(slot) => *slot = Some(marker),
            None => self.markers.push(Some(marker)),
        }
    }

    /// Attaches the markers of `providers` found at `target`. Without attach cookies,
    /// a marker at the file offset of another object's marker is skipped unless it is
    /// the same marker (same name and argument spec, as in a copy of the binary): the
    /// BPF side could not tell them apart.
    pub fn attach(
        &mut self,
        tracer: &mut Tracer,
        target: &MarkerTarget,
        providers: &[String],
    ) -> Result<AttachReport, TracerError> {
        let (objects, scope) = match target {
            MarkerTarget::Binary(path) => (
                vec![(path.clone(), path.clone())],
                UProbeScope::AllProcesses,
            ),
            MarkerTarget::Process(pid) => {
                let pid_nz = NonZeroU32::new(*pid).ok_or(TracerError::NoSuchProcess(*pid))?;
                (process_objects(*pid)?, UProbeScope::OneProcess(pid_nz))
            }
        };
        let mut report = AttachReport::default();
        for (shown, readable) in objects {
            let file = fs::metadata(&readable).ok().map(|m| (m.dev(), m.ino()));
            let probes = match read_notes(&readable) {
                Ok(p) => p,
                // A mapped object without notes, or not ELF, is simply not ours.
                Err(UsdtError::NotElf { .. }) if matches!(target, MarkerTarget::Process(_)) => {
                    continue;
                }
                Err(e) => return Err(TracerError::Usdt(e)),
            };
            for probe in probes.iter().filter(|p| providers.contains(&p.provider)) {
                let key = file
                    .filter(|_| matches!(scope, UProbeScope::AllProcesses))
                    .map(|(dev, ino)| (dev, ino, probe.file_offset));
                if key.is_some_and(|k| self.everywhere.contains(&k)) {
                    continue;
                }
                match self.attach_one(tracer, probe, &readable, scope) {
                    Ok(link) => {
                        report.attached += 1;
                        self.everywhere.extend(key);
                        if let (Some((dev, ino, _)), Some(link)) = (key, link) {
                            self.by_object
                                .entry((dev, ino))
                                .or_insert_with(|| ObjectMarkers {
                                    path: shown.clone(),
                                    links: Vec::new(),
                                })
                                .links
                                .push(link);
                        }
                    }
                    Err(why) => report.skipped.push(format!(
                        "{}:{} in {}: {why}",
                        probe.provider,
                        probe.name,
                        shown.display()
                    )),
                }
            }
        }
        Ok(report)
    }

    /// Attaches one marker; returns its cookie and link when they are its own (with
    /// attach cookies), which releasing its object undoes.
    fn attach_one(
        &mut self,
        tracer: &mut Tracer,
        probe: &UsdtProbe,
        object: &Path,
        scope: UProbeScope,
    ) -> Result<Option<(u32, Option<LinkSlot>)>, String> {
        if probe.semaphore != 0 {
            return Err(
                "uses a semaphore, which sockscope cannot enable (use probe! without one)".into(),
            );
        }
        let spec = bpf_spec(probe)?;
        let parts = tracer.usdt_parts().map_err(|e| e.to_string())?;
        let by_cookie = matches!(parts.ids, MarkerIds::Cookie);
        let shared = if by_cookie {
            None
        } else {
            self.sites.get(&probe.file_offset).copied()
        };
        if let Some(cookie) = shared
            && let Some(m) = self.get(cookie)
            && (m.provider.as_str(), m.name.as_str(), m.spec)
                != (probe.provider.as_str(), probe.name.as_str(), spec)
        {
            return Err(format!(
                "{}:{} of {} is at the same file offset ({:#x}), and this kernel has no BPF attach cookies (Linux 5.15+) to tell them apart",
                m.provider,
                m.name,
                m.object.display(),
                probe.file_offset
            ));
        }
        let (cookie, reused) = match shared {
            Some(c) => (c, false),
            None => {
                let (c, reused) = self.new_cookie()?;
                parts
                    .specs
                    .insert(c, spec, 0)
                    .map_err(|e| format!("cannot store its spec: {e}"))?;
                if !by_cookie {
                    parts
                        .sites
                        .insert(probe.file_offset, c, 0)
                        .map_err(|e| format!("cannot store its file offset: {e}"))?;
                }
                (c, reused)
            }
        };
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(probe.file_offset),
            cookie: by_cookie.then_some(u64::from(cookie)),
        };
        let link = match parts.program.attach(point, object, scope) {
            Ok(link) => link,
            Err(e) => {
                if shared.is_none() {
                    let _ = parts.specs.remove(&cookie);
                    if !by_cookie {
                        let _ = parts.sites.remove(&probe.file_offset);
                    }
                }
                return Err(format!("{USDT_PROGRAM} could not be attached: {e}"));
            }
        };
        let slot = parts.links.adopt(parts.program.take_link(link));
        if shared.is_some() {
            return Ok(None);
        }
        if !by_cookie {
            self.sites.insert(probe.file_offset, cookie);
        }
        let marker = AttachedMarker {
            provider: probe.provider.clone(),
            name: probe.name.clone(),
            object: object.to_owned(),
            signed: probe.args.iter().map(|a| a.signed).collect(),
            spec,
        };
        self.store(cookie, reused, marker);
        Ok(by_cookie.then_some((cookie, slot)))
    }
}

/// The BPF-side spec of a marker: how to read each argument, and what it does.
pub fn bpf_spec(probe: &UsdtProbe) -> Result<UsdtSpec, String> {
    if probe.args.len() > MARKER_MAX_ARGS {
        return Err(format!(
            "has {} arguments; at most {MARKER_MAX_ARGS} are read",
            probe.args.len()
        ));
    }
    let mut spec = UsdtSpec {
        nargs: probe.args.len() as u32,
        ..Default::default()
    };
    spec.action = match (probe.provider.as_str(), probe.name.as_str()) {
        (PROVIDER, "span_enter") => usdt_action::SPAN_ENTER,
        (PROVIDER, "span_exit") => usdt_action::SPAN_EXIT,
        (PROVIDER, "pc_close_end" | "pc_dropped") => usdt_action::PC_END,
        (PROVIDER, "pc_open") => usdt_action::PC_OPEN,
        _ => usdt_action::REPORT,
    };
    for (slot, arg) in spec.args.iter_mut().zip(&probe.args) {
        *slot = bpf_arg(arg);
    }
    Ok(spec)
}

fn bpf_arg(arg: &ArgSpec) -> UsdtArg {
    let base = UsdtArg {
        size: arg.size,
        signed: arg.signed as u8,
        ..Default::default()
    };
    match &arg.kind {
        ArgKind::Const(v) => UsdtArg {
            kind: usdt_arg::CONST,
            value: *v,
            ..base
        },
        ArgKind::Reg { reg, .. } => UsdtArg {
            kind: usdt_arg::REG,
            reg_offset: reg.pt_regs_offset().into(),
            ..base
        },
        ArgKind::Mem { base: reg, disp } => UsdtArg {
            kind: usdt_arg::MEM,
            reg_offset: reg.pt_regs_offset().into(),
            value: *disp,
            ..base
        },
    }
}

/// A process's executable and mapped shared objects, each as (path shown to the
/// user, path readable from here through /proc/PID/root, which also works for
/// processes in other mount namespaces such as containers).
pub fn process_objects(pid: u32) -> Result<Vec<(PathBuf, PathBuf)>, TracerError> {
    let failed = |what: &str, e: std::io::Error| {
        TracerError::proc_read(pid, format!("/proc/{pid}/{what}"), &e)
    };
    let exe = fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| failed("exe", e))?;
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| failed("maps", e))?;
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let mut paths = BTreeSet::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let path = line.split_whitespace().nth(5);
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            paths.insert(PathBuf::from(p));
        }
    }
    paths.insert(exe.clone());
    Ok(paths
        .into_iter()
        .map(|p| {
            let readable = if p == exe {
                PathBuf::from(format!("/proc/{pid}/exe"))
            } else {
                root.join(p.strip_prefix("/").unwrap_or(&p))
            };
            (p, readable)
        })
        .collect())
}
