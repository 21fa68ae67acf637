//! A small LRU index by bytes, keyed by chunk digest. Values are whatever a tier keeps
//! (the bytes for memory, the size for disk).

use std::collections::{BTreeMap, HashMap};

use estargz::Digest;

/// Entries ordered by last use; the size of each is counted against a byte bound.
#[derive(Debug)]
pub(crate) struct Lru<V> {
    map: HashMap<Digest, (V, u64, u64)>, // value, size, tick
    order: BTreeMap<u64, Digest>,
    tick: u64,
    bytes: u64,
}

impl<V: Clone> Lru<V> {
    pub fn new() -> Self {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn contains(&self, k: &Digest) -> bool {
        self.map.contains_key(k)
    }

    /// The value, marking it most recently used.
    pub fn get(&mut self, k: &Digest) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (v, _, t) = self.map.get_mut(k)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, *k);
        Some(v.clone())
    }

    /// Inserts (or replaces) and returns what had to be evicted to stay under `max_bytes`
    /// (never the entry just inserted, unless it alone is larger than the bound).
    pub fn insert(&mut self, k: Digest, v: V, size: u64, max_bytes: u64) -> Vec<(Digest, V)> {
        self.remove(&k);
        self.tick += 1;
        self.map.insert(k, (v, size, self.tick));
        self.order.insert(self.tick, k);
        self.bytes += size;
        let mut evicted = Vec::new();
        while self.bytes > max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((v, size, _)) = self.map.remove(&oldest) {
                self.bytes -= size;
                evicted.push((oldest, v));
            }
        }
        evicted
    }

    pub fn remove(&mut self, k: &Digest) -> Option<V> {
        let (v, size, t) = self.map.remove(k)?;
        self.order.remove(&t);
        self.bytes -= size;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: u8) -> Digest {
        Digest([i; 32])
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let mut l = Lru::new();
        assert!(l.insert(d(1), 1, 40, 100).is_empty());
        assert!(l.insert(d(2), 2, 40, 100).is_empty());
        assert_eq!(l.get(&d(1)), Some(1)); // 2 is now the oldest
        let ev = l.insert(d(3), 3, 40, 100);
        assert_eq!(ev, vec![(d(2), 2)]);
        assert_eq!(l.bytes(), 80);
        assert!(l.contains(&d(1)) && l.contains(&d(3)));
        // An entry larger than the bound evicts everything, itself included.
        let ev = l.insert(d(4), 4, 500, 100);
        assert_eq!(ev.len(), 3);
        assert_eq!(l.len(), 0);
    }
}
