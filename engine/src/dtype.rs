//! Element types: f32 computes; bf16 and f16 store and convert; i64 holds token ids.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    F16,
    I64,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::I64 => 8,
        }
    }
    pub fn is_float(self) -> bool {
        !matches!(self, DType::I64)
    }
}
