//! The session host-wide (`daemon`): only processes that carry markers are judged,
//! found as they show up; processes are forgotten a while after they exit, and the
//! markers of programs no process runs any more are released, so memory and kernel
//! state follow what is alive.
use std::time::Duration;

use tracer_common::ProcessIdentity;

use super::{LeakSession, ProcessChange, RETIRE_AFTER_NS};
use crate::{
    correlate::Finding,
    discovery::Discovery,
    markers::{MarkerTarget, PROVIDER},
};

/// How long the markers of a program stay attached once no known process runs it: a
/// program restarted at once keeps them (attaching costs a parse and a uprobe per
/// marker), one replaced by a new version or gone with its container lets them go.
pub const RELEASE_MARKERS_AFTER: Duration = crate::symbolize::OBJECT_IDLE;

impl LeakSession {
    /// Host-wide: how long an object's markers stay attached after the last process
    /// known to map it was forgotten, and an object file's parsed debug information
    /// once no stack used it ([`RELEASE_MARKERS_AFTER`] by default).
    pub fn forget_programs_after(&mut self, after: Duration) {
        self.release_markers_after_ns = after.as_nanos() as u64;
        self.stacks.object_idle(after);
    }

    /// Host-wide: judge only the processes that carry sockscope markers (found as
    /// they create sockets, fire markers or execute programs), and forget each some
    /// time after it exits, and every PeerConnection judged with nothing left open, so
    /// memory follows what is alive.
    pub fn host_wide(&mut self) {
        self.discovery = Some(Discovery::default());
        self.retire_after_ns = Some(RETIRE_AFTER_NS);
    }

    /// Processes that had exited when first looked at (see
    /// [`Discovery::gone_before_seen`]).
    pub fn gone_before_found(&self) -> u64 {
        self.discovery
            .as_ref()
            .map_or(0, Discovery::gone_before_seen)
    }

    /// Looks at a process now (the daemon, for those running when it starts): whether
    /// it carries markers, attaching them if they are new.
    pub fn consider(&mut self, pid: u32) -> bool {
        self.wanted(pid)
    }

    /// Processes found carrying markers and processes forgotten since the last call,
    /// in order, each with the number of findings of the pass ([`Self::drain`],
    /// [`Self::finish`]) made before it: a finding before that place is about the
    /// process that had the pid before, one after it about the next.
    pub fn take_changes(&mut self) -> Vec<(usize, ProcessChange)> {
        std::mem::take(&mut self.changes)
    }

    /// Whether records of `pid` are judged: always, unless host-wide, where only
    /// processes with markers are (their new marked objects attached on the way).
    pub(super) fn wanted(&mut self, pid: u32) -> bool {
        self.wanted_as(pid, None)
    }

    /// [`Self::wanted`], for the process of an exec record (`identity`), which may have
    /// exited by the time its records are judged.
    pub(super) fn wanted_as(&mut self, pid: u32, identity: Option<&ProcessIdentity>) -> bool {
        let Some(discovery) = self.discovery.as_mut() else {
            return true;
        };
        let known = discovery.known_marked(pid);
        let mut new_objects = Vec::new();
        let marked = discovery.marked(pid, identity, &mut new_objects);
        let started = discovery.started(pid);
        for (id, object) in new_objects {
            let attached = self.markers.attach(
                &mut self.tracer,
                &MarkerTarget::Binary(object.clone()),
                &[PROVIDER.to_owned()],
            );
            // Read through a process (/proc/PID/exe, /proc/PID/root/...) that may exit
            // before its markers are attached: then the next process that maps the
            // object attaches what is missing, or the object would stay unwatched.
            let complete = attached.as_ref().is_ok_and(|r| r.skipped.is_empty());
            let retry = !complete && !object.exists();
            let again = if retry {
                "; will try again with the next process that maps it"
            } else {
                ""
            };
            match attached {
                Ok(r) => {
                    self.exec_markers += r.attached;
                    crate::say!(
                        "sockscope: attached {} markers of {} (found in pid {pid}){}{again}",
                        r.attached,
                        object.display(),
                        if r.skipped.is_empty() {
                            String::new()
                        } else {
                            format!("; not attached: {}", r.skipped.join("; "))
                        }
                    );
                }
                Err(e) => crate::say!(
                    "sockscope: markers of {} (pid {pid}) not attached: {e}{again}",
                    object.display()
                ),
            }
            if retry && let Some(d) = self.discovery.as_mut() {
                d.retry_object(id);
            }
        }
        if marked && !known {
            self.tracer.sample_process(pid, true);
            self.changes
                .push((self.cursor, ProcessChange::Marked { pid, started }));
        }
        marked
    }

