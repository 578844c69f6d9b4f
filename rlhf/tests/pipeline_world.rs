//! The pipeline's world and labelers: gold scores grade answers, splits never share a prompt,
//! labelers disagree as much as they are told to.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rlhf::pipeline::labeler;
use rlhf::pipeline::world::{disjoint_splits, similarity, task, Family};

#[test]
fn the_reference_answer_scores_one_and_worse_answers_score_less() {
    let mut rng = StdRng::seed_from_u64(1);
    for fam in Family::ALL {
        for _ in 0..50 {
            let t = task(fam, &mut rng);
            assert!(t.prompt.ends_with('\n') && !t.prompt[..t.prompt.len() - 1].contains('\n'), "{:?}", t.prompt);
            assert_eq!(t.score(&t.answer), 1.0, "{fam:?}: {:?} -> {:?}", t.prompt, t.answer);
            assert_eq!(t.score(&format!(" {} ", t.answer)), 1.0, "surrounding space is ignored");
            assert_eq!(t.score(""), 0.0, "{fam:?}: an empty answer");
            let junk = format!("{} {}", t.answer, "zzz qqq xxx yyy");
            let s = t.score(&junk);
            assert!((0.0..1.0).contains(&s), "{fam:?}: {junk:?} scored {s}");
        }
    }
}

#[test]
fn partial_answers_get_partial_credit() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut seen = std::collections::HashSet::new();
    for fam in Family::ALL {
        let t = task(fam, &mut rng);
        // Drop the answer's last character: close, not perfect (numbers: off by a digit).
        let near: String = t.answer.chars().take(t.answer.chars().count().saturating_sub(1).max(1)).collect();
        let s = t.score(&near);
        if near != t.answer {
            assert!(s < 1.0, "{fam:?}: {near:?} for {:?} scored {s}", t.answer);
        }
        seen.insert((s * 1000.0) as i64);
    }
    assert!(seen.len() > 3, "scores are graded, not right/wrong: {seen:?}");
    assert_eq!(similarity(&['a', 'b', 'c'], &['a', 'b', 'd']), 1.0 - 1.0 / 3.0);
}

#[test]
fn splits_are_disjoint_balanced_and_seeded() {
    let sizes = [40, 80, 16, 200];
    let a = disjoint_splits(&sizes, &mut StdRng::seed_from_u64(3));
    let b = disjoint_splits(&sizes, &mut StdRng::seed_from_u64(3));
    assert_eq!(a, b, "same seed, same world");
    let mut all = std::collections::HashSet::new();
    for (split, &n) in a.iter().zip(&sizes) {
        assert_eq!(split.len(), n);
        for t in split {
            assert!(all.insert(t.prompt.clone()), "{:?} is in two places", t.prompt);
        }
        for fam in Family::ALL {
            let k = split.iter().filter(|t| t.family == fam).count();
            assert!(k >= n / 8 && k <= n.div_ceil(8), "{fam:?}: {k} of {n}");
        }
    }
}

#[test]
fn labelers_rank_by_gold_blurred_by_their_noise() {
    let mut rng = StdRng::seed_from_u64(4);
    let t = task(Family::Uppercase, &mut rng);
    // Prefixes of the answer, best first, one per distinct gold score.
    let mut responses: Vec<String> = Vec::new();
    for i in (0..=t.answer.len()).rev() {
        let r = t.answer[..i].to_string();
        if responses.last().is_none_or(|last| t.score(last) > t.score(&r)) {
            responses.push(r);
        }
    }
    assert!(responses.len() >= 4);
    let exact = labeler::Labeler { noise: 0.0, length_taste: 0.0 };
    assert_eq!(exact.rank(&t, &responses, &mut rng), (0..responses.len()).collect::<Vec<_>>());
    // Noisy labelers agree with each other on some pairs but not all.
    let noisy = labeler::pool(2, 0.3, 0.0, &mut rng);
    let (mut same, mut pairs) = (0, 0);
    for _ in 0..50 {
        let a = noisy[0].rank(&t, &responses, &mut rng);
        let b = noisy[1].rank(&t, &responses, &mut rng);
        let (s, p) = labeler::agreement(&responses, &a, &b);
        (same, pairs) = (same + s, pairs + p);
    }
    let frac = same as f64 / pairs as f64;
    assert!(frac > 0.55 && frac < 0.98, "agreement {frac}");
    for _ in 0..20 {
        let k = labeler::draw_k(4, 9, &mut rng);
        assert!((4..=9).contains(&k));
    }
}

#[test]
fn demonstrations_slip_into_habits_as_often_as_told_and_habits_cost_gold() {
    let mut rng = StdRng::seed_from_u64(5);
    for slip in [0.0, 0.4, 1.0] {
        let (mut slipped, n) = (0, 800);
        for i in 0..n {
            let t = task(Family::ALL[i % 8], &mut rng);
            let d = labeler::demonstrate(&t, slip, &mut rng);
            assert_eq!(labeler::has_habit(&d), d != t.answer, "{d:?} (answer {:?}): the evaluation's habit count sees it", t.answer);
            if d == t.answer {
                continue;
            }
            slipped += 1;
            assert!(labeler::HABITS.iter().any(|(pre, post)| d == format!("{pre}{}{post}", t.answer)), "{d:?} is the answer in a habit");
            assert!(t.score(&d) < 1.0, "{:?}: the habit {d:?} costs gold", t.family);
        }
        let rate = slipped as f64 / n as f64;
        assert!((rate - slip).abs() < 0.05, "slip {slip}: {rate}");
    }
}
