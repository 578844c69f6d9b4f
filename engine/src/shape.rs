//! Shapes and strided layouts. Views (reshape, permute, narrow, broadcast) only rewrite a `Layout`;
//! the storage underneath is shared and never copied.

use crate::{Error, Result};

/// How a tensor's elements sit in its storage: element `idx` lives at `offset + Σ idx[d]·strides[d]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub offset: usize,
}

/// Row-major (C order) strides for a shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: 0 }
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Row-major with no gaps (size-1 dims may carry any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for d in (0..self.rank()).rev() {
            if self.shape[d] != 1 && self.strides[d] != expected {
                return false;
            }
            expected *= self.shape[d];
        }
        true
    }

    /// Calls `f(start, len, stride)` for each run along the last dim, in row-major order: the
    /// elements are at `start + t·stride`, t < len (rank 0: one run of one element). Strided copies
    /// walk runs instead of single offsets, so a unit-stride last dim becomes slice copies.
    pub fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize)) {
        let r = self.rank();
        if r == 0 {
            f(self.offset, 1, 1);
            return;
        }
        if self.numel() == 0 {
            return;
        }
        let (len, stride) = (self.shape[r - 1], self.strides[r - 1]);
        let mut index = vec![0usize; r - 1];
        let mut start = self.offset;
        loop {
            f(start, len, stride);
            let mut d = r - 1;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                index[d] += 1;
                start += self.strides[d];
                if index[d] < self.shape[d] {
                    break;
                }
                start -= self.strides[d] * index[d];
                index[d] = 0;
            }
        }
    }

    /// Storage offsets of every element in row-major order (for strided reads).
    pub fn offsets(&self) -> StridedOffsets<'_> {
        StridedOffsets { layout: self, index: vec![0; self.rank()], next: self.offset, left: self.numel() }
    }

    /// A view with the same elements under a new shape; `None` when the strides cannot express it.
    pub fn reshaped(&self, shape: &[usize]) -> Option<Layout> {
        if self.is_contiguous() {
            return Some(Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: self.offset });
        }
        None
    }

    /// How a GEMM can read this view's matrices [.., rows, cols] where they lie: `Some(false)`
    /// row-major, `Some(true)` each stored transposed ([cols, rows]); in both cases from offset 0
    /// and back to back in batch order, so that a buffer of exactly `numel` elements holds them.
    /// None for anything else (narrowed, broadcast, permuted batch dims).
    pub fn gemm_matrices(&self) -> Option<bool> {
        let r = self.rank();
        if r < 2 || self.offset != 0 {
            return None;
        }
        let (rows, cols, sr, sc) = (self.shape[r - 2], self.shape[r - 1], self.strides[r - 2], self.strides[r - 1]);
        let transposed = if (sc == 1 || cols == 1) && (sr == cols || rows == 1) {
            false
        } else if (sr == 1 || rows == 1) && (sc == rows || cols == 1) {
            true
        } else {
            return None;
        };
        let mut expected = rows * cols;
        for d in (0..r - 2).rev() {
            if self.shape[d] != 1 && self.strides[d] != expected {
                return None;
            }
            expected *= self.shape[d];
        }
        Some(transposed)
    }

    /// Where a view [.., rows, cols] lies as evenly spaced blocks (a KV cache's keys: one block
    /// per head, `rows` rows of `cols` contiguous): Some((offset of block 0, elements between
    /// blocks)) when the rows are dense and the leading dims step evenly without overlap; None
    /// otherwise. One block reads as `rows * cols` apart.
    pub fn even_blocks(&self, rows: usize, cols: usize) -> Option<(usize, usize)> {
        let r = self.rank();
        if r < 2 || self.shape[r - 2..] != [rows, cols] || (cols > 1 && self.strides[r - 1] != 1) || (rows > 1 && self.strides[r - 2] != cols) {
            return None;
        }
        // Leading dims, size-1 dropped, outermost first; each must step by the next one's extent.
        let lead: Vec<(usize, usize)> = (0..r - 2).filter(|&d| self.shape[d] > 1).map(|d| (self.shape[d], self.strides[d])).collect();
        let Some(&(_, step)) = lead.last() else { return Some((self.offset, rows * cols)) };
        let even = lead.windows(2).all(|w| w[0].1 == w[1].0 * w[1].1);
        (even && step >= rows * cols).then_some((self.offset, step))
    }

    pub fn permuted(&self, perm: &[usize]) -> Result<Layout> {
        let mut seen = vec![false; self.rank()];
        if perm.len() != self.rank() || perm.iter().any(|&p| p >= self.rank() || std::mem::replace(&mut seen[p], true)) {
            return Err(Error::shape("permute", format!("{perm:?} is not a permutation of the dims of {:?}", self.shape)));
        }
        Ok(Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        })
    }

    pub fn narrowed(&self, dim: usize, start: usize, len: usize) -> Result<Layout> {
        if dim >= self.rank() || start + len > self.shape[dim] {
            return Err(Error::shape("narrow", format!("dim {dim} range {start}..{} out of {:?}", start + len, self.shape)));
        }
        let mut l = self.clone();
        l.offset += start * self.strides[dim];
        l.shape[dim] = len;
        Ok(l)
    }

    /// Broadcast to `shape` (numpy rules, aligned on the right) with zero strides on expanded dims.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Layout> {
        let err = || Error::shape("broadcast", format!("cannot broadcast {:?} to {:?}", self.shape, shape));
        if shape.len() < self.rank() {
            return Err(err());
        }
        let lead = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for d in 0..self.rank() {
            let (from, to) = (self.shape[d], shape[lead + d]);
            strides[lead + d] = if from == to {
                self.strides[d]
            } else if from == 1 {
                0
            } else {
                return Err(err());
            };
        }
        Ok(Layout { shape: shape.to_vec(), strides, offset: self.offset })
    }
}

