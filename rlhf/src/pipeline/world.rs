//! The instruction world that stands in for the paper's customers and labelers: eight families of
//! short instructions, each with a programmatic gold answer and a graded gold score in [0, 1]
//! (partial credit, never just right or wrong, so that small improvements are visible).
//!
//! A prompt is one line ending in '\n'; the response is what follows, up to EOS. Each task's
//! reference answer is what a demonstration says (when its labeler does not slip, `labeler`); the
//! gold scorer is what the labelers perceive when they rank, and it judges the evaluation; it is
//! never PPO's reward (the reward model is).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;

/// Short common words: the arguments of instructions.
pub const WORDS: &[&str] = &[
    "sun", "moon", "star", "tree", "leaf", "rock", "sand", "sea", "lake", "rain", "snow", "wind", "fire", "gold", "iron", "salt", "milk", "bread", "fish", "bird", "cat", "dog", "fox", "wolf",
    "bear", "frog", "horse", "mouse", "red", "blue", "green", "black", "white", "pink", "dark", "cold", "warm", "king", "queen", "ship", "road", "door", "hill", "bell", "book", "lamp", "ring", "coat",
];
const NAMES: &[&str] = &["anna", "bob", "carl", "dora", "emma", "finn", "gina", "hugo", "ivy", "jack", "kate", "leo", "mia", "nina", "omar", "paul"];
const CITIES: &[&str] = &["rome", "paris", "oslo", "lima", "cairo", "delhi", "tokyo", "bern", "quito", "riga", "kyiv", "doha"];

/// Bumped whenever the tasks change (part of the pipeline's keys from SFT on).
pub const VERSION: u32 = 4;
/// Bumped whenever the gold scores change (part of the keys from the rankings on).
pub const SCORE_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Reverse,
    Sort,
    Arithmetic,
    CountLetter,
    Uppercase,
    Repeat,
    ExactWords,
    Extract,
}

impl Family {
    pub const ALL: [Family; 8] = [Family::Reverse, Family::Sort, Family::Arithmetic, Family::CountLetter, Family::Uppercase, Family::Repeat, Family::ExactWords, Family::Extract];

    pub fn name(self) -> &'static str {
        match self {
            Family::Reverse => "reverse",
            Family::Sort => "sort",
            Family::Arithmetic => "arithmetic",
            Family::CountLetter => "count_letter",
            Family::Uppercase => "uppercase",
            Family::Repeat => "repeat",
            Family::ExactWords => "exact_words",
            Family::Extract => "extract",
        }
    }
}

/// How a response is scored.
#[derive(Clone, Debug, PartialEq)]
enum Gold {
    /// Character-level edit similarity to the answer.
    Chars(String),
    /// Word-level edit similarity to the answer's words.
    Words(Vec<String>),
    /// A rearrangement of the prompt's items: half the credit for using exactly those items (a
    /// multiset overlap), half for their order (word-level edit similarity).
    Arrange(Vec<String>),
    /// An integer; credit falls linearly to 0 at `tolerance` away.
    Number { value: i64, tolerance: f64 },
    /// Exactly `k` words, each one of `allowed`.
    ExactWords { k: usize, allowed: Vec<String> },
}

/// The form an answer should take: how many items, and of what kind.
#[derive(Clone, Debug, PartialEq)]
enum Form {
    /// `n` integers.
    Numbers(usize),
    /// `n` words in capitals.
    Capitals(usize),
    /// `n` words, each one of `allowed`.
    Words(usize, &'static [&'static str]),
}

impl Form {
    /// The share of items of the right kind, times how close their count is to the right one.
    fn score(&self, r: &str) -> f64 {
        let items: Vec<&str> = r.split_whitespace().collect();
        if items.is_empty() {
            return 0.0;
        }
        let n = match self {
            Form::Numbers(n) | Form::Capitals(n) | Form::Words(n, _) => *n,
        };
        let right = items.iter().filter(|w| self.fits(w)).count() as f64 / items.len() as f64;
        let count = (1.0 - (items.len() as f64 - n as f64).abs() / n as f64).max(0.0);
        right * count
    }

