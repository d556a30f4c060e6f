//! What the kernel says about why a leaked socket is still open, as found at the
//! verdict (gathered by `crate::explain`): who holds it, the epoll sets it is in, and
//! what was sent and received on it.
use crate::symbolize::Frame;

/// A (process, fd) that refers to the socket.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    pub fd: i32,
}

/// An epoll set the socket is registered in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EpollWatch {
    pub pid: u32,
    /// The epoll instance's fd in that process.
    pub epoll_fd: i32,
    /// The fd the socket was registered under.
    pub target_fd: i32,
    /// The events it is registered for (`EPOLLIN` = 0x1, `EPOLLOUT` = 0x4, ...).
    pub events: u32,
}

/// Why a leaked socket is still open, as its I/O tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    /// A task still sends or receives on it after its PeerConnection ended.
    Active,
    /// Nothing moved on it since, and the last thing done on it was a read that would
    /// block: a task is parked on it and nothing will wake it.
    Awaited,
    /// No I/O since, and no read pending: only a reference keeps it open.
    Held,
}

impl LeakKind {
    /// One word, as in JSON.
    pub fn word(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Awaited => "awaited",
            Self::Held => "held",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Active => "active: a task still sends or receives on it",
            Self::Awaited => "awaited: a task is parked on a read nothing will wake",
            Self::Held => "held: no I/O and no read pending, only a reference keeps it",
        }
    }
}

/// The I/O seen on a socket, the evidence for its [`LeakKind`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IoEvidence {
    /// Successful sends after its PeerConnection ended.
    pub sends_after_end: u64,
    /// Successful receives after it ended.
    pub recvs_after_end: u64,
    /// Receives that would have blocked (`EAGAIN`) after it ended.
    pub recvs_would_block_after_end: u64,
    /// Other failed sends and receives after it ended.
    pub errors_after_end: u64,
    /// The last operation seen on it, whenever it was: `send` or `recv`.
    pub last_op: Option<String>,
    /// Its result: bytes or messages, or a negative errno (-11: would block).
    pub last_result: Option<i64>,
    /// How long before the verdict it was.
    pub last_ago_ns: Option<u64>,
    /// When it was, and when a send or receive last succeeded (CLOCK_MONOTONIC ns).
    #[serde(default)]
    pub last_at_ns: Option<u64>,
    #[serde(default)]
    pub last_ok_at_ns: Option<u64>,
    pub last_tid: Option<u32>,
    /// The user stack of the last operation after the end, innermost first.
    pub last_stack: Vec<Frame>,
    /// When the operation `last_stack` belongs to happened (CLOCK_MONOTONIC ns):
    /// `last_at_ns` as a rule; earlier when the process's stacks are DWARF-unwound
    /// samples, which are rate-limited per socket (4 back to back, then one every
    /// 250 ms: the last operation's own was not sampled then). `None`: no stack.
    #[serde(default)]
    pub last_stack_at_ns: Option<u64>,
}
