//! GPT-2 (Radford et al. 2019) on the engine: learned token and position embeddings, pre-LayerNorm
//! blocks (fused causal attention, tanh-GELU MLP), a final LayerNorm and an LM head tied to the
//! token embedding.
//!
//! Weights keep Hugging Face's names and its `Conv1D` orientation [in, out], so a checkpoint maps
//! onto the model name for name and `x.matmul_bias(w, b)` uses each weight as stored. All
//! parameters live in one ordered list (HF's `named_parameters` order) that the optimizer,
//! gradient clipping and checkpoint IO walk in one pass.

use crate::config::Gpt2Config;
use engine::optim::ParamGroup;
use engine::{causal_attention, causal_attention_padded, embedding, Error, Result, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Prefix of every parameter name (the `save_pretrained` layout).
pub const PREFIX: &str = "transformer.";

/// How a parameter starts (GPT-2's init).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Init {
    Normal(f32),
    Zeros,
    Ones,
}

/// Every parameter's name, shape and init, in HF's order: the single source of truth for
/// building, loading and saving a model.
pub(crate) fn param_specs(c: &Gpt2Config) -> Vec<(String, Vec<usize>, Init)> {
    let (e, m, std) = (c.n_embd, c.mlp_width(), c.initializer_range as f32);
    // Residual projections are scaled down so the residual stream's variance does not grow with
    // depth (GPT-2 paper, section 2.3).
    let proj_std = (c.initializer_range / (2.0 * c.n_layer as f64).sqrt()) as f32;
    let mut specs = vec![
        (format!("{PREFIX}wte.weight"), vec![c.vocab_size, e], Init::Normal(std)),
        (format!("{PREFIX}wpe.weight"), vec![c.n_positions, e], Init::Normal(std)),
    ];
    for i in 0..c.n_layer {
        let p = |s: &str| format!("{PREFIX}h.{i}.{s}");
        specs.extend([
            (p("ln_1.weight"), vec![e], Init::Ones),
            (p("ln_1.bias"), vec![e], Init::Zeros),
            (p("attn.c_attn.weight"), vec![e, 3 * e], Init::Normal(std)),
            (p("attn.c_attn.bias"), vec![3 * e], Init::Zeros),
            (p("attn.c_proj.weight"), vec![e, e], Init::Normal(proj_std)),
            (p("attn.c_proj.bias"), vec![e], Init::Zeros),
            (p("ln_2.weight"), vec![e], Init::Ones),
            (p("ln_2.bias"), vec![e], Init::Zeros),
            (p("mlp.c_fc.weight"), vec![e, m], Init::Normal(std)),
            (p("mlp.c_fc.bias"), vec![m], Init::Zeros),
            (p("mlp.c_proj.weight"), vec![m, e], Init::Normal(proj_std)),
            (p("mlp.c_proj.bias"), vec![e], Init::Zeros),
        ]);
    }
    specs.push((format!("{PREFIX}ln_f.weight"), vec![e], Init::Ones));
    specs.push((format!("{PREFIX}ln_f.bias"), vec![e], Init::Zeros));
    specs
}

/// A (weight, bias) pair.
#[derive(Clone)]
struct Affine {
    w: Tensor,
    b: Tensor,
}

#[derive(Clone)]
struct Block {
    ln_1: Affine,
    c_attn: Affine,
    attn_proj: Affine,
    ln_2: Affine,
    c_fc: Affine,
    mlp_proj: Affine,
}

