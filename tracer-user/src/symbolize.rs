//! Stack symbolization with blazesym: user stacks through the process's memory maps
//! (Rust names demangled), kernel stacks through kallsyms.
use std::{collections::HashMap, sync::Arc};

use aya::maps::{MapData, StackTraceMap};
use blazesym::symbolize::{
    Input, Symbolized, Symbolizer as Blaze, source::Kernel, source::Process, source::Source,
};

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    pub addr: u64,
    /// Demangled function name, without the hash suffix; `None` if unknown.
    pub symbol: Option<String>,
    /// Functions inlined at this address, innermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inlined: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl Frame {
    /// Every function name this frame stands for (inlined ones first).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.inlined
            .iter()
            .map(String::as_str)
            .chain(self.symbol.as_deref())
    }
}

pub struct Symbolizer {
    blaze: Blaze,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Self {
            blaze: Blaze::builder()
                .enable_demangling(true)
                .enable_inlined_fns(true)
                .build(),
        }
    }

    /// Frames of a user stack of process `pid`.
    pub fn user(&self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        self.run(&Source::Process(Process::new(pid.into())), addrs)
    }

    pub fn kernel(&self, addrs: &[u64]) -> Vec<Frame> {
        self.run(&Source::Kernel(Kernel::default()), addrs)
    }

    fn run(&self, src: &Source<'_>, addrs: &[u64]) -> Vec<Frame> {
        // A failure (process gone, unreadable maps) still yields the raw addresses.
        let symbolized = self
            .blaze
            .symbolize(src, Input::AbsAddr(addrs))
            .unwrap_or_default();
        addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| match symbolized.get(i) {
                Some(Symbolized::Sym(sym)) => Frame {
                    addr,
                    symbol: Some(strip_hash(&sym.name).to_owned()),
                    inlined: sym
                        .inlined
                        .iter()
                        .rev()
                        .map(|f| strip_hash(&f.name).to_owned())
                        .collect(),
                    module: sym
                        .module
                        .as_ref()
                        .map(|m| m.to_string_lossy().into_owned()),
                    file: sym
                        .code_info
                        .as_ref()
                        .map(|c| c.to_path().display().to_string()),
                    line: sym.code_info.as_ref().and_then(|c| c.line),
                },
                _ => Frame {
                    addr,
                    symbol: None,
                    inlined: Vec::new(),
                    module: None,
                    file: None,
                    line: None,
                },
            })
            .collect()
    }
}

/// A symbolized stack, innermost first, shared by every socket created through it.
pub type Stack = Arc<[Frame]>;

/// Symbolized stacks by stack id. Symbolizing costs tens of microseconds and a stack's
/// frames take kilobytes, while sockets of one process come from a handful of code
/// paths: each (process, stack id) is symbolized once and shared. Stack ids are
/// stable because sockscope never deletes from the stack map.
pub struct StackCache {
    symbolizer: Symbolizer,
    user: HashMap<(u32, i32), Stack>,
    kernel: HashMap<i32, Stack>,
    empty: Stack,
}

impl Default for StackCache {
    fn default() -> Self {
        Self::new()
    }
}

impl StackCache {
    pub fn new() -> Self {
        Self {
            symbolizer: Symbolizer::new(),
            user: HashMap::new(),
            kernel: HashMap::new(),
            empty: Arc::from(Vec::new()),
        }
    }

    /// User stack `id` of process `pid` (empty if no stack was taken).
    pub fn user(&mut self, stacks: &StackTraceMap<MapData>, pid: u32, id: i32) -> Stack {
        if id < 0 {
            return self.empty.clone();
        }
        let sym = &self.symbolizer;
        self.user
            .entry((pid, id))
            .or_insert_with(|| sym.user(pid, &stack_addrs(stacks, id)).into())
            .clone()
    }

    pub fn kernel(&mut self, stacks: &StackTraceMap<MapData>, id: i32) -> Stack {
        if id < 0 {
            return self.empty.clone();
        }
        let sym = &self.symbolizer;
        self.kernel
            .entry(id)
            .or_insert_with(|| sym.kernel(&stack_addrs(stacks, id)).into())
            .clone()
    }

    /// A process exited: its pid may come back with other code at the same addresses.
    pub fn forget_process(&mut self, pid: u32) {
        self.user.retain(|(p, _), _| *p != pid);
    }
}

/// Legacy Rust mangling leaves a `::h0123456789abcdef` suffix after demangling.
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

/// The instruction pointers of stack `id`, innermost first; empty if the id is
/// negative (no stack was taken) or no longer in the map.
pub fn stack_addrs(stacks: &StackTraceMap<MapData>, id: i32) -> Vec<u64> {
    let Ok(id) = u32::try_from(id) else {
        return Vec::new();
    };
    stacks
        .get(&id, 0)
        .map(|trace| {
            trace
                .frames()
                .iter()
                .map(|f| f.ip)
                .filter(|&ip| ip != 0)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_legacy_hash_only() {
        assert_eq!(
            strip_hash("udp_workload::make::h0123456789abcdef"),
            "udp_workload::make"
        );
        assert_eq!(strip_hash("std::net::h_short"), "std::net::h_short");
        assert_eq!(strip_hash("main"), "main");
    }
}
