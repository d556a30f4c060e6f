//! The live-socket table: every UDP socket we know to be open, by cookie.
use std::net::IpAddr;

use rustc_hash::FxHashMap;

use crate::events::Family;

/// How we learned of a socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Its creation was traced.
    #[default]
    Traced,
    /// It existed when tracing started (sock_diag inventory): creator unknown.
    Preexisting,
}

#[derive(Clone, Debug)]
pub struct SocketInfo {
    pub origin: Origin,
    pub pid: u32,
    pub tid: u32,
    pub fd: Option<i32>,
    pub family: Family,
    pub local: Option<(IpAddr, u16)>,
    /// Monotonic creation time (ns), when traced.
    pub created_ns: Option<u64>,
    pub pc_id: u64,
}

/// Keys are kernel socket cookies (a counter), not input an attacker picks: a fast
/// hash, not SipHash.
#[derive(Default)]
pub struct SocketTable {
    by_cookie: FxHashMap<u64, SocketInfo>,
}

impl SocketTable {
    pub fn insert(&mut self, cookie: u64, info: SocketInfo) {
        self.by_cookie.insert(cookie, info);
    }

    pub fn get(&self, cookie: u64) -> Option<&SocketInfo> {
        self.by_cookie.get(&cookie)
    }

    pub fn set_local(&mut self, cookie: u64, addr: IpAddr, port: u16) {
        if let Some(s) = self.by_cookie.get_mut(&cookie) {
            s.local = Some((addr, port));
        }
    }

    pub fn remove(&mut self, cookie: u64) -> Option<SocketInfo> {
        self.by_cookie.remove(&cookie)
    }

    pub fn len(&self) -> usize {
        self.by_cookie.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_cookie.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &SocketInfo)> {
        self.by_cookie.iter().map(|(c, s)| (*c, s))
    }
}
