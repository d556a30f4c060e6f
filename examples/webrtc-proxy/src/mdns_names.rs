//! Host candidates as browsers send them: named `<uuid>.local` (mDNS) instead of by
//! their address. Shared by the webrtc-rs examples of both lines (0.17 and 0.21 include
//! this file), so each offers its peer the same kind of SDP.
use anyhow::Context as _;

/// A random version 4 UUID, as browsers name their host candidates.
fn uuid_v4() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// The SDP a browser with mDNS candidates would send: every host candidate's IP
/// address replaced by a `<uuid>.local` name (one name per address). Returns the SDP
/// and the names used.
pub fn with_mdns_host_names(sdp: &str) -> anyhow::Result<(String, Vec<String>)> {
    let mut names: Vec<(String, String)> = Vec::new();
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        let mut f: Vec<&str> = body.split(' ').collect();
        let is_host_ip = body.starts_with("a=candidate:")
            && body.contains(" typ host")
            && f.get(4)
                .is_some_and(|a| a.parse::<std::net::IpAddr>().is_ok());
        if !is_host_ip {
            out.push_str(line);
            continue;
        }
        let addr = f[4].to_owned();
        if !names.iter().any(|(a, _)| *a == addr) {
            names.push((addr.clone(), format!("{}.local", uuid_v4()?)));
        }
        let name = &names
            .iter()
            .find(|(a, _)| *a == addr)
            .map_or("", |n| n.1.as_str());
        f[4] = name;
        out.push_str(&f.join(" "));
        out.push_str(ending);
    }
    Ok((out, names.into_iter().map(|(_, n)| n).collect()))
}