/// Keys and values of every layer for the positions seen so far, so that decoding feeds only the
/// new tokens. Left padding must be the same on every call that uses it.
///
/// Each layer keeps [B, H, capacity, D] buffers: new positions are written in place and attention
/// reads the first `len` through a view, so a decode step copies only its own keys and values.
/// The capacity doubles when it runs out; `with_capacity` sizes it once (prompt + new tokens).
#[derive(Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    /// Positions to allocate room for at the first call.
    capacity: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }
    /// A cache that holds `positions` without reallocating.
    pub fn with_capacity(positions: usize) -> Self {
        KvCache { capacity: positions, ..Self::default() }
    }
    /// Positions cached (padding included).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append this layer's keys and values for the new positions ([B, H, t, D]); returns views
    /// of all of them so far.
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (past, t) = (self.len, k.shape()[2]);
        let end = past + t;
        if layer == self.layers.len() {
            // In the keys' type: bf16 under autocast on CUDA, where decode reads it as it is.
            let mut shape = k.shape().to_vec();
            shape[2] = self.capacity.max(end);
            self.layers.push((zeros_as(&shape, k)?, zeros_as(&shape, v)?));
        }
        let (kb, vb) = &mut self.layers[layer];
        if kb.shape()[..2] != k.shape()[..2] || kb.shape()[3] != k.shape()[3] {
            return Err(Error::Msg(format!("KvCache: keys {:?} for a cache of {:?}", k.shape(), kb.shape())));
        }
        if k.tracked() || v.tracked() {
            // Recording gradients: concatenate, so they flow to earlier positions' keys and values.
            *kb = Tensor::cat(&[kb.narrow(2, 0, past)?, k.clone()], 2)?;
            *vb = Tensor::cat(&[vb.narrow(2, 0, past)?, v.clone()], 2)?;
            return Ok((kb.clone(), vb.clone()));
        }
        if kb.shape()[2] < end {
            let cap = end.max(2 * kb.shape()[2]);
            *kb = grown(kb, past, cap)?;
            *vb = grown(vb, past, cap)?;
        }
        kb.narrow(2, past, t)?.assign(k)?;
        vb.narrow(2, past, t)?.assign(v)?;
        Ok((kb.narrow(2, 0, end)?, vb.narrow(2, 0, end)?))
    }
}

/// Zeros of `shape` on `like`'s device, in its type.
fn zeros_as(shape: &[usize], like: &Tensor) -> Result<Tensor> {
    let z = Tensor::zeros_on(shape, like.device())?;
    if like.dtype() == z.dtype() {
        Ok(z)
    } else {
        Ok(z.to_dtype(like.dtype())?)
    }
}

/// A [B, H, cap, D] buffer holding the first `len` positions of `buf`.
fn grown(buf: &Tensor, len: usize, cap: usize) -> Result<Tensor> {
    let mut shape = buf.shape().to_vec();
    shape[2] = cap;
    let out = zeros_as(&shape, buf)?;
    out.narrow(2, 0, len)?.assign(&buf.narrow(2, 0, len)?)?;
    Ok(out)
}

/// A copy: later appends to one never show in the other (the buffers are written in place).
impl Clone for KvCache {
    fn clone(&self) -> Self {
        let copy = |t: &Tensor| t.detach().to_dtype(t.dtype());
        let layers = self.layers.iter().map(|(k, v)| Ok((copy(k)?, copy(v)?))).collect::<Result<_>>().expect("copying a KV cache");
        KvCache { layers, len: self.len, capacity: self.capacity }
    }
}

/// `clone` gives another handle on the same parameters; `copy` gives independent ones.
#[derive(Clone)]
pub struct Gpt2 {
    config: Gpt2Config,
    params: Vec<(String, Tensor)>,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: Affine,
}

impl std::fmt::Debug for Gpt2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpt2({} layers, {} heads, {} wide, {} parameters)", self.config.n_layer, self.config.n_head, self.config.n_embd, self.num_params())
    }
}

impl Gpt2 {
    /// A freshly initialised model (GPT-2's init), reproducible from `seed`.
    pub fn new(config: Gpt2Config, seed: u64) -> Result<Gpt2> {
        config.validate()?;
        let what = format!("a GPT-2 of {} parameters ({} layers x {} wide)", config.num_params(), config.n_layer, config.n_embd);
        engine::memory::check_host((config.num_params() as u64).saturating_mul(4), &what)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let tensors = param_specs(&config)
            .into_iter()
            .map(|(name, shape, init)| {
                let t = match init {
                    Init::Normal(std) => Tensor::randn(&shape, 0.0, std, &mut rng),
                    Init::Zeros => Tensor::zeros(&shape),
                    Init::Ones => Tensor::ones(&shape),
                };
                (name, t)
            })
            .collect();
        Gpt2::from_tensors(config, tensors)
    }

