//! Telling the service manager how the daemon is doing (systemd's `Type=notify`
//! protocol: one datagram on the socket `NOTIFY_SOCKET` names), so that
//! `systemctl start` returns once the daemon judges, not while it still loads.
use std::os::{
    linux::net::SocketAddrExt as _,
    unix::{
        ffi::OsStrExt as _,
        net::{SocketAddr, UnixDatagram},
    },
};

/// Sends `state` (e.g. `READY=1`) to the service manager, if one asked for it.
/// Outside a `Type=notify` service there is nothing to tell: `Ok(false)`.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let bytes = path.as_bytes();
    // "@name" is a socket in the abstract namespace.
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(&path)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a service manager would receive, through a socket of the test's own
    /// (both address forms).
    #[test]
    fn the_state_reaches_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("sockscope-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        let abstract_name = format!("sockscope-notify-test-{}", std::process::id());
        let abstract_addr = SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
        let abstract_manager = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        // SAFETY: this test is the only one in this binary that touches NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        assert!(notify("READY=1").unwrap());
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        // SAFETY: as above.
        unsafe { std::env::set_var("NOTIFY_SOCKET", format!("@{abstract_name}")) };
        assert!(notify("STOPPING=1").unwrap());
        let n = abstract_manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        // SAFETY: as above.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        assert!(!notify("READY=1").unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
