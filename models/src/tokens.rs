//! A tokenized corpus on disk, read through a memory map: pretraining samples windows from it
//! without loading it. Layout: 8-byte magic `IGPTTOK1`, u32 bytes per token (2 or 4), u32 zero,
//! u64 token count, then the tokens little-endian.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"IGPTTOK1";
const HEADER: usize = 24;

pub struct TokenFile {
    path: PathBuf,
    map: memmap2::Mmap,
    width: usize,
    len: usize,
}

impl TokenFile {
    /// Write `tokens` atomically, 2 bytes each when the vocabulary allows it.
    pub fn write(path: &Path, tokens: &[u32]) -> Result<()> {
        let width = if tokens.iter().all(|&t| t <= u16::MAX as u32) { 2 } else { 4 };
        let mut bytes = Vec::with_capacity(HEADER + width * tokens.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(width as u32).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
        for &t in tokens {
            if width == 2 {
                bytes.extend_from_slice(&(t as u16).to_le_bytes());
            } else {
                bytes.extend_from_slice(&t.to_le_bytes());
            }
        }
        engine::safetensors::write_atomic(path, &bytes)?;
        Ok(())
    }

    pub fn open(path: &Path) -> Result<TokenFile> {
        let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open token file", path.display()))?;
        // SAFETY: read-only map of a file we replace only by rename, never in place.
        let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("{}: cannot map", path.display()))?;
        if map.len() < HEADER || &map[..8] != MAGIC {
            bail!("{}: not a token file (bad magic)", path.display());
        }
        let width = u32::from_le_bytes(map[8..12].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(map[16..24].try_into().unwrap()) as usize;
        if width != 2 && width != 4 {
            bail!("{}: token width {width} (expected 2 or 4)", path.display());
        }
        if len.checked_mul(width).and_then(|b| b.checked_add(HEADER)) != Some(map.len()) {
            bail!("{}: truncated or padded: header says {len} tokens of {width} bytes, file has {} bytes", path.display(), map.len());
        }
        Ok(TokenFile { path: path.to_path_buf(), map, width, len })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> u32 {
        let o = HEADER + i * self.width;
        match self.width {
            2 => u16::from_le_bytes([self.map[o], self.map[o + 1]]) as u32,
            _ => u32::from_le_bytes(self.map[o..o + 4].try_into().unwrap()),
        }
    }

    /// Tokens `start..start+len` as i64 ids.
    pub fn window(&self, start: usize, len: usize) -> Vec<i64> {
        (start..start + len).map(|i| self.get(i) as i64).collect()
    }
}
