//! The live sockets, by cookie, in memory that grows by small steps. A `HashMap` of
//! whole socket records doubles its table as it grows: for a moment both tables live,
//! and the new one is half empty, which at the daemon's scale is most of its memory.
//! Here records sit in fixed-size chunks (freed slots reused) and only a small index
//! (cookie → slot) is a hash table.
// Keys are the kernel's socket cookies, pids and small ids: a fast hash, not SipHash.
use rustc_hash::FxHashMap as HashMap;

use super::Socket;

/// Records per chunk: small enough that a chunk is a rounding error, large enough that
/// the chunk list stays short.
const CHUNK: usize = 256;

#[derive(Debug, Default)]
pub(super) struct SocketTable {
    index: HashMap<u64, u32>,
    chunks: Vec<Box<[Option<Socket>]>>,
    free: Vec<u32>,
}

impl SocketTable {
    fn slot(&self, i: u32) -> &Option<Socket> {
        let i = i as usize;
        &self.chunks[i / CHUNK][i % CHUNK]
    }

    fn slot_mut(&mut self, i: u32) -> &mut Option<Socket> {
        let i = i as usize;
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn contains_key(&self, cookie: &u64) -> bool {
        self.index.contains_key(cookie)
    }

    pub fn get(&self, cookie: &u64) -> Option<&Socket> {
        let i = *self.index.get(cookie)?;
        self.slot(i).as_ref()
    }

    pub fn get_mut(&mut self, cookie: &u64) -> Option<&mut Socket> {
        let i = *self.index.get(cookie)?;
        self.slot_mut(i).as_mut()
    }

    /// Stores `sock` under `cookie`, replacing what was there.
    pub fn insert(&mut self, cookie: u64, sock: Socket) {
        if let Some(&i) = self.index.get(&cookie) {
            *self.slot_mut(i) = Some(sock);
            return;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.chunks.len() * CHUNK)
                    .expect("fewer than 2^32 sockets tracked (the daemon caps them far lower)");
                self.chunks
                    .push(std::iter::repeat_with(|| None).take(CHUNK).collect());
                self.free.extend((i + 1..i + CHUNK as u32).rev());
                i
            }
        };
        *self.slot_mut(i) = Some(sock);
        self.index.insert(cookie, i);
    }

    pub fn remove(&mut self, cookie: &u64) -> Option<Socket> {
        let i = self.index.remove(cookie)?;
        self.free.push(i);
        let sock = self.slot_mut(i).take();
        self.shrink();
        sock
    }

    /// Gives back the memory of a table that emptied (a daemon after a burst).
    fn shrink(&mut self) {
        if self.index.is_empty() && self.chunks.len() > 1 {
            self.chunks.clear();
            self.free.clear();
            self.index.shrink_to_fit();
            self.free.shrink_to_fit();
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Socket)> {
        self.index
            .iter()
            .filter_map(|(c, &i)| Some((c, self.slot(i).as_ref()?)))
    }

    pub fn values(&self) -> impl Iterator<Item = &Socket> {
        self.iter().map(|(_, s)| s)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&u64, &Socket) -> bool) {
        let gone: Vec<u64> = self
            .iter()
            .filter(|(c, s)| !keep(c, s))
            .map(|(c, _)| *c)
            .collect();
        for c in gone {
            self.remove(&c);
        }
    }
}
