//! Memory-bound kernels (sources `cu/cross_entropy.cu`, `cu/embedding.cu`, `cu/reduce.cu`,
//! `cu/binary.cu`; each file's header describes its kernels' design). Here: their entries and
//! the launch geometry, which the CPU emulation tests share; `launch` (the typed launchers),
//! `refs` (f64 references) and `checks` (the self-test) beside it; their bandwidth benchmark is
//! [`crate::bandwidth`].

pub const CE_ENTRIES: &[&str] = &[
    "ce_fwd_warp_f32", "ce_fwd_block_f32", "ce_fwd_warp_bf16", "ce_fwd_block_bf16",
    "ce_bwd_warp_f32", "ce_bwd_block_f32", "ce_bwd_warp_bf16", "ce_bwd_block_bf16",
    "ce_loss_mean_f32",
];
pub const EMBEDDING_ENTRIES: &[&str] = &["embedding_fwd_f32", "embedding_bwd_atomic_f32", "embedding_bwd_sorted_f32"];
pub const REDUCE_ENTRIES: &[&str] = &["sum_rows_f32", "sum_rows_vec4_f32", "sum_rows_finish_f32", "l2norm_partial_f32", "l2norm_finish_f32"];
pub const BINARY_ENTRIES: &[&str] = &[
    "binary_add_f32", "binary_sub_f32", "binary_mul_f32", "binary_div_f32", "binary_min_f32", "binary_max_f32",
    "binary_add_f32_contig", "binary_sub_f32_contig", "binary_mul_f32_contig", "binary_div_f32_contig",
    "binary_min_f32_contig", "binary_max_f32_contig", "binary_f32_bf16_contig",
];

/// Cross-entropy: vocabularies below this use a warp per row, the rest a block per row.
pub const CE_WARP_MAX_V: usize = 4096;

/// Which cross-entropy kernel shape to launch ([`CeGroup::Auto`] picks by V).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CeGroup {
    Auto,
    Warp,
    Block,
}

impl CeGroup {
    pub fn resolve(self, v: usize) -> CeGroup {
        match self {
            CeGroup::Auto if v < CE_WARP_MAX_V => CeGroup::Warp,
            CeGroup::Auto => CeGroup::Block,
            g => g,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 6] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Min, BinaryOp::Max];

    /// The kernels' op code (`binary_f32_bf16_contig`): the position in [`Self::ALL`].
    pub fn code(self) -> i32 {
        Self::ALL.iter().position(|&o| o == self).expect("every op is in ALL") as i32
    }

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Min => "min",
            BinaryOp::Max => "max",
        }
    }

    /// (value, scale) in f64; min/max follow f32::min/max (a NaN operand yields the other).
    pub fn apply_f64(self, a: f64, b: f64) -> (f64, f64) {
        match self {
            BinaryOp::Add => (a + b, a.abs() + b.abs()),
            BinaryOp::Sub => (a - b, a.abs() + b.abs()),
            BinaryOp::Mul => (a * b, (a * b).abs()),
            BinaryOp::Div => (a / b, (a / b).abs()),
            BinaryOp::Min => (a.min(b), a.min(b).abs()),
            BinaryOp::Max => (a.max(b), a.max(b).abs()),
        }
    }
}

/// Broadcast geometry after dropping size-1 dims and merging dims contiguous in both operands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bcast {
    /// Elements of the (contiguous) output.
    pub n: usize,
    /// a, b and out are all contiguous with the same shape: the vector kernel applies.
    pub contiguous: bool,
    /// Dims [d0, d1, d2, d3] (leading 1s), strides of a and b per dim.
    pub dims: [usize; 4],
    pub sa: [usize; 4],
    pub sb: [usize; 4],
    /// Largest element offset + 1 that a and b read (0 when n = 0).
    pub a_extent: usize,
    pub b_extent: usize,
}

