//! FNV-1a fingerprints of a run's inputs, saved in its checkpoints so that `--resume` on other
//! data (or other models) is a clear error instead of a silent mix of two runs.

use serde::{Deserialize, Serialize};

pub(crate) struct Fnv(u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub fn eat(&mut self, v: u64) {
        for b in v.to_le_bytes() {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }

    pub fn tokens(&mut self, ids: &[u32]) {
        self.eat(ids.len() as u64);
        ids.iter().for_each(|&t| self.eat(t as u64));
    }

    /// Every element's bits (f32 values: weights).
    pub fn floats(&mut self, v: &[f32]) {
        self.eat(v.len() as u64);
        // Two values per word: half the work of one eat each.
        for pair in v.chunks(2) {
            let lo = pair[0].to_bits() as u64;
            let hi = pair.get(1).map_or(0, |x| x.to_bits() as u64);
            self.eat(lo | hi << 32);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// How many items a run was trained on, and their hash.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct DataFingerprint {
    pub items: usize,
    pub hash: u64,
}

impl std::fmt::Display for DataFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} items (hash {:016x})", self.items, self.hash)
    }
}
