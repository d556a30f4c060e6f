//! Where a frame is in the source, and the crate and module path of a function that
//! line-tables-only debug info names without one.

/// A place in the source.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceLine {
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// One function a frame stands for, with where in the source this address is.
pub struct FrameFunction<'a> {
    /// As symbolized: a full path from the symbol table or a linkage name, or only the
    /// function's own name (`{async_fn#0}<&str>`, `bind<..>`) from line-tables-only
    /// debug info.
    pub name: &'a str,
    pub file: Option<&'a str>,
    pub line: Option<u32>,
}

impl FrameFunction<'_> {
    /// The name with its crate and module path: `name` itself when it has one, else the
    /// path read from its source file (`.../webrtc-0.21.1/src/peer_connection/driver.rs`
    /// → `webrtc::peer_connection::driver::NAME`). Line-tables-only builds (the usual
    /// release profile with line tables) name functions without their path.
    pub fn qualified(&self) -> std::borrow::Cow<'_, str> {
        if has_path(self.name) {
            return self.name.into();
        }
        match self.file.and_then(module_path) {
            Some(path) => format!("{path}::{}", self.name).into(),
            None => self.name.into(),
        }
    }
}

/// Whether a function name carries its path: `a::b::f`, `<a::T as b::Tr>::f`, but not
/// `f<a::b::T>` (a path only in its generic arguments) nor `{async_fn#0}`.
pub fn has_path(name: &str) -> bool {
    name.starts_with('<')
        || name
            .split('<')
            .next()
            .is_some_and(|base| base.contains("::"))
}

/// `crate::module` of a Rust source file, from its path: the crate is the directory
/// that holds `src/` (a registry checkout's `-VERSION` dropped, `-` read as `_`), the
/// module the path below `src/` (`lib.rs`, `main.rs`, `mod.rs` add nothing).
fn module_path(file: &str) -> Option<String> {
    let (dir, below) = file.rsplit_once("/src/")?;
    let below = below.strip_suffix(".rs")?;
    let dir = dir.rsplit('/').next()?;
    let krate = match dir.rsplit_once('-') {
        Some((name, version)) if version.starts_with(|c: char| c.is_ascii_digit()) => name,
        _ => dir,
    };
    // The standard library: /rustc/HASH/library/core/src/...
    let krate = if krate.is_empty() {
        return None;
    } else {
        krate.replace('-', "_")
    };
    let mut path = krate;
    for part in below.split('/') {
        if !matches!(part, "lib" | "main" | "mod") {
            path.push_str("::");
            path.push_str(part);
        }
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::module_path;

    #[test]
    fn module_paths_from_source_files() {
        let registry = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";
        assert_eq!(
            module_path(&format!(
                "{registry}/webrtc-0.21.1/src/peer_connection/driver.rs"
            ))
            .as_deref(),
            Some("webrtc::peer_connection::driver")
        );
        assert_eq!(
            module_path(&format!("{registry}/rtc-mdns-0.21.1/src/lib.rs")).as_deref(),
            Some("rtc_mdns")
        );
        assert_eq!(
            module_path("/rustc/59807616/library/std/src/net/udp.rs").as_deref(),
            Some("std::net::udp")
        );
        assert_eq!(
            module_path("/work/main/examples/webrtc21-proxy/src/session/mod.rs").as_deref(),
            Some("webrtc21_proxy::session")
        );
        assert_eq!(
            module_path("./socket/../sysdeps/unix/syscall-template.S"),
            None
        );
    }
}