    /// Whether one item is of the right kind.
    fn fits(&self, w: &str) -> bool {
        match self {
            Form::Numbers(_) => w.parse::<i64>().is_ok(),
            Form::Capitals(_) => w.bytes().all(|b| b.is_ascii_uppercase()),
            Form::Words(_, allowed) => allowed.contains(&w),
        }
    }
}

/// One instruction: its text, a reference answer (what the demonstration says) and the gold scorer.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub family: Family,
    pub prompt: String,
    pub answer: String,
    gold: Gold,
    form: Form,
}

impl Task {
    /// Gold score of a response in [0, 1] (1 = what a careful human would call perfect): half for
    /// its form (the right number of items of the right kind: numbers, capitals, known words), half
    /// for its content (how close it is to a right answer), as a grader gives partial credit.
    pub fn score(&self, response: &str) -> f64 {
        let r = response.trim();
        0.5 * self.form.score(r) + 0.5 * self.content(r)
    }

    fn content(&self, r: &str) -> f64 {
        match &self.gold {
            Gold::Chars(a) => similarity(&r.chars().collect::<Vec<_>>(), &a.chars().collect::<Vec<_>>()),
            Gold::Words(a) => similarity(&r.split_whitespace().collect::<Vec<_>>(), &a.iter().map(String::as_str).collect::<Vec<_>>()),
            Gold::Arrange(a) => {
                let got: Vec<&str> = r.split_whitespace().collect();
                let want: Vec<&str> = a.iter().map(String::as_str).collect();
                0.5 * overlap(&got, &want) + 0.5 * similarity(&got, &want)
            }
            Gold::Number { value, tolerance } => match r.parse::<i64>() {
                Ok(x) => (1.0 - (x - value).abs() as f64 / tolerance).max(0.0),
                Err(_) => 0.0,
            },
            Gold::ExactWords { k, allowed } => {
                let words: Vec<&str> = r.split_whitespace().collect();
                if words.is_empty() {
                    return 0.0;
                }
                let valid = words.iter().filter(|w| allowed.iter().any(|a| a == *w)).count() as f64 / words.len() as f64;
                let count = (1.0 - (words.len() as f64 - *k as f64).abs() / *k as f64).max(0.0);
                count * valid
            }
        }
    }
}

/// Items in common (as multisets) over the larger count: 1 for a permutation.
fn overlap(a: &[&str], b: &[&str]) -> f64 {
    let n = a.len().max(b.len());
    if n == 0 {
        return 1.0;
    }
    let mut rest: Vec<&str> = b.to_vec();
    let common = a.iter().filter(|x| rest.iter().position(|y| y == *x).map(|i| rest.swap_remove(i)).is_some()).count();
    common as f64 / n as f64
}

/// 1 - edit distance / the longer length: 1 for equal sequences, 0 for nothing in common.
pub fn similarity<T: PartialEq>(a: &[T], b: &[T]) -> f64 {
    let n = a.len().max(b.len());
    if n == 0 {
        return 1.0;
    }
    1.0 - levenshtein(a, b) as f64 / n as f64
}

fn levenshtein<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + (x != y) as usize).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn words(rng: &mut StdRng, lo: usize, hi: usize) -> Vec<&'static str> {
    let n = rng.gen_range(lo..=hi);
    (0..n).map(|_| *WORDS.choose(rng).expect("WORDS is not empty")).collect()
}

