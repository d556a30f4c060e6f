//! Which part of webrtc-rs created a socket, read from its symbolized creating stack.
use crate::symbolize::Frame;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subsystem {
    IceAgent,
    Mdns,
    Dtls,
    Turn,
    Sctp,
    Other,
}

/// Crate-path prefixes of each subsystem, for both webrtc-rs lines: the legacy one
/// (0.14-0.17: `webrtc_ice`, `webrtc_mdns`, ...) and the Sans-I/O one (0.20+: the
/// `rtc_*` core crates, and the `webrtc` async layer whose connection driver binds the
/// ICE host sockets). The innermost matching frame decides: the mDNS socket is created
/// by `webrtc_mdns`/`rtc_mdns` called from the ICE agent or the driver, and is mDNS.
const CRATES: [(&str, Subsystem); 16] = [
    ("webrtc_mdns::", Subsystem::Mdns),
    ("rtc_mdns::", Subsystem::Mdns),
    ("webrtc_dtls::", Subsystem::Dtls),
    ("rtc_dtls::", Subsystem::Dtls),
    ("turn::", Subsystem::Turn),
    ("rtc_turn::", Subsystem::Turn),
    ("webrtc_sctp::", Subsystem::Sctp),
    ("rtc_sctp::", Subsystem::Sctp),
    ("webrtc_ice::", Subsystem::IceAgent),
    ("rtc_ice::", Subsystem::IceAgent),
    ("webrtc_util::", Subsystem::IceAgent),
    ("stun::", Subsystem::IceAgent),
    ("rtc_stun::", Subsystem::IceAgent),
    // 0.20+: `PeerConnectionDriver::bind_transports` binds the ICE host sockets.
    ("webrtc::peer_connection::driver::", Subsystem::IceAgent),
    ("webrtc::", Subsystem::Other),
    ("rtc::", Subsystem::Other),
];

/// Whether a frame belongs to a webrtc-rs crate (for attribution by stack).
pub fn is_webrtc_frame(name: &str) -> bool {
    CRATES.iter().any(|(prefix, _)| frame_in(name, prefix))
}

/// Function names may be qualified (`<webrtc_ice::agent::Agent as ..>::f`): match
/// the crate path anywhere after a `<` or at the start.
/// Runs once per socket and frame: no allocation.
pub(super) fn frame_in(name: &str, prefix: &str) -> bool {
    name.starts_with(prefix)
        || name
            .match_indices(prefix)
            .any(|(i, _)| name[..i].ends_with('<'))
}

impl Subsystem {
    /// How people call it.
    pub fn label(self) -> &'static str {
        match self {
            Self::IceAgent => "the ICE agent",
            Self::Mdns => "mDNS",
            Self::Dtls => "DTLS",
            Self::Turn => "TURN",
            Self::Sctp => "SCTP",
            Self::Other => "application code",
        }
    }
}

pub fn classify(frames: &[Frame]) -> Subsystem {
    for frame in frames {
        for function in frame.functions() {
            let name = function.qualified();
            let found = CRATES.iter().find(|(prefix, _)| frame_in(&name, prefix));
            if let Some((_, s)) = found.filter(|(_, s)| *s != Subsystem::Other) {
                return *s;
            }
        }
    }
    Subsystem::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .map(|n| Frame {
                addr: 0,
                symbol: Some((*n).into()),
                inlined: vec![],
                inlined_at: vec![],
                module: None,
                file: None,
                line: None,
            })
            .collect()
    }

    #[test]
    fn innermost_webrtc_crate_decides() {
        let mdns = frames(&[
            "__GI_socket",
            "webrtc_mdns::conn::DnsConn::server",
            "webrtc_ice::agent::Agent::new",
        ]);
        assert_eq!(classify(&mdns), Subsystem::Mdns);
        let ice = frames(&[
            "__GI_socket",
            "<webrtc_ice::agent::Agent as Foo>::gather",
            "tokio::runtime::park",
        ]);
        assert_eq!(classify(&ice), Subsystem::IceAgent);
        assert_eq!(
            classify(&frames(&["__GI_socket", "main"])),
            Subsystem::Other
        );
        assert!(is_webrtc_frame("webrtc_ice::udp_network::x"));
        assert!(!is_webrtc_frame("tokio::net::udp::UdpSocket::bind"));
    }
}

/// Stacks captured by sockscope from real webrtc-rs programs (tests/fixtures/stacks,
/// one JSON array of frames per file, named `webrtc-VERSION-KIND[-VARIANT].json`):
/// each version's and build's sockets are classified as what created them.
#[cfg(test)]
mod captured {
    use super::*;

    fn fixtures() -> Vec<(String, Vec<Frame>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stacks");
        let mut v: Vec<(String, Vec<Frame>)> = std::fs::read_dir(&dir)
            .expect("tests/fixtures/stacks")
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(e.path()).unwrap();
                let frames = serde_json::from_str(&text)
                    .unwrap_or_else(|err| panic!("{name}: not a list of frames: {err}"));
                (name, frames)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn real_stacks_of_both_webrtc_rs_lines_are_classified() {
        let all = fixtures();
        let mut seen = Vec::new();
        for (name, frames) in &all {
            let want = if name.contains("-mdns") {
                Subsystem::Mdns
            } else if name.contains("-host") {
                Subsystem::IceAgent
            } else {
                panic!("{name}: which kind of socket is it?")
            };
            assert_eq!(classify(frames), want, "{name}");
            seen.push(name.split('-').nth(1).unwrap_or_default().to_owned());
        }
        for version in ["0.17", "0.21"] {
            assert!(
                seen.iter().any(|v| v == version),
                "no stack of webrtc-rs {version}"
            );
        }
    }
}