    /// A model over the given tensors, which must follow `param_specs` (names, order, shapes);
    /// each becomes a contiguous f32 parameter.
    pub(crate) fn from_tensors(config: Gpt2Config, tensors: Vec<(String, Tensor)>) -> Result<Gpt2> {
        config.validate()?;
        let specs = param_specs(&config);
        if specs.len() != tensors.len() {
            return Err(Error::Msg(format!("GPT-2: {} tensors for {} parameters", tensors.len(), specs.len())));
        }
        let mut params = Vec::with_capacity(specs.len());
        for ((name, shape, _), (got_name, t)) in specs.into_iter().zip(tensors) {
            if name != got_name || t.shape() != shape {
                return Err(Error::Msg(format!("GPT-2: parameter {got_name:?} {:?} where {name:?} {shape:?} belongs", t.shape())));
            }
            // Loaded and fresh tensors are already f32: no second copy of the weights.
            let t = if t.dtype() == engine::DType::F32 { t.contiguous()? } else { t.to_dtype(engine::DType::F32)? };
            params.push((name, t.detach().var()));
        }
        let mut it = params.iter().map(|(_, t)| t.clone());
        let mut next = || it.next().expect("counted above");
        let mut pair = || Affine { w: next(), b: next() };
        let (wte, wpe) = {
            let Affine { w, b } = pair();
            (w, b)
        };
        let blocks = (0..config.n_layer)
            .map(|_| Block { ln_1: pair(), c_attn: pair(), attn_proj: pair(), ln_2: pair(), c_fc: pair(), mlp_proj: pair() })
            .collect();
        let ln_f = pair();
        Ok(Gpt2 { config, params, wte, wpe, blocks, ln_f })
    }

    /// A model with its own parameters holding the same values (e.g. PPO's frozen reference).
    pub fn copy(&self) -> Result<Gpt2> {
        let tensors = self.params.iter().map(|(n, t)| Ok((n.clone(), t.to_dtype(engine::DType::F32)?))).collect::<Result<Vec<_>>>()?;
        Gpt2::from_tensors(self.config.clone(), tensors)
    }

    /// The same model with its parameters on `device` (copied there; shared when already there).
    pub fn to_device(&self, device: engine::Device) -> Result<Gpt2> {
        let tensors = self.params.iter().map(|(n, t)| Ok((n.clone(), t.to_device(device)?))).collect::<Result<Vec<_>>>()?;
        Gpt2::from_tensors(self.config.clone(), tensors)
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// Where the parameters are.
    pub fn device(&self) -> engine::Device {
        self.wte.device()
    }

    /// Every parameter with its HF name (`transformer.` prefix), in HF's order.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    pub fn num_params(&self) -> usize {
        self.params.iter().map(|(_, t)| t.numel()).sum()
    }

    /// AdamW groups as GPT-2/InstructGPT train: decay for matrices and embeddings (dim >= 2),
    /// none for biases and LayerNorm gains.
    pub fn param_groups(&self, weight_decay: f32) -> Vec<ParamGroup> {
        let (decay, no_decay): (Vec<_>, Vec<_>) = self.params.iter().map(|(_, t)| t.clone()).partition(|t| t.rank() >= 2);
        vec![ParamGroup { params: decay, weight_decay }, ParamGroup { params: no_decay, weight_decay: 0.0 }]
    }