/// The shape two operands broadcast to (numpy rules).
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(Error::shape(op, format!("cannot broadcast {a:?} with {b:?}"))),
        };
    }
    Ok(out)
}

/// Iterator over storage offsets in row-major element order.
pub struct StridedOffsets<'a> {
    layout: &'a Layout,
    index: Vec<usize>,
    next: usize,
    left: usize,
}

impl Iterator for StridedOffsets<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let current = self.next;
        // Odometer increment from the last dim.
        for d in (0..self.index.len()).rev() {
            self.index[d] += 1;
            self.next += self.layout.strides[d];
            if self.index[d] < self.layout.shape[d] {
                break;
            }
            self.next -= self.layout.strides[d] * self.index[d];
            self.index[d] = 0;
        }
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_blocks_finds_a_kv_cache_view_and_refuses_the_rest() {
        // A cache [B=2, H=3, cap=10, D=4] viewed at its first 7 positions: heads 40 apart.
        let cache = Layout::contiguous(&[2, 3, 10, 4]);
        assert_eq!(cache.narrowed(2, 0, 7).unwrap().even_blocks(7, 4), Some((0, 40)));
        assert_eq!(cache.even_blocks(10, 4), Some((0, 40)));
        // One head (leading dims all 1): a block of its own size.
        assert_eq!(Layout::contiguous(&[1, 1, 5, 4]).even_blocks(5, 4), Some((0, 20)));
        // One position: the rows' stride does not matter.
        assert_eq!(cache.narrowed(2, 3, 1).unwrap().even_blocks(1, 4), Some((12, 40)));
        // Not the shape asked for, rows not dense (a later window), heads not evenly spaced
        // (a narrowed head dim), overlapping (broadcast) heads, or a column stride.
        assert_eq!(cache.even_blocks(7, 4), None);
        assert_eq!(cache.narrowed(3, 0, 2).unwrap().even_blocks(10, 2), None);
        assert_eq!(cache.narrowed(1, 0, 2).unwrap().even_blocks(10, 4), None);
        assert_eq!(Layout::contiguous(&[1, 10, 4]).broadcast_to(&[3, 10, 4]).unwrap().even_blocks(10, 4), None);
        assert_eq!(Layout::contiguous(&[3, 4, 10]).permuted(&[0, 2, 1]).unwrap().even_blocks(10, 4), None);
        // q, k, v split from one [B, T, 3, H, D] projection: heads D apart, rows 3HD apart.
        let qkv = Layout::contiguous(&[2, 5, 3, 4, 8]).permuted(&[2, 0, 3, 1, 4]).unwrap().narrowed(0, 1, 1).unwrap();
        let k = Layout { shape: qkv.shape[1..].to_vec(), strides: qkv.strides[1..].to_vec(), offset: qkv.offset };
        assert_eq!(k.even_blocks(5, 8), None);
    }

    #[test]
    fn gemm_matrices_reads_row_major_and_transposed_views_in_place() {
        let l = Layout::contiguous(&[3, 4, 5]);
        assert_eq!(l.gemm_matrices(), Some(false));
        // The transpose of each matrix (a weight's .t(), K's .t() in Q·Kᵀ).
        assert_eq!(l.permuted(&[0, 2, 1]).unwrap().gemm_matrices(), Some(true));
        assert_eq!(Layout::contiguous(&[4, 5]).permuted(&[1, 0]).unwrap().gemm_matrices(), Some(true));
        // Size-1 dims do not matter; a [1, n] row is both.
        assert_eq!(Layout::contiguous(&[1, 4, 1, 5]).gemm_matrices(), Some(false));
        assert_eq!(Layout::contiguous(&[1, 5]).gemm_matrices(), Some(false));
        // Narrowed (offset or gaps), broadcast and batch-permuted views are not.
        assert_eq!(l.narrowed(2, 1, 3).unwrap().gemm_matrices(), None);
        assert_eq!(l.narrowed(0, 1, 2).unwrap().gemm_matrices(), None);
        assert_eq!(Layout::contiguous(&[4, 5]).broadcast_to(&[3, 4, 5]).unwrap().gemm_matrices(), None);
        assert_eq!(l.permuted(&[1, 0, 2]).unwrap().gemm_matrices(), None);
        assert_eq!(Layout::contiguous(&[2, 3, 4, 5]).permuted(&[1, 0, 3, 2]).unwrap().gemm_matrices(), None);
        // Transposed per matrix with the batch dims in order: [2, 3, 5, 4] from [2, 3, 4, 5].
        assert_eq!(Layout::contiguous(&[2, 3, 4, 5]).permuted(&[0, 1, 3, 2]).unwrap().gemm_matrices(), Some(true));
    }

    #[test]
    fn runs_match_offsets() {
        let base = Layout { shape: vec![2, 3, 4, 5], strides: contiguous_strides(&[2, 3, 4, 5]), offset: 7 };
        let views = [
            base.clone(),
            Layout { shape: vec![3, 2, 5, 4], strides: vec![20, 60, 1, 5], offset: 7 },
            Layout { shape: vec![2, 1, 4, 3], strides: vec![60, 99, 5, 1], offset: 9 },
            Layout { shape: vec![], strides: vec![], offset: 4 },
            Layout { shape: vec![2, 0, 3], strides: vec![3, 3, 1], offset: 0 },
        ];
        for l in views {
            let mut got = Vec::new();
            l.for_each_run(|s, n, st| got.extend((0..n).map(|t| s + t * st)));
            assert_eq!(got, l.offsets().collect::<Vec<_>>(), "{l:?}");
        }
    }

    #[test]
    fn offsets_follow_strides() {
        let l = Layout::contiguous(&[2, 3]).permuted(&[1, 0]).unwrap();
        assert_eq!(l.offsets().collect::<Vec<_>>(), vec![0, 3, 1, 4, 2, 5]);
        assert!(!l.is_contiguous());
        let b = Layout::contiguous(&[3]).broadcast_to(&[2, 3]).unwrap();
        assert_eq!(b.offsets().collect::<Vec<_>>(), vec![0, 1, 2, 0, 1, 2]);
        let n = Layout::contiguous(&[4, 5]).narrowed(1, 2, 2).unwrap();
        assert_eq!(n.offsets().collect::<Vec<_>>(), vec![2, 3, 7, 8, 12, 13, 17, 18]);
    }

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shape("t", &[4, 1, 3], &[5, 1]).unwrap(), vec![4, 5, 3]);
        assert!(broadcast_shape("t", &[2, 3], &[4]).is_err());
        assert!(Layout::contiguous(&[2]).broadcast_to(&[3]).is_err());
    }
}
