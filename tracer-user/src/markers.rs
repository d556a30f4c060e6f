//! Attaching the USDT markers of a binary or a running process to the generic USDT
//! program: each marker gets an attach cookie, under which its argument spec is
//! stored for the BPF side, and under which user space finds its name again. A kernel
//! without attach cookies (before 5.15) gets no cookie with the uprobe: the BPF side
//! finds the marker's file offset instead, under which the cookie is stored (one
//! marker per offset, see [`MarkerTable::attach`]).
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs,
    num::NonZeroU32,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
use tracer_common::{MARKER_MAX_ARGS, UsdtArg, UsdtSpec, usdt_action, usdt_arg};

use crate::{
    backend::MarkerIds,
    correlate::PcMarker,
    error::TracerError,
    loader::{Tracer, USDT_PROGRAM},
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

/// Every marker sockscope attached, by cookie.
#[derive(Debug, Default)]
pub struct MarkerTable {
    markers: Vec<AttachedMarker>,
    /// Without attach cookies: the cookie of the marker at each file offset.
    sites: HashMap<u64, u32>,
    /// Markers attached for every process, by (device, inode, file offset): a binary
    /// attached again (after a partial attach) gets only those it lacks.
    everywhere: HashSet<(u64, u64, u64)>,
}

impl MarkerTable {
    pub fn get(&self, cookie: u32) -> Option<&AttachedMarker> {
        self.markers.get(cookie as usize)
    }

    pub fn len(&self) -> usize {
        self.markers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.markers.is_empty()
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
                    Ok(()) => {
                        report.attached += 1;
                        self.everywhere.extend(key);
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

    fn attach_one(
        &mut self,
        tracer: &mut Tracer,
        probe: &UsdtProbe,
        object: &Path,
        scope: UProbeScope,
    ) -> Result<(), String> {
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
        if let Some(cookie) = shared {
            let m = &self.markers[cookie as usize];
            if (m.provider.as_str(), m.name.as_str(), m.spec)
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
        }
        let cookie = match shared {
            Some(c) => c,
            None => {
                let c = u32::try_from(self.markers.len())
                    .map_err(|_| "too many markers".to_string())?;
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
                c
            }
        };
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(probe.file_offset),
            cookie: by_cookie.then_some(u64::from(cookie)),
        };
        let attached = parts.program.attach(point, object, scope);
        if let Err(e) = attached {
            if shared.is_none() {
                let _ = parts.specs.remove(&cookie);
                if !by_cookie {
                    let _ = parts.sites.remove(&probe.file_offset);
                }
            }
            return Err(format!("{USDT_PROGRAM} could not be attached: {e}"));
        }
        if shared.is_none() {
            if !by_cookie {
                self.sites.insert(probe.file_offset, cookie);
            }
            self.markers.push(AttachedMarker {
                provider: probe.provider.clone(),
                name: probe.name.clone(),
                object: object.to_owned(),
                signed: probe.args.iter().map(|a| a.signed).collect(),
                spec,
            });
        }
        Ok(())
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