    /// Host-wide, after lost records: the marked processes whose exit was among them
    /// are judged as exited now, and a pid that now belongs to another process (its
    /// exit and the next exec both lost) ends its old program and is looked at anew,
    /// so that no finding of one carries the other's context.
    pub(super) fn recheck_processes(&mut self, now_ns: u64) -> Vec<Finding> {
        let Some(discovery) = self.discovery.as_ref() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (pid, now_started) in discovery.not_as_seen() {
            if self.correlator.exited_at(pid).is_some() {
                continue;
            }
            if now_started.is_some() {
                // Another process has the pid: as at an exec in it.
                out.extend(self.program_replaced(pid, now_ns));
                self.wanted(pid);
            } else {
                let found = self.correlator.process_exited(pid, now_ns);
                self.cursor += found.len();
                out.extend(found);
            }
        }
        out
    }

    /// Host-wide: forgets the processes that exited a while ago and the
    /// PeerConnections that have nothing more to report.
    pub(super) fn retire(&mut self, now_ns: u64) {
        let Some(after) = self.retire_after_ns else {
            return;
        };
        for pid in self.correlator.exited_before(now_ns.saturating_sub(after)) {
            self.forget_process(pid);
        }
        self.correlator.retire_judged();
        self.release_idle_markers();
    }

    /// Detaches the markers of objects no known process has mapped for a while.
    fn release_idle_markers(&mut self) {
        let Some(discovery) = self.discovery.as_mut() else {
            return;
        };
        for id in discovery.idle_objects(self.release_markers_after_ns) {
            if let Some((path, n)) = self.markers.release_object(&mut self.tracer, id) {
                self.released_markers += n;
                crate::say!(
                    "sockscope: released {n} markers of {} (no process has mapped it for {:?})",
                    path.display(),
                    Duration::from_nanos(self.release_markers_after_ns)
                );
            }
        }
    }

    pub(super) fn forget_process(&mut self, pid: u32) {
        self.tracer.sample_process(pid, false);
        self.correlator.forget_process(pid);
        if let Some(d) = self.discovery.as_mut() {
            d.forget(pid);
        }
        self.changes
            .push((self.cursor, ProcessChange::Retired(pid)));
    }

    /// Host-wide: a program starts in `pid` at `ts` while a process that had this pid
    /// and exited before is still remembered (the pid came round again before
    /// [`RETIRE_AFTER_NS`]): that one is forgotten now, so the new one starts from
    /// nothing and is not forgotten in its place later.
    pub(super) fn reborn(&mut self, pid: u32, ts: u64) {
        if self.retire_after_ns.is_some()
            && self.correlator.exited_at(pid).is_some_and(|at| at <= ts)
        {
            self.forget_process(pid);
        }
    }

    /// Host-wide: a program starts in `pid`, which a marked program still alive (as far
    /// as the records go) had: that program is over, whether its exit was among lost
    /// records (the pid came round again) or the process executed another program.
    /// It is judged as exited now and forgotten, before the new program is looked at,
    /// so no finding of the old one carries the new one's context.
    pub(super) fn program_replaced(&mut self, pid: u32, ts: u64) -> Vec<Finding> {
        let alive_marked = self.discovery.as_ref().is_some_and(|d| d.known_marked(pid))
            && self.correlator.exited_at(pid).is_none();
        if !alive_marked {
            return Vec::new();
        }
        let found = self.correlator.process_exited(pid, ts);
        // Its `Retired` change goes after its last finding (see `take_changes`).
        self.cursor += found.len();
        self.forget_process(pid);
        found
    }
}
