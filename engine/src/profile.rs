//! Where a step's time goes, op by op: each op's calls and time, by phase (forward, backward,
//! optimizer). Off by default (one thread-local flag read per op); [`start`] turns it on for the
//! ops this thread runs, [`stop`] returns the table.
//!
//! On the CPU an op's time is its wall time. On a GPU it is the time between two events recorded
//! on the device's stream around the op's launches (read at [`stop`]): the op's kernels when the
//! GPU runs behind the host, as in a large training step; when the host is the bottleneck (small
//! launches, decoding) the GPU idles between launches and that idle time lands in the ops too. The
//! step's time beyond the ops' sum is the host's alone. An op that calls other ops counts as one
//! (the outermost); a backward rule counts as one op, named after the forward op it
//! differentiates. A scope whose events could not be made or read is dropped and counted.

use crate::Device;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Forward,
    Backward,
    Optimizer,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Backward => "backward",
            Phase::Optimizer => "optimizer",
        }
    }
}

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LOG: RefCell<Vec<Timed>> = const { RefCell::new(Vec::new()) };
    static PHASE: Cell<Phase> = const { Cell::new(Phase::Forward) };
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static DROPPED: Cell<usize> = const { Cell::new(0) };
}

struct Timed {
    phase: Phase,
    name: &'static str,
    time: Timing,
}

enum Timing {
    Host(f64),
    #[cfg(feature = "cuda")]
    Device(cudarc::driver::CudaEvent, cudarc::driver::CudaEvent),
}

/// One op being timed (or, nested in another, only counted there); records itself when dropped,
/// on the thread that made it (it is not Send: the nesting depth is per thread).
pub struct Scope {
    outermost: Option<(Phase, &'static str, Start)>,
    _not_send: std::marker::PhantomData<*const ()>,
}

enum Start {
    Host(Instant),
    #[cfg(feature = "cuda")]
    Device(std::sync::Arc<kernels::device::Gpu>, cudarc::driver::CudaEvent),
}

/// Times the op `name` running on `device` until the returned scope is dropped (None while the
/// profile is off).
pub fn scope(name: &'static str, device: Device) -> Option<Scope> {
    if !ON.with(Cell::get) {
        return None;
    }
    let depth = DEPTH.with(|d| d.replace(d.get() + 1));
    if depth > 0 {
        return Some(Scope { outermost: None, _not_send: std::marker::PhantomData });
    }
    let start = match device {
        Device::Cpu => Start::Host(Instant::now()),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => match device_event(n) {
            Some((g, e)) => Start::Device(g, e),
            None => {
                // No event, no device time: the op is left out (and counted); its nested ops
                // stay nested, in no row.
                DROPPED.with(|d| d.set(d.get() + 1));
                return Some(Scope { outermost: None, _not_send: std::marker::PhantomData });
            }
        },
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Start::Host(Instant::now()),
    };
    Some(Scope { outermost: Some((PHASE.with(Cell::get), name, start)), _not_send: std::marker::PhantomData })
}

/// An event recorded now on device n's stream (None if that fails: the op is then left out).
#[cfg(feature = "cuda")]
fn device_event(n: usize) -> Option<(std::sync::Arc<kernels::device::Gpu>, cudarc::driver::CudaEvent)> {
    let g = crate::cuda::gpu(n).ok()?;
    // Timing on: cudarc's default (None) creates events that cannot be timed.
    let e = g.ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT)).ok()?;
    e.record(&g.stream).ok()?;
    Some((g, e))
}

impl Drop for Scope {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        let Some((phase, name, start)) = self.outermost.take() else { return };
        let time = match start {
            Start::Host(t) => Timing::Host(t.elapsed().as_secs_f64()),
            #[cfg(feature = "cuda")]
            Start::Device(g, begin) => match device_event(g.ctx.ordinal()) {
                Some((_, end)) => Timing::Device(begin, end),
                None => {
                    DROPPED.with(|d| d.set(d.get() + 1));
                    return;
                }
            },
        };
        LOG.with(|l| l.borrow_mut().push(Timed { phase, name, time }));
    }
}

/// Ops run by this thread count in phase `p` until the guard is dropped.
#[must_use = "the phase ends when the guard is dropped"]
pub struct PhaseGuard(Phase);

pub fn phase(p: Phase) -> PhaseGuard {
    PhaseGuard(PHASE.with(|c| c.replace(p)))
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        PHASE.with(|c| c.set(self.0));
    }
}

/// Starts a fresh profile of the ops this thread runs.
pub fn start() {
    LOG.with(|l| l.borrow_mut().clear());
    DROPPED.with(|d| d.set(0));
    ON.with(|on| on.set(true));
}

/// Ends this thread's profile and returns it (waiting for the device events it recorded).
pub fn stop() -> Profile {
    ON.with(|on| on.set(false));
    let log = LOG.with(|l| std::mem::take(&mut *l.borrow_mut()));
    #[cfg_attr(not(feature = "cuda"), allow(unused_mut))]
    let mut dropped = DROPPED.with(Cell::get);
    let mut by_op: BTreeMap<(Phase, &'static str), (usize, f64)> = BTreeMap::new();
    for t in log {
        #[cfg_attr(not(feature = "cuda"), allow(clippy::infallible_destructuring_match))] // one arm without CUDA
        let secs = match t.time {
            Timing::Host(s) => s,
            #[cfg(feature = "cuda")]
            Timing::Device(begin, end) => match begin.elapsed_ms(&end) {
                Ok(ms) => ms as f64 / 1e3,
                Err(_) => {
                    dropped += 1;
                    continue;
                }
            },
        };
        let e = by_op.entry((t.phase, t.name)).or_default();
        e.0 += 1;
        e.1 += secs;
    }
    let mut rows: Vec<Row> = by_op.into_iter().map(|((phase, op), (calls, seconds))| Row { phase, op, calls, seconds }).collect();
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    Profile { rows, dropped }
}

/// One op's total over the profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub phase: Phase,
    pub op: &'static str,
    pub calls: usize,
    pub seconds: f64,
}

