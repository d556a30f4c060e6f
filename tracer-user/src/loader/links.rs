//! The links sockscope attached, owned here rather than by their programs so that they
//! are detached all at once.
//!
//! Detaching a link waits until the kernel is done with it (an RCU grace period: about
//! 70 ms on these machines, more on a loaded host or under emulation). aya detaches a
//! program's links one after the other, so each `check` and `trace` spent over a second
//! exiting (some twenty links) and the daemon about 0.1 s per marker, enough for a
//! systemd stop to be seen still deactivating. Waits that overlap end with the same
//! grace period: detaching from many threads at once takes about one.
use aya::programs::ProgramError;

/// A link; dropping it detaches it.
type OwnedLink = Box<dyn Send>;

/// At most this many threads detach at once; beyond it each takes several links.
const MAX_DETACH_THREADS: usize = 64;

/// Where a link is in [`Links`], to detach it alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkSlot(usize);

/// How many links [`Links`] had at some point, to detach what was attached after it.
#[derive(Clone, Copy, Debug)]
pub struct LinkMark(usize);

/// Owned links. Dropping it detaches them all, concurrently.
#[derive(Default)]
pub struct Links {
    /// `None` once detached alone. Slots are not reused: a slot is 16 bytes and links
    /// are detached alone only when the daemon lets go of a binary.
    slots: Vec<Option<OwnedLink>>,
}

impl Links {
    /// Takes a link its program gave up (`take_link`). A link it could not give up
    /// stays with the program, which detaches it when it is unloaded: nothing is lost
    /// but the speed, so it is not an error.
    pub fn adopt<L: Send + 'static>(&mut self, taken: Result<L, ProgramError>) -> Option<LinkSlot> {
        let link = taken.ok()?;
        self.slots.push(Some(Box::new(link)));
        Some(LinkSlot(self.slots.len() - 1))
    }

    /// Detaches one link now (waiting for the kernel).
    pub fn detach(&mut self, slot: LinkSlot) {
        if let Some(s) = self.slots.get_mut(slot.0) {
            s.take();
        }
    }

    pub fn mark(&self) -> LinkMark {
        LinkMark(self.slots.len())
    }

    /// Detaches every link adopted after `mark` (an attach that failed half-way).
    pub fn detach_since(&mut self, mark: LinkMark) {
        let later: Vec<OwnedLink> = self
            .slots
            .drain(mark.0.min(self.slots.len())..)
            .flatten()
            .collect();
        detach_concurrently(later);
    }

    /// Detaches every link, concurrently; returns once all are detached.
    pub fn detach_all(&mut self) {
        let all: Vec<OwnedLink> = self.slots.drain(..).flatten().collect();
        detach_concurrently(all);
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        self.detach_all();
    }
}

fn detach_concurrently(links: Vec<OwnedLink>) {
    // None or one: dropped (detached) on return, no thread needed.
    if links.len() <= 1 {
        return;
    }
    let threads = links.len().min(MAX_DETACH_THREADS);
    let mut groups: Vec<Vec<OwnedLink>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, link) in links.into_iter().enumerate() {
        groups[i % threads].push(link);
    }
    std::thread::scope(|s| {
        for group in groups {
            // A thread that cannot be started drops its group (the closure) right
            // here: detached all the same, only not in parallel.
            let _ = std::thread::Builder::new()
                .name("sockscope-detach".into())
                .stack_size(64 * 1024)
                .spawn_scoped(s, move || drop(group));
        }
    });
}
