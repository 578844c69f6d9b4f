//! AdamW on the device: one parameter in place, or every parameter of a step in one launch.

use super::buffers::*;
use crate::cuda::device::{gpu, CudaStorage};
use crate::storage::Storage;
use crate::{Error, Result, Tensor};

/// One AdamW step in place on the device: `param`, `m` and `v` (contiguous, each its whole
/// buffer) updated from `grad`; `step` is the parameter's own 1-based count.
#[allow(clippy::too_many_arguments)]
pub(crate) fn adamw(param: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, step: u64) -> Result<()> {
    let op = "AdamW";
    let g = gpu(ordinal(param))?;
    if param.same_storage(grad) || param.same_storage(m) || param.same_storage(v) {
        // The update takes the parameter's write lock: a gradient reading the same buffer would deadlock.
        return Err(Error::Msg(format!("{op}: the gradient or a moment of {param:?} shares the parameter's buffer")));
    }
    let gv = f32_of(grad, op)?;
    let h = kernels::reference::AdamWParams { lr: lr as f64, b1: beta1 as f64, b2: beta2 as f64, eps: eps as f64, wd: weight_decay as f64, step: step as i32 };
    let whole = |t: &Tensor| t.is_contiguous() && t.layout().offset == 0;
    if !(whole(param) && whole(m) && whole(v)) {
        return Err(Error::Msg(format!("{op}: a parameter on CUDA must own its whole buffer, got {param:?}")));
    }
    let (mut pw, mut mw, mut vw) = (param.write(), m.write(), v.write());
    match (&mut *pw, &mut *mw, &mut *vw) {
        (Storage::Cuda(CudaStorage::F32(p, _)), Storage::Cuda(CudaStorage::F32(ms, _)), Storage::Cuda(CudaStorage::F32(vs, _))) => {
            g.adamw(p, &gv, ms, vs, h).map_err(err(op))
        }
        _ => Err(Error::Msg(format!("{op}: parameter and moments must be f32 on the same CUDA device"))),
    }
}

/// AdamW over many parameters on one device in one launch (`adamw_multi_f32`), each with its
/// own learning rate, decay and step. Where a gradient or moment shares a buffer with another
/// parameter of the list (the write locks of one launch would then meet), one launch per
/// parameter instead, as [`adamw`].
pub(crate) fn adamw_multi(items: &[crate::optim::AdamwItem<'_>], beta1: f32, beta2: f32, eps: f32) -> Result<()> {
    let op = "AdamW";
    let Some(first) = items.first() else { return Ok(()) };
    let dev = ordinal(first.0);
    // A parameter sharing a buffer with anything else of the list, or a gradient with a moment.
    let shared = items.iter().enumerate().any(|(i, a)| {
        items.iter().enumerate().any(|(j, b)| {
            [b.1, b.2, b.3].iter().any(|t| a.0.same_storage(t)) || (i != j && a.0.same_storage(b.0)) || a.1.same_storage(b.2) || a.1.same_storage(b.3)
        })
    });
    if shared || items.iter().any(|it| ordinal(it.0) != dev) {
        for &(p, g, m, v, lr, wd, step) in items {
            adamw(p, g, m, v, lr, beta1, beta2, eps, wd, step)?;
        }
        return Ok(());
    }
    let g = gpu(dev)?;
    let whole = |t: &Tensor| t.is_contiguous() && t.layout().offset == 0;
    if let Some(it) = items.iter().find(|it| !(whole(it.0) && whole(it.2) && whole(it.3))) {
        return Err(Error::Msg(format!("{op}: a parameter on CUDA must own its whole buffer, got {:?}", it.0)));
    }
    let grads = items.iter().map(|it| f32_of(it.1, op)).collect::<Result<Vec<_>>>()?;
    let mut locks: Vec<_> = items.iter().map(|it| (it.0.write(), it.2.write(), it.3.write())).collect();
    let mut list = Vec::with_capacity(items.len());
    for (((pw, mw, vw), gv), it) in locks.iter_mut().zip(&grads).zip(items) {
        let h = kernels::reference::AdamWParams { lr: it.4 as f64, b1: beta1 as f64, b2: beta2 as f64, eps: eps as f64, wd: it.5 as f64, step: it.6 as i32 };
        match (&mut **pw, &mut **mw, &mut **vw) {
            (Storage::Cuda(CudaStorage::F32(p, _)), Storage::Cuda(CudaStorage::F32(m, _)), Storage::Cuda(CudaStorage::F32(v, _))) => {
                list.push(kernels::adamw::AdamwTensor { p, g: gv, m, v, h })
            }
            _ => return Err(Error::Msg(format!("{op}: parameter and moments must be f32 on the same CUDA device, got {:?}", it.0))),
        }
    }
    g.adamw_multi(&mut list, beta1, beta2, eps).map_err(err(op))
}
