//! `Tensor`: a cheap handle (an `Arc`) to shared storage, a strided layout and, when gradients are
//! being recorded, the op that produced it.

use crate::autograd::{grad_enabled, Op};
use crate::shape::{numel, Layout};
use crate::storage::{CpuStorage, Storage};
use crate::{cuda, DType, Device, Error, Result};
use half::{bf16, f16};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(usize);

impl TensorId {
    fn next() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        TensorId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

pub(crate) struct Inner {
    id: TensorId,
    storage: Arc<RwLock<Storage>>,
    layout: Layout,
    dtype: DType,
    device: Device,
    /// A leaf whose gradient is wanted (a parameter).
    is_var: bool,
    /// Gradients flow through this tensor: a var, or computed from one while recording.
    tracked: bool,
    /// How it was computed. `backward` takes it out, which frees the graph as it goes.
    op: Mutex<Option<Op>>,
}

impl Drop for Inner {
    /// Unlink the recorded graph iteratively: dropping it recursively (tensor -> op -> input
    /// tensor -> ...) overflows the stack on long chains that never went through `backward`.
    fn drop(&mut self) {
        let Some(op) = self.op.get_mut().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let mut pending = op.into_tensors();
        while let Some(t) = pending.pop() {
            // Only the last handle owns the node; otherwise dropping `t` just decrements a count.
            if let Ok(mut inner) = Arc::try_unwrap(t.0) {
                if let Some(op) = inner.op.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
                    pending.extend(op.into_tensors());
                }
            }
        }
    }
}

/// Element types that can build a tensor from a `Vec`.
pub trait Element: Copy + 'static {
    const DTYPE: DType;
    fn into_storage(v: Vec<Self>) -> CpuStorage;
}
macro_rules! element {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$d(v)
            }
        }
    };
}
element!(f32, F32);
element!(bf16, BF16);
element!(f16, F16);
element!(i64, I64);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?}, {:?}{})", self.shape(), self.dtype(), self.device(), if self.is_var() { ", var" } else { "" })
    }
}

impl Tensor {
    // ---- construction ----

    pub(crate) fn from_parts(storage: Storage, layout: Layout, tracked: bool, op: Option<Op>, is_var: bool) -> Tensor {
        Tensor(Arc::new(Inner {
            id: TensorId::next(),
            dtype: storage.dtype(),
            device: storage.device(),
            storage: Arc::new(RwLock::new(storage)),
            layout,
            is_var,
            tracked,
            op: Mutex::new(op),
        }))
    }

    /// A fresh contiguous CPU tensor.
    pub(crate) fn from_cpu(storage: CpuStorage, shape: &[usize]) -> Tensor {
        debug_assert_eq!(storage.len(), numel(shape));
        Tensor::from_parts(Storage::Cpu(storage), Layout::contiguous(shape), false, None, false)
    }

    /// The result of an op: records `op()` only when recording is on and an input is tracked, so
    /// no-grad code builds no graph and keeps no activations alive.
    pub(crate) fn from_op(storage: CpuStorage, shape: &[usize], inputs: &[&Tensor], op: impl FnOnce() -> Op) -> Tensor {
        let t = Tensor::from_cpu(storage, shape);
        t.with_op(inputs, op)
    }

    /// Attach an op to a freshly built tensor (see `from_op`).
    pub(crate) fn with_op(self, inputs: &[&Tensor], op: impl FnOnce() -> Op) -> Tensor {
        if !(grad_enabled() && inputs.iter().any(|t| t.tracked())) {
            return self;
        }
        self.sharing(self.layout().clone(), false, Some(op()))
    }

    /// A view sharing this tensor's storage under a new layout.
    pub(crate) fn view(&self, layout: Layout, op: impl FnOnce() -> Op) -> Tensor {
        let op = (grad_enabled() && self.tracked()).then(op);
        self.sharing(layout, false, op)
    }

    /// A new handle on this tensor's storage: a parameter (`is_var`), a recorded result (`op`), or
    /// a plain untracked tensor (neither).
    fn sharing(&self, layout: Layout, is_var: bool, op: Option<Op>) -> Tensor {
        Tensor(Arc::new(Inner {
            id: TensorId::next(),
            storage: self.0.storage.clone(),
            layout,
            dtype: self.dtype(),
            device: self.device(),
            is_var,
            tracked: is_var || op.is_some(),
            op: Mutex::new(op),
        }))
    }

