//! Decoding of ring-buffer records: size check, then `read_unaligned` of the record
//! the leading `u32` kind names. Nothing here trusts the kernel to send what we expect.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracer_common::{
    AF_INET, AF_INET6, BindEvent, COMM_LEN, CreateEvent, EventKind, MarkerEvent, ProcessEvent,
    ReleaseEvent,
};

#[derive(Clone, Copy, Debug)]
pub enum KernelEvent {
    Create(CreateEvent),
    Bind(BindEvent),
    Release(ReleaseEvent),
    Marker(MarkerEvent),
    Exit(ProcessEvent),
    /// Only when following execs (`check`): the process is stopped until continued.
    Exec(ProcessEvent),
    /// Made by the ring reader, not sent as such by the kernel: a DWARF-mode sample of
    /// a send or receive after the socket's PeerConnection ended, unwound (see
    /// [`crate::unwind`]); the record's user stack is that stack.
    IoStack(IoStackEvent),
}

/// A send or receive on a watched socket after its PeerConnection ended, with the id
/// its unwound user stack got (see [`crate::unwind::DWARF_STACK_ID_BASE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoStackEvent {
    pub pid: u32,
    pub tid: u32,
    pub cookie: u64,
    /// The operation's time (`bpf_ktime_get_ns`), as the I/O hooks recorded it.
    pub ts_ns: u64,
    pub user_stack: i32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short for a kind")]
    NoKind(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    /// Stack samples are taken by the ring reader (see `crate::unwind`), never events.
    #[error("a stack sample record is not an event")]
    StackSample,
    /// So are the frames of walked stacks (see `crate::walked`).
    #[error("a walked stack record is not an event")]
    WalkedStack,
    #[error("record of kind {kind:?} has {got} bytes, expected at least {want}")]
    Short {
        kind: EventKind,
        got: usize,
        want: usize,
    },
}

fn read<T: Copy>(bytes: &[u8], kind: EventKind) -> Result<T, DecodeError> {
    let want = size_of::<T>();
    if bytes.len() < want {
        return Err(DecodeError::Short {
            kind,
            got: bytes.len(),
            want,
        });
    }
    // SAFETY: length checked above; T is a plain repr(C) record (any bit pattern valid).
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

impl KernelEvent {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let raw: [u8; 4] = bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(DecodeError::NoKind(bytes.len()))?;
        let kind =
            EventKind::try_from(u32::from_ne_bytes(raw)).map_err(DecodeError::UnknownKind)?;
        Ok(match kind {
            EventKind::Create => Self::Create(read(bytes, kind)?),
            EventKind::Bind => Self::Bind(read(bytes, kind)?),
            EventKind::Release => Self::Release(read(bytes, kind)?),
            EventKind::Marker => Self::Marker(read(bytes, kind)?),
            EventKind::Exit => Self::Exit(read(bytes, kind)?),
            EventKind::Exec => Self::Exec(read(bytes, kind)?),
            EventKind::StackSample => return Err(DecodeError::StackSample),
            EventKind::WalkedStack => return Err(DecodeError::WalkedStack),
        })
    }
}

/// Address family of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Family {
    #[serde(rename = "inet")]
    Inet,
    #[serde(rename = "inet6")]
    Inet6,
    #[serde(rename = "unknown")]
    Other,
}

impl From<u16> for Family {
    fn from(af: u16) -> Self {
        match af {
            AF_INET => Self::Inet,
            AF_INET6 => Self::Inet6,
            _ => Self::Other,
        }
    }
}

/// The local address a bind event carries.
pub fn bind_addr(ev: &BindEvent) -> IpAddr {
    match Family::from(ev.family) {
        Family::Inet6 => IpAddr::V6(Ipv6Addr::from(ev.addr)),
        _ => IpAddr::V4(Ipv4Addr::new(
            ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3],
        )),
    }
}

/// A kernel `comm` as text (up to the first NUL).
pub fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    comm_text(comm).into_owned()
}

/// [`comm_str`] without a copy when the name is UTF-8.
pub fn comm_text(comm: &[u8; COMM_LEN]) -> std::borrow::Cow<'_, str> {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a repr(C) record.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(
            KernelEvent::decode(&[1, 0]).unwrap_err(),
            DecodeError::NoKind(2)
        );
        assert_eq!(
            KernelEvent::decode(&[9, 0, 0, 0]).unwrap_err(),
            DecodeError::UnknownKind(9)
        );
        assert!(matches!(
            KernelEvent::decode(&[1, 0, 0, 0, 0]),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn decodes_a_bind_record() {
        let ev = BindEvent {
            kind: EventKind::Bind as u32,
            pid: 7,
            tid: 8,
            family: AF_INET,
            port: 4242,
            ts_ns: 1,
            cookie: 99,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let KernelEvent::Bind(got) = KernelEvent::decode(&bytes_of(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!((got.pid, got.port, got.cookie), (7, 4242, 99));
        assert_eq!(bind_addr(&got), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
}
