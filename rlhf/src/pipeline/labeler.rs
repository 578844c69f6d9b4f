//! Simulated labelers: each ranks K responses by the gold score as they perceive it, that is,
//! blurred by their own noise and a taste of their own (a preference for longer or shorter
//! answers), as the paper's labelers agreed with each other on about 73% of pairs. They also
//! write the demonstrations, and there they slip into habits the rubric penalizes (a preamble,
//! a trailing period, quotes): writing a perfect answer is harder than telling which of two is
//! better, the reason the paper collects comparisons at all.

use super::world::Task;
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, Normal};

#[derive(Clone, Debug, PartialEq)]
pub struct Labeler {
    /// Standard deviation of the noise added to each gold score.
    pub noise: f64,
    /// Added per character of response (positive: likes long answers).
    pub length_taste: f64,
}

/// A pool of labelers whose tastes spread with `taste_spread` (per 10 characters).
pub fn pool(n: usize, noise: f64, taste_spread: f64, rng: &mut StdRng) -> Vec<Labeler> {
    let taste = Normal::new(0.0, taste_spread.max(0.0) / 10.0).expect("a valid spread");
    (0..n.max(1)).map(|_| Labeler { noise, length_taste: taste.sample(rng) }).collect()
}

impl Labeler {
    fn perceive(&self, task: &Task, response: &str, rng: &mut StdRng) -> f64 {
        let noise = Normal::new(0.0, self.noise.max(1e-12)).expect("a valid noise");
        task.score(response) + self.length_taste * response.trim().chars().count() as f64 + noise.sample(rng)
    }

    /// Indices of `responses`, best first.
    pub fn rank(&self, task: &Task, responses: &[String], rng: &mut StdRng) -> Vec<usize> {
        let seen: Vec<f64> = responses.iter().map(|r| self.perceive(task, r, rng)).collect();
        let mut order: Vec<usize> = (0..responses.len()).collect();
        order.sort_by(|&a, &b| seen[b].total_cmp(&seen[a]));
        order
    }
}

/// Habits a demonstration may slip into: the answer framed as people write, not as the rubric
/// asks (just the items).
pub const HABITS: [(&str, &str); 3] = [("Answer: ", ""), ("", "."), ("\"", "\"")];

/// Whether a response is framed in one of the `HABITS` (what SFT imitates and RLHF should drop).
pub fn has_habit(response: &str) -> bool {
    let r = response.trim();
    HABITS.iter().any(|&(pre, post)| (!pre.is_empty() && r.starts_with(pre)) || (!post.is_empty() && r.ends_with(post)))
}

/// A labeler's demonstration for `task`: its reference answer, or with probability `slip` that
/// answer in one of the `HABITS`.
pub fn demonstrate(task: &Task, slip: f64, rng: &mut StdRng) -> String {
    if rng.gen_bool(slip.clamp(0.0, 1.0)) {
        let (pre, post) = HABITS[rng.gen_range(0..HABITS.len())];
        format!("{pre}{}{post}", task.answer)
    } else {
        task.answer.clone()
    }
}

/// Fraction of pairs of distinct responses that two rankings order the same way.
pub fn agreement(responses: &[String], a: &[usize], b: &[usize]) -> (usize, usize) {
    let pos = |r: &[usize]| {
        let mut p = vec![0; r.len()];
        r.iter().enumerate().for_each(|(i, &x)| p[x] = i);
        p
    };
    let (pa, pb) = (pos(a), pos(b));
    let (mut same, mut pairs) = (0, 0);
    for i in 0..responses.len() {
        for j in i + 1..responses.len() {
            if responses[i] != responses[j] {
                pairs += 1;
                same += ((pa[i] < pa[j]) == (pb[i] < pb[j])) as usize;
            }
        }
    }
    (same, pairs)
}

/// K for one prompt: uniform in lo..=hi (the paper: 4 to 9).
pub fn draw_k(lo: usize, hi: usize, rng: &mut StdRng) -> usize {
    rng.gen_range(lo..=hi.max(lo))
}