pub fn plan_broadcast(shape: &[usize], sa: &[usize], sb: &[usize]) -> Result<Bcast, String> {
    if shape.len() > 4 || sa.len() != shape.len() || sb.len() != shape.len() {
        return Err(format!("broadcast: shape {shape:?} with strides {sa:?} / {sb:?}: need rank <= 4 and one stride per dim"));
    }
    let n: usize = shape.iter().product();
    let extent = |s: &[usize]| if n == 0 { 0 } else { 1 + shape.iter().zip(s).map(|(d, st)| (d - 1) * st).sum::<usize>() };
    let (a_extent, b_extent) = (extent(sa), extent(sb));
    let mut dims: Vec<(usize, usize, usize)> = Vec::new();
    for i in 0..shape.len() {
        if shape[i] == 1 {
            continue;
        }
        let cur = (shape[i], sa[i], sb[i]);
        match dims.last_mut() {
            Some(last) if last.1 == cur.1 * cur.0 && last.2 == cur.2 * cur.0 => *last = (last.0 * cur.0, cur.1, cur.2),
            _ => dims.push(cur),
        }
    }
    if dims.is_empty() {
        dims.push((1, 0, 0));
    }
    let contiguous = dims.len() == 1 && dims[0].1 == 1 && dims[0].2 == 1;
    let mut p = Bcast { n, contiguous, dims: [1; 4], sa: [0; 4], sb: [0; 4], a_extent, b_extent };
    let off = 4 - dims.len();
    for (i, &(d, a, b)) in dims.iter().enumerate() {
        p.dims[off + i] = d;
        p.sa[off + i] = a;
        p.sb[off + i] = b;
    }
    Ok(p)
}

/// Deterministic embedding backward plan: positions grouped by id (stable), segment starts
/// and the id of each segment. Errors on an id outside 0..v.
/// (perm, segment starts, segment ids).
pub type Segments = (Vec<i32>, Vec<i32>, Vec<i64>);

pub fn embedding_segments(ids: &[i64], v: usize) -> Result<Segments, String> {
    if ids.len() > i32::MAX as usize {
        return Err(format!("embedding backward: {} ids do not fit i32", ids.len()));
    }
    if let Some(p) = ids.iter().position(|&i| i < 0 || i as usize >= v) {
        return Err(format!("embedding backward: id {} at position {p} is outside 0..{v}", ids[p]));
    }
    let mut perm: Vec<i32> = (0..ids.len() as i32).collect();
    perm.sort_by_key(|&p| ids[p as usize]); // stable: positions stay in order within an id
    let (mut seg, mut seg_id) = (Vec::new(), Vec::new());
    for (k, &p) in perm.iter().enumerate() {
        let id = ids[p as usize];
        if seg_id.last() != Some(&id) {
            seg.push(k as i32);
            seg_id.push(id);
        }
    }
    seg.push(perm.len() as i32);
    Ok((perm, seg, seg_id))
}

/// sum_rows launch geometry for x [r, c] on `sm_count` SMs: (vector width, column blocks,
/// splits, rows per split); more than one split sums into [splits, c] partials first.
pub fn sum_rows_geometry(r: usize, c: usize, sm_count: usize) -> (usize, usize, usize, usize) {
    let vw = if c.is_multiple_of(4) { 4 } else { 1 };
    let gx = c.div_ceil(32 * vw).max(1);
    let target = sm_count.max(1) * 8;
    let splits = target.div_ceil(gx).min(r.div_ceil(64)).clamp(1, 65535);
    let rows_per = r.div_ceil(splits).max(1);
    (vw, gx, r.div_ceil(rows_per).max(1), rows_per)
}

/// Blocks of l2norm_partial_f32 for `total` elements.
pub fn l2norm_blocks(total: usize, sm_count: usize) -> usize {
    total.max(1).div_ceil(2048).clamp(1, sm_count.max(1) * 8)
}

/// Launch shape of the binary kernels for plan `p`: ((grid x, grid y), (block x, block y));
/// contiguous operands take the `_contig` kernel's 1-D grid.
pub fn binary_launch(p: &Bcast, sm_count: usize) -> ((usize, usize), (usize, usize)) {
    let sms = sm_count.max(1);
    if p.contiguous {
        return ((p.n.div_ceil(1024).clamp(1, sms * 8), 1), (256, 1));
    }
    let d3 = p.dims[3];
    let outer = p.n / d3.max(1);
    let tx = d3.next_power_of_two().clamp(32, 256);
    let ty = 256 / tx;
    let gx = d3.div_ceil(tx).clamp(1, 1024);
    let gy = outer.div_ceil(ty).clamp(1, 65535).min((sms * 64 / gx).max(1));
    ((gx, gy), (tx, ty))
}

pub mod refs;
#[cfg(test)]
mod tests;

#[cfg(feature = "cuda")]
mod checks;
#[cfg(feature = "cuda")]
mod launch;
#[cfg(feature = "cuda")]
pub use checks::checks;
#[cfg(feature = "cuda")]
pub use launch::{EmbeddingBwdPlan, L2NormPlan};