    pub fn new<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::shape("Tensor::new", format!("{} elements for shape {shape:?}", data.len())));
        }
        Ok(Tensor::from_cpu(T::into_storage(data), shape))
    }

    pub fn scalar(v: f32) -> Tensor {
        Tensor::from_cpu(CpuStorage::F32(vec![v]), &[])
    }

    pub fn full(shape: &[usize], v: f32) -> Tensor {
        Tensor::from_cpu(CpuStorage::F32(vec![v; numel(shape)]), shape)
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// f32 zeros made where they are needed (no host buffer for a device tensor).
    pub fn zeros_on(shape: &[usize], device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Ok(Tensor::zeros(shape)),
            Device::Cuda(n) => cuda::ops::zeros_on(shape, n),
        }
    }

    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// Normal(mean, std) samples.
    pub fn randn(shape: &[usize], mean: f32, std: f32, rng: &mut impl Rng) -> Tensor {
        let data = (0..numel(shape))
            .map(|_| {
                let z: f32 = StandardNormal.sample(rng);
                mean + std * z
            })
            .collect();
        Tensor::from_cpu(CpuStorage::F32(data), shape)
    }

    /// Uniform samples in [lo, hi).
    pub fn rand_uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut impl Rng) -> Tensor {
        let data = (0..numel(shape)).map(|_| rng.gen_range(lo..hi)).collect();
        Tensor::from_cpu(CpuStorage::F32(data), shape)
    }

    /// 0, 1, ..., n-1 as i64 ids.
    pub fn arange(n: usize) -> Tensor {
        Tensor::from_cpu(CpuStorage::I64((0..n as i64).collect()), &[n])
    }

    // ---- accessors ----

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn shape(&self) -> &[usize] {
        &self.0.layout.shape
    }
    pub fn rank(&self) -> usize {
        self.0.layout.rank()
    }
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn device(&self) -> Device {
        self.0.device
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    pub fn is_var(&self) -> bool {
        self.0.is_var
    }
    /// Whether gradients flow through this tensor.
    pub fn tracked(&self) -> bool {
        self.0.tracked
    }
    /// Size of `dim`, which may be negative (counted from the end).
    pub fn dim(&self, dim: isize) -> Result<usize> {
        Ok(self.shape()[self.resolve_dim(dim)?])
    }
    pub(crate) fn resolve_dim(&self, dim: isize) -> Result<usize> {
        let r = self.rank() as isize;
        let d = if dim < 0 { dim + r } else { dim };
        if d < 0 || d >= r {
            return Err(Error::shape("dim", format!("dim {dim} out of range for shape {:?}", self.shape())));
        }
        Ok(d as usize)
    }
    pub(crate) fn take_op(&self) -> Option<Op> {
        self.0.op.lock().unwrap().take()
    }
    pub(crate) fn has_op(&self) -> bool {
        self.0.op.lock().unwrap().is_some()
    }
    /// Do two tensors share storage (one is a view of the other)?
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }
    /// How many handles (clones, and recorded ops that saved it) keep this tensor alive. For tests
    /// and leak diagnostics: e.g. an activation saved by a recorded op counts 2 until `backward`
    /// (or dropping the graph) releases it; under `no_grad` nothing saves it.
    pub fn strong_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    // ---- autograd handles ----

    /// A leaf parameter sharing this tensor's storage, whose gradient `backward` returns.
    pub fn var(&self) -> Tensor {
        self.sharing(self.layout().clone(), true, None)
    }

    /// The same data, cut off from the graph.
    pub fn detach(&self) -> Tensor {
        self.sharing(self.layout().clone(), false, None)
    }

    // ---- storage access ----

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().unwrap()
    }
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Storage> {
        self.0.storage.write().unwrap()
    }

    /// The f32 CPU elements in row-major order: borrowed when contiguous, gathered otherwise.
    /// bf16 and f16 are widened (exactly) into an owned buffer: every op computes in f32.
    pub(crate) fn cpu_f32(&self, op: &'static str) -> Result<CpuSlice<'_, f32>> {
        self.expect_float_on_cpu(op)?;
        let guard = self.read();
        let l = self.layout();
        let Storage::Cpu(CpuStorage::F32(v)) = &*guard else {
            let Storage::Cpu(s) = &*guard else { unreachable!("checked: on the CPU") };
            return Ok(CpuSlice::Owned(f32s(s.copy_as(l, DType::F32))));
        };
        if l.is_contiguous() {
            return Ok(CpuSlice::View(guard, l.offset, l.numel()));
        }
        // Run by run along the last dim (slice copies when it has unit stride).
        let mut out = Vec::with_capacity(l.numel());
        l.for_each_run(|s, n, st| {
            if st == 1 {
                out.extend_from_slice(&v[s..s + n]);
            } else {
                out.extend((0..n).map(|t| v[s + t * st]));
            }
        });
        Ok(CpuSlice::Owned(out))
    }

    /// The whole f32 CPU storage (for kernels that walk the strides themselves); bf16 and f16
    /// storage widened into an owned copy at the same offsets.
    pub(crate) fn cpu_f32_storage(&self, op: &'static str) -> Result<CpuSlice<'_, f32>> {
        self.expect_float_on_cpu(op)?;
        let guard = self.read();
        let Storage::Cpu(s) = &*guard else { unreachable!("checked: on the CPU") };
        if s.dtype() != DType::F32 {
            return Ok(CpuSlice::Owned(f32s(s.gather_as(0..s.len(), DType::F32))));
        }
        let len = s.len();
        Ok(CpuSlice::View(guard, 0, len))
    }

    fn expect_float_on_cpu(&self, op: &'static str) -> Result<()> {
        if self.device() != Device::Cpu {
            return Err(Error::NotOnDevice { op, device: self.device() });
        }
        if !self.dtype().is_float() {
            return Err(Error::DType { op, expected: DType::F32, got: self.dtype() });
        }
        Ok(())
    }

    /// i64 ids in row-major order.
    pub(crate) fn cpu_i64(&self, op: &'static str) -> Result<Vec<i64>> {
        self.expect(op, DType::I64)?;
        let guard = self.read();
        let Storage::Cpu(CpuStorage::I64(v)) = &*guard else { unreachable!() };
        Ok(self.layout().offsets().map(|o| v[o]).collect())
    }

    /// This tensor, if its elements are i64 ids (on any device).
    pub(crate) fn expect_i64(&self, op: &'static str) -> Result<&Tensor> {
        if self.dtype() != DType::I64 {
            return Err(Error::DType { op, expected: DType::I64, got: self.dtype() });
        }
        Ok(self)
    }

    pub(crate) fn expect(&self, op: &'static str, dtype: DType) -> Result<()> {
        if self.device() != Device::Cpu {
            return Err(Error::NotOnDevice { op, device: self.device() });
        }
        if self.dtype() != dtype {
            return Err(Error::DType { op, expected: dtype, got: self.dtype() });
        }
        Ok(())
    }

    /// Overwrite this tensor's elements in place (parameters, optimizer state). Not recorded.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return Err(Error::shape("assign", format!("{:?} into {:?}", src.shape(), self.shape())));
        }
        if self.device().is_cuda() {
            let src = if src.dtype() == self.dtype() { src.clone() } else { src.converted(self.dtype())? };
            return cuda::ops::assign(self, &src.to_device(self.device())?);
        }
        let data = src.converted(self.dtype())?.contiguous_storage()?;
        let layout = self.layout().clone();
        let mut guard = self.write();
        let Storage::Cpu(dst) = &mut *guard else { return Err(Error::NotOnDevice { op: "assign", device: self.device() }) };
        // Run by run along the last dim: slice copies where it has unit stride.
        macro_rules! copy {
            ($d:expr, $s:expr) => {{
                let mut i = 0;
                layout.for_each_run(|start, n, st| {
                    if st == 1 {
                        $d[start..start + n].copy_from_slice(&$s[i..i + n]);
                    } else {
                        for t in 0..n {
                            $d[start + t * st] = $s[i + t];
                        }
                    }
                    i += n;
                });
            }};
        }
        match (dst, &data) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => copy!(d, s),
            (CpuStorage::BF16(d), CpuStorage::BF16(s)) => copy!(d, s),
            (CpuStorage::F16(d), CpuStorage::F16(s)) => copy!(d, s),
            (CpuStorage::I64(d), CpuStorage::I64(s)) => copy!(d, s),
            _ => unreachable!("converted above"),
        }
        Ok(())
    }

    /// Run `f` over this tensor's contiguous f32 CPU storage, mutably (fused optimizer updates).
    pub fn update_f32(&self, f: impl FnOnce(&mut [f32])) -> Result<()> {
        self.expect("update_f32", DType::F32)?;
        if !self.is_contiguous() {
            return Err(Error::shape("update_f32", "tensor is not contiguous"));
        }
        let (start, n) = (self.layout().offset, self.numel());
        let mut guard = self.write();
        let Storage::Cpu(CpuStorage::F32(v)) = &mut *guard else { unreachable!() };
        f(&mut v[start..start + n]);
        Ok(())
    }

    // ---- conversion and transfer ----

    /// The elements in row-major order as a fresh host buffer.
    pub(crate) fn contiguous_storage(&self) -> Result<CpuStorage> {
        self.cpu_storage_copy()
    }

    fn cpu_storage_copy(&self) -> Result<CpuStorage> {
        let guard = self.read();
        match &*guard {
            Storage::Cpu(s) => Ok(s.copy_as(self.layout(), self.dtype())),
            Storage::Cuda(c) => Ok(cuda::download(c)?.copy_as(self.layout(), self.dtype())),
        }
    }

    /// Convert the element type: a copy, differentiable between float types (the gradient
    /// comes back in this tensor's type, see `backward`), so `x.to_dtype(BF16)` stores an
    /// activation in bf16 without cutting the graph. On CUDA f32 <-> bf16 converts on the device.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        let _p = crate::profile::scope("to_dtype", self.device());
        let out = self.converted(dtype)?;
        if !(self.dtype().is_float() && dtype.is_float()) {
            return Ok(out);
        }
        Ok(out.with_op(&[self], || Op::Copy(self.clone())))
    }

    /// `to_dtype` without recording.
    pub(crate) fn converted(&self, dtype: DType) -> Result<Tensor> {
        if self.device() != Device::Cpu {
            if let Some(t) = cuda::ops::convert(self, dtype)? {
                return Ok(t); // on the device, a fresh buffer
            }
            return self.to_device(Device::Cpu)?.converted(dtype)?.to_device(self.device());
        }
        let guard = self.read();
        let Storage::Cpu(s) = &*guard else { unreachable!() };
        Ok(Tensor::from_cpu(s.copy_as(self.layout(), dtype), self.shape()))
    }

    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        let _p = crate::profile::scope("to_device", if device.is_cuda() { device } else { self.device() });
        if device == self.device() {
            return Ok(self.clone());
        }
        let host = self.cpu_storage_copy()?;
        let storage = match device {
            Device::Cpu => Storage::Cpu(host),
            Device::Cuda(n) => Storage::Cuda(cuda::upload(&host, n)?),
        };
        Ok(Tensor::from_parts(storage, Layout::contiguous(self.shape()), false, None, false))
    }

    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        // One copy: converting to the dtype it already has would make a second.
        let t = if self.dtype() == DType::F32 { self.clone() } else { self.converted(DType::F32)? };
        match t.contiguous_storage()? {
            CpuStorage::F32(v) => Ok(v),
            _ => unreachable!(),
        }
    }

    pub fn to_vec_i64(&self) -> Result<Vec<i64>> {
        let t = if self.dtype() == DType::I64 { self.clone() } else { self.converted(DType::I64)? };
        match t.contiguous_storage()? {
            CpuStorage::I64(v) => Ok(v),
            _ => unreachable!(),
        }
    }

    /// The single value of a one-element tensor.
    pub fn to_scalar(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::shape("to_scalar", format!("tensor of shape {:?} is not a scalar", self.shape())));
        }
        Ok(self.to_vec_f32()?[0])
    }
}

fn f32s(s: CpuStorage) -> Vec<f32> {
    match s {
        CpuStorage::F32(v) => v,
        _ => unreachable!("converted to f32"),
    }
}

/// Elements borrowed from storage under its read lock, or gathered into an owned buffer.
pub(crate) enum CpuSlice<'a, T> {
    View(RwLockReadGuard<'a, Storage>, usize, usize),
    Owned(Vec<T>),
}

impl Deref for CpuSlice<'_, f32> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            CpuSlice::View(g, start, len) => match &**g {
                Storage::Cpu(CpuStorage::F32(v)) => &v[*start..*start + *len],
                _ => unreachable!("checked by Tensor::expect"),
            },
            CpuSlice::Owned(v) => v,
        }
    }
}

impl Tensor {
    pub(crate) fn op_lock(&self) -> std::sync::MutexGuard<'_, Option<Op>> {
        self.0.op.lock().unwrap()
    }
}