/// A random task of `family`.
pub fn task(family: Family, rng: &mut StdRng) -> Task {
    let (prompt, answer, gold, form) = match family {
        Family::Reverse => {
            let w = words(rng, 2, 4);
            let rev: Vec<&str> = w.iter().rev().copied().collect();
            (format!("Reverse: {}", w.join(" ")), rev.join(" "), Gold::Arrange(rev.iter().map(|s| s.to_string()).collect()), Form::Words(w.len(), WORDS))
        }
        Family::Sort => {
            let n = rng.gen_range(3..=5);
            let xs: Vec<u32> = (0..n).map(|_| rng.gen_range(0..10)).collect();
            let mut s = xs.clone();
            s.sort_unstable();
            let text = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
            (format!("Sort: {}", text(&xs)), text(&s), Gold::Arrange(s.iter().map(u32::to_string).collect()), Form::Numbers(n))
        }
        Family::Arithmetic => {
            let (a, b) = (rng.gen_range(0..=30i64), rng.gen_range(0..=30i64));
            let (p, v) = if rng.gen_bool(0.5) { (format!("Add: {a} + {b}"), a + b) } else { (format!("Subtract: {} - {b}", a + b), a) };
            (p, v.to_string(), Gold::Number { value: v, tolerance: 10.0 }, Form::Numbers(1))
        }
        Family::CountLetter => {
            let w = words(rng, 2, 3).join(" ");
            let letters: Vec<char> = w.chars().filter(|c| c.is_alphabetic()).collect();
            let c = *letters.choose(rng).expect("words have letters");
            let n = w.chars().filter(|&x| x == c).count() as i64;
            (format!("Count {c} in: {w}"), n.to_string(), Gold::Number { value: n, tolerance: 2.0 }, Form::Numbers(1))
        }
        Family::Uppercase => {
            let w = words(rng, 1, 3);
            let up = w.join(" ").to_uppercase();
            (format!("Uppercase: {}", w.join(" ")), up.clone(), Gold::Chars(up), Form::Capitals(w.len()))
        }
        Family::Repeat => {
            let (unit, n) = (words(rng, 1, 2), rng.gen_range(2..=4usize));
            let target: Vec<String> = (0..n).flat_map(|_| unit.iter().map(|w| w.to_string())).collect();
            let count = target.len();
            (format!("Repeat {} {n} times", unit.join(" ")), target.join(" "), Gold::Words(target), Form::Words(count, WORDS))
        }
        Family::ExactWords => {
            let mut pool: Vec<&str> = WORDS.to_vec();
            pool.shuffle(rng);
            let offered = &pool[..5];
            let k = rng.gen_range(2..=4usize);
            let mut pick = offered.to_vec();
            pick.shuffle(rng);
            let allowed = offered.iter().map(|w| w.to_string()).collect();
            (format!("Pick {k} of: {}", offered.join(" ")), pick[..k].join(" "), Gold::ExactWords { k, allowed }, Form::Words(k, WORDS))
        }
        Family::Extract => {
            let (name, age, city) = (*NAMES.choose(rng).expect("names"), rng.gen_range(18..90), *CITIES.choose(rng).expect("cities"));
            let fields = [("name", name.to_string()), ("age", age.to_string()), ("city", city.to_string())];
            let (key, value) = fields.choose(rng).expect("three fields").clone();
            let record = fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
            let form = match key {
                "age" => Form::Numbers(1),
                "name" => Form::Words(1, NAMES),
                _ => Form::Words(1, CITIES),
            };
            (format!("{record}; {key}?"), value.clone(), Gold::Chars(value), form)
        }
    };
    Task { family, prompt: format!("{prompt}\n"), answer, gold, form }
}

/// Splits of tasks whose prompts never repeat, within or across splits (sizes in `sizes`);
/// families in turn, so every split is balanced until a family runs out of new prompts (it is
/// then skipped: arithmetic has 1922 prompts).
pub fn disjoint_splits(sizes: &[usize], rng: &mut StdRng) -> Vec<Vec<Task>> {
    let mut seen = std::collections::HashSet::new();
    let mut exhausted = [false; Family::ALL.len()];
    let mut i = 0usize;
    sizes
        .iter()
        .map(|&n| {
            let mut split = Vec::with_capacity(n);
            while split.len() < n {
                let f = i % Family::ALL.len();
                i += 1;
                if exhausted[f] {
                    assert!(!exhausted.iter().all(|&e| e), "the world has fewer than {n} new prompts");
                    continue;
                }
                // A family that draws 200 prompts it has already made in a row is spent.
                match (0..200).map(|_| task(Family::ALL[f], rng)).find(|t| !seen.contains(&t.prompt)) {
                    Some(t) => {
                        seen.insert(t.prompt.clone());
                        split.push(t);
                    }
                    None => exhausted[f] = true,
                }
            }
            split
        })
        .collect()
}