    /// Logits [B, T, V] for token ids [B, T] (i64) at positions 0..T.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.forward_padded(ids, None, None)
    }

    /// Mean cross-entropy of `forward(ids)` against `targets` [B, T] (negative = ignored).
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        self.forward(ids)?.cross_entropy(targets)
    }

    /// Logits for a left-padded batch and/or the next chunk of a cached sequence: see
    /// `hidden_states`.
    pub fn forward_padded(&self, ids: &Tensor, left_pad: Option<&[usize]>, cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.lm_head(&self.hidden_states(ids, left_pad, cache)?)
    }

    /// Logits from final hidden states: ln_f(h) · wteᵀ, through a transposed view of wte (the
    /// tied head; no copy, and its gradient lands on wte). f32 under autocast too: sampling and
    /// PPO's log-probability ratios need more than bf16's 8 bits at |logit| ~100.
    pub fn lm_head(&self, h: &Tensor) -> Result<Tensor> {
        h.matmul_as(&self.wte.t()?, engine::DType::F32)
    }

    /// Final hidden states [B, T, C] (after ln_f) for ids [B, T].
    ///
    /// `left_pad[b]`: how many leading positions of row b (counted from the start of the whole
    /// sequence, cache included) are padding: no query sees them, and row b's positions count
    /// from 0 at its first real token. `cache`: keys and values of earlier positions; the ids
    /// continue them and are appended.
    pub fn hidden_states(&self, ids: &Tensor, left_pad: Option<&[usize]>, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let c = &self.config;
        if ids.rank() != 2 || ids.numel() == 0 {
            return Err(Error::Msg(format!("GPT-2: ids must be [batch, time] and non-empty, got {:?}", ids.shape())));
        }
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        let past = cache.as_ref().map_or(0, |k| k.len);
        if past + t > c.n_positions {
            return Err(Error::Msg(format!("GPT-2: {} positions (cache {past} + {t}) exceed n_positions {}", past + t, c.n_positions)));
        }
        let pad: Vec<usize> = match left_pad {
            Some(p) if p.len() != b => return Err(Error::Msg(format!("GPT-2: {} left-pad counts for batch {b}", p.len()))),
            Some(p) => p.to_vec(),
            None => vec![0; b],
        };
        let positions: Vec<i64> = pad.iter().flat_map(|&p| (past..past + t).map(move |i| i.saturating_sub(p) as i64)).collect();
        let positions = Tensor::new(positions, &[b, t])?;
        let mut x = embedding(ids, &self.wte)?.add(&embedding(&positions, &self.wpe)?)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let layer = cache.as_deref_mut().map(|k| (i, k));
            x = self.block(block, &x, &pad, layer)?;
        }
        if let Some(k) = cache {
            k.len += t;
        }
        x.layer_norm(&self.ln_f.w, &self.ln_f.b, self.eps())
    }

    fn eps(&self) -> f32 {
        self.config.layer_norm_epsilon as f32
    }

    /// x + attn(ln_1(x)), then + mlp(ln_2(·)).
    fn block(&self, blk: &Block, x: &Tensor, pad: &[usize], cache: Option<(usize, &mut KvCache)>) -> Result<Tensor> {
        let c = &self.config;
        let (b, t, e) = (x.shape()[0], x.shape()[1], c.n_embd);
        let (nh, hd) = (c.n_head, c.head_dim());
        let h = x.layer_norm(&blk.ln_1.w, &blk.ln_1.b, self.eps())?;
        // c_attn's columns are [q | k | v], each split into heads: view as [3, B, H, T, D].
        let qkv = h.matmul_bias(&blk.c_attn.w, &blk.c_attn.b)?.reshape(&[b, t, 3, nh, hd])?.permute(&[2, 0, 3, 1, 4])?;
        let part = |i: usize| qkv.narrow(0, i, 1)?.squeeze(0);
        let (q, mut k, mut v) = (part(0)?, part(1)?, part(2)?);
        if let Some((layer, cache)) = cache {
            (k, v) = cache.append(layer, &k, &v)?;
        }
        let att = if pad.iter().any(|&p| p > 0) {
            // A chunk may end inside a row's padding: then all of its keys are padding.
            let tk = k.shape()[2];
            let pad: Vec<usize> = pad.iter().map(|&p| p.min(tk)).collect();
            causal_attention_padded(&q, &k, &v, &pad)?
        } else {
            causal_attention(&q, &k, &v)?
        };
        let att = att.permute(&[0, 2, 1, 3])?.reshape(&[b, t, e])?;
        let x = x.add(&att.matmul_bias(&blk.attn_proj.w, &blk.attn_proj.b)?)?;
        let h = x.layer_norm(&blk.ln_2.w, &blk.ln_2.b, self.eps())?;
        let m = h.matmul_bias_gelu(&blk.c_fc.w, &blk.c_fc.b)?.matmul_bias(&blk.mlp_proj.w, &blk.mlp_proj.b)?;
        x.add(&m)
    }
}

/// HF's language-modelling targets for ids [B, T]: each position predicts the next token; the
/// last position has none (-100, ignored by `cross_entropy`).
pub fn lm_targets(ids: &Tensor) -> Result<Tensor> {
    if ids.rank() != 2 {
        return Err(Error::Msg(format!("lm_targets: ids must be [batch, time], got {:?}", ids.shape())));
    }
    let (b, t) = (ids.shape()[0], ids.shape()[1]);
    let v = ids.to_vec_i64()?;
    let targets: Vec<i64> = (0..b * t).map(|i| if i % t + 1 < t { v[i + 1] } else { -100 }).collect();
    Tensor::new(targets, &[b, t])
}