/// The ops' totals, most time first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Profile {
    pub rows: Vec<Row>,
    /// Ops left out: their device events could not be made or read (a CUDA error, which the
    /// next CUDA call reports).
    pub dropped: usize,
}

impl Profile {
    pub fn total_seconds(&self) -> f64 {
        self.rows.iter().map(|r| r.seconds).sum()
    }

    /// A markdown table per `steps` steps of `step_seconds` each (wall time): each op's calls, time
    /// and share of the step, then the ops' sum and the rest of the step (host time, or gaps).
    pub fn table(&self, steps: usize, step_seconds: f64) -> String {
        let n = steps.max(1) as f64;
        let pct = |s: f64| if step_seconds > 0.0 { format!("{:.1}%", 100.0 * s / n / step_seconds) } else { "-".into() };
        let mut out = String::from("| phase | op | calls/step | ms/step | % of step |\n|---|---|---:|---:|---:|\n");
        for r in &self.rows {
            out += &format!("| {} | {} | {:.1} | {:.3} | {} |\n", r.phase.name(), r.op, r.calls as f64 / n, r.seconds * 1e3 / n, pct(r.seconds));
        }
        let ops = self.total_seconds();
        out += &format!("| | all ops | | {:.3} | {} |\n", ops * 1e3 / n, pct(ops));
        if step_seconds > 0.0 {
            let rest = step_seconds * n - ops;
            out += &format!("| | rest of the step (host, gaps) | | {:.3} | {} |\n", rest * 1e3 / n, pct(rest));
        }
        if self.dropped > 0 {
            out += &format!("\n{} op(s) left out: their device events could not be made or read\n", self.dropped);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(ms: u64) {
        let t = Instant::now();
        while t.elapsed().as_millis() < ms as u128 {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn ops_are_timed_by_phase_and_nested_ones_count_in_the_outermost() {
        assert!(scope("off", Device::Cpu).is_none(), "no profile, no scope");
        start();
        {
            let _outer = scope("matmul", Device::Cpu);
            busy(20);
            let _inner = scope("add", Device::Cpu); // part of matmul
            busy(5);
        }
        {
            let _b = phase(Phase::Backward);
            for _ in 0..3 {
                let _s = scope("matmul", Device::Cpu);
                busy(2);
            }
        }
        drop(scope("add", Device::Cpu));
        let p = stop();
        assert!(scope("after", Device::Cpu).is_none(), "stopped");
        let find = |ph: Phase, op: &str| p.rows.iter().find(|r| r.phase == ph && r.op == op).cloned();
        let fwd = find(Phase::Forward, "matmul").expect("forward matmul");
        assert_eq!(fwd.calls, 1);
        assert!(fwd.seconds >= 0.025, "the nested add's time is matmul's: {fwd:?}");
        let bwd = find(Phase::Backward, "matmul").expect("backward matmul");
        assert_eq!(bwd.calls, 3);
        assert!(bwd.seconds >= 0.006, "{bwd:?}");
        assert_eq!(find(Phase::Forward, "add").map(|r| r.calls), Some(1), "the add outside matmul counts, the one inside does not");
        assert_eq!(p.rows[0].op, "matmul", "most time first");
        let table = p.table(1, 0.05);
        assert!(table.contains("| forward | matmul | 1.0 |") && table.contains("| backward | matmul | 3.0 |") && table.contains("rest of the step"), "{table}");
    }

    /// A training step's ops land in their phases, and their sum fits in the step's wall time.
    #[test]
    fn a_training_step_is_profiled_by_phase() {
        use crate::optim::{AdamW, AdamWConfig, ParamGroup};
        use crate::Tensor;
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let w = Tensor::randn(&[64, 50], 0.0, 0.1, &mut rng).var();
        let x = Tensor::randn(&[32, 64], 0.0, 1.0, &mut rng);
        let targets = Tensor::new((0..32).map(|i| i % 50).collect::<Vec<i64>>(), &[32]).unwrap();
        let mut opt = AdamW::new(vec![ParamGroup { params: vec![w.clone()], weight_decay: 0.1 }], AdamWConfig::default()).unwrap();
        start();
        let t0 = Instant::now();
        let loss = x.matmul(&w).unwrap().gelu().unwrap().cross_entropy(&targets).unwrap();
        let mut grads = loss.backward().unwrap();
        grads.clip_global_norm(1.0).unwrap();
        opt.step(&grads, 1e-3).unwrap();
        let wall = t0.elapsed().as_secs_f64();
        let p = stop();
        let has = |ph: Phase, op: &str| p.rows.iter().any(|r| r.phase == ph && r.op == op && r.calls == 1);
        for (ph, op) in [(Phase::Forward, "matmul"), (Phase::Forward, "gelu"), (Phase::Forward, "cross_entropy"), (Phase::Backward, "matmul"), (Phase::Backward, "gelu"), (Phase::Backward, "cross_entropy"), (Phase::Optimizer, "global_norm"), (Phase::Optimizer, "adamw")] {
            assert!(has(ph, op), "{ph:?} {op} missing from {:?}", p.rows);
        }
        assert!(p.total_seconds() <= wall, "the ops' {} s within the step's {wall} s", p.total_seconds());
    }
}
