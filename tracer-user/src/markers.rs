//! Attaching the USDT markers of a binary or a running process to the generic USDT
//! program: each marker gets an attach cookie, under which its argument spec is
//! stored for the BPF side, and under which user space finds its name again.
use std::{
    collections::{BTreeSet, HashSet},
    fs,
    num::NonZeroU32,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
use tracer_common::{MARKER_MAX_ARGS, UsdtArg, UsdtSpec, usdt_action, usdt_arg};

use crate::{
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
    pub object: PathBuf,
    /// Per argument: whether it is signed (for printing).
    pub signed: Vec<bool>,
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

    /// Attaches the markers of `providers` found at `target`.
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
        let cookie =
            u32::try_from(self.markers.len()).map_err(|_| "too many markers".to_string())?;
        let (program, specs) = tracer.usdt_parts().map_err(|e| e.to_string())?;
        specs
            .insert(cookie, spec, 0)
            .map_err(|e| format!("cannot store its spec: {e}"))?;
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(probe.file_offset),
            cookie: Some(cookie as u64),
        };
        program
            .attach(point, object, scope)
            .map_err(|e| format!("{USDT_PROGRAM} could not be attached: {e}"))?;
        self.markers.push(AttachedMarker {
            provider: probe.provider.clone(),
            name: probe.name.clone(),
            object: object.to_owned(),
            signed: probe.args.iter().map(|a| a.signed).collect(),
        });
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
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|_| TracerError::NoSuchProcess(pid))?;
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let exe =
        fs::read_link(format!("/proc/{pid}/exe")).map_err(|_| TracerError::NoSuchProcess(pid))?;
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
