//! The creating site: the first frame of a creating stack that is the application's
//! own code (not libc, the Rust standard library, the async runtime, socket helpers,
//! tracer-usdt or webrtc-rs), with its file and line. It is what a person reading a
//! leak wants first; the full stack follows it.
use super::subsystem::{frame_in, is_webrtc_frame};
use crate::symbolize::Frame;

/// Where the application created a socket.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Site {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// Crates that are never the application: the standard library, runtimes and their
/// I/O layers, socket helpers, sockscope's own markers.
const NOT_THE_APPLICATION: [&str; 23] = [
    "std::",
    "core::",
    "alloc::",
    "tokio::",
    "mio::",
    "socket2::",
    "futures::",
    "futures_util::",
    "futures_core::",
    "futures_lite::",
    "futures_executor::",
    "parking::",
    "event_listener::",
    "async_channel::",
    "async_io::",
    "async_executor::",
    "async_task::",
    "smol::",
    "polling::",
    "blocking::",
    "tracing::",
    "tracing_futures::",
    "tracer_usdt::",
];

/// Whether a function name is the application's own code: a Rust path (libc's and the
/// loader's C symbols have none; a name whose path could not be found is not known to
/// be the application's) outside the crates above and webrtc-rs.
fn is_application(name: &str) -> bool {
    crate::symbolize::has_path(name)
        && !NOT_THE_APPLICATION.iter().any(|p| frame_in(name, p))
        && !is_webrtc_frame(name)
}

/// Whether a source file is the Rust toolchain's own (std, core, alloc: their line
/// tables point into `/rustc/<commit>/library/`). Needed where the name alone does not
/// tell: `<i32 as std::sys::pal::unix::IsMinusOne>::is_minus_one`, inlined into the
/// caller of libc's `socket` (a frame that DWARF unwinding shows and the
/// frame-pointer walk skips).
fn in_toolchain_source(file: Option<&str>) -> bool {
    file.is_some_and(|f| f.starts_with("/rustc/") && f.contains("/library/"))
}

/// The innermost frame (inlined functions included) that is the application's.
pub fn creating_site(stack: &[Frame]) -> Option<Site> {
    stack.iter().flat_map(Frame::functions).find_map(|f| {
        if in_toolchain_source(f.file) {
            return None;
        }
        let qualified = f.qualified();
        is_application(&qualified).then(|| Site {
            function: qualified.into_owned(),
            file: f.file.map(str::to_owned),
            line: f.line,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::SourceLine;

    fn frame(symbol: &str, file: &str, line: u32, inlined: &[(&str, &str, u32)]) -> Frame {
        Frame {
            addr: 1,
            symbol: Some(symbol.into()),
            inlined: inlined.iter().map(|i| i.0.into()).collect(),
            inlined_at: inlined
                .iter()
                .map(|i| SourceLine {
                    file: Some(i.1.into()),
                    line: Some(i.2),
                })
                .collect(),
            module: None,
            file: Some(file.into()),
            line: Some(line),
        }
    }

    #[test]
    fn skips_libc_std_runtimes_and_webrtc_rs_and_sees_inlined_frames() {
        let stack = vec![
            frame("__GI_socket", "socket.S", 120, &[]),
            frame("std::net::udp::UdpSocket::bind", "udp.rs", 122, &[]),
            frame("webrtc_ice::agent::Agent::gather", "agent.rs", 10, &[]),
            frame(
                "<tracer_usdt::InPcSpan<F> as core::future::future::Future>::poll",
                "lib.rs",
                99,
                &[("wr::rtsp_upstream::{{closure}}", "src/main.rs", 31)],
            ),
            frame("main", "src/main.rs", 5, &[]),
        ];
        assert_eq!(
            creating_site(&stack),
            Some(Site {
                function: "wr::rtsp_upstream::{{closure}}".into(),
                file: Some("src/main.rs".into()),
                line: Some(31),
            })
        );
        assert_eq!(creating_site(&stack[..3]), None, "no application frame");
    }
}
