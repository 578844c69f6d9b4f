//! Policy evaluation: win rate under a programmatic judge, KL to the reference, LM loss.

use anyhow::Result;
use engine::Tensor;
use models::{GenerateConfig, Gpt2, Gpt2Config, Tokenizer};
use rlhf::eval::{kl_to_reference, lm_loss, sample, win_rate, Judge, WinRate};

fn tiny(seed: u64) -> Gpt2 {
    Gpt2::new(Gpt2Config::custom(1, 2, 32, 64, 50257), seed).unwrap()
}

/// A model that emits `token` at every position: token's embedding is scaled up 10x, ln_f's
/// gain is 0 and its bias is 1000 times that embedding, so every logit row is
/// wte · (1000 wte[token]): ~1300 for token against at most ~100 for any other.
fn parrot(seed: u64, token: u32) -> Gpt2 {
    let m = tiny(seed);
    let wte = m.param("transformer.wte.weight").unwrap();
    let d = m.config().n_embd;
    let mut w = wte.to_vec_f32().unwrap();
    let row: Vec<f32> = w[token as usize * d..(token as usize + 1) * d].iter().map(|x| x * 10.0).collect();
    w[token as usize * d..(token as usize + 1) * d].copy_from_slice(&row);
    wte.assign(&Tensor::new(w, wte.shape()).unwrap()).unwrap();
    let bias: Vec<f32> = row.iter().map(|x| x * 1000.0).collect();
    m.param("transformer.ln_f.bias").unwrap().assign(&Tensor::new(bias, &[d]).unwrap()).unwrap();
    m.param("transformer.ln_f.weight").unwrap().assign(&Tensor::zeros(&[d])).unwrap();
    m
}

fn prompts() -> Vec<Vec<u32>> {
    let tok = Tokenizer::gpt2();
    ["Explain the moon landing to a six year old.", "Write a poem about a frog.", "What is 2 + 2?", "Hi", "Tell me a story about a lighthouse keeper and the sea.", "Why is the sky blue?", "List three fruits.", "Translate 'cat' to French.", "Summarize: the meeting is moved to Tuesday."]
        .iter()
        .map(|p| tok.encode(p))
        .collect()
}

fn cfg(temperature: f32, eos: Option<u32>) -> GenerateConfig {
    GenerateConfig { max_new_tokens: 8, temperature, eos_token_id: eos, seed: 5, ..Default::default() }
}

/// Prefers longer responses.
struct Longer;
impl Judge for Longer {
    fn score(&self, _prompt: &str, response: &str) -> Result<f32> {
        Ok(response.len() as f32)
    }
}

/// Counts occurrences of a word.
struct Counts(String);
impl Judge for Counts {
    fn score(&self, _prompt: &str, response: &str) -> Result<f32> {
        Ok(response.matches(self.0.as_str()).count() as f32)
    }
}

#[test]
fn a_policy_against_itself_ties_everywhere() {
    let m = tiny(1);
    let p = prompts();
    for eos in [None, Some(models::tokenizer::EOT)] {
        let w = win_rate(&m, &m, &p, &Longer, &cfg(1.0, eos)).unwrap();
        assert_eq!(w, WinRate { wins: 0, ties: p.len(), losses: 0, rate: 0.5 });
    }
    // A separate copy with the same weights, sampled with the same seed: the same responses.
    let w = win_rate(&m, &m.copy().unwrap(), &p, &Longer, &cfg(0.7, None)).unwrap();
    assert_eq!(w.rate, 0.5);
}

#[test]
fn known_rates_on_a_constructed_case() {
    let yes = Tokenizer::gpt2().encode(" yes");
    assert_eq!(yes.len(), 1);
    let a = parrot(2, yes[0]);
    let b = tiny(3);
    let p = prompts();
    let c = cfg(1.0, None);
    // The parrot says " yes" every time; the random model (almost surely) never does.
    let sa = sample(&a, &p, &c).unwrap();
    assert!(sa.tokens.iter().all(|t| t.len() == 8 && t.iter().all(|&x| x == yes[0])));
    let sb = sample(&b, &p, &c).unwrap();
    assert!(sb.tokens.iter().flatten().all(|&x| x != yes[0]));
    let judge = Counts(" yes".into());
    assert_eq!(win_rate(&a, &b, &p, &judge, &c).unwrap(), WinRate { wins: p.len(), ties: 0, losses: 0, rate: 1.0 });
    assert_eq!(win_rate(&b, &a, &p, &judge, &c).unwrap(), WinRate { wins: 0, ties: 0, losses: p.len(), rate: 0.0 });
    // Through a trait object, with ties counted half: 3 wins, 2 ties, 1 loss = 4 / 6.
    let boxed: Box<dyn Judge> = Box::new(Longer);
    assert_eq!(boxed.score("", "abc").unwrap(), 3.0);
    assert!((WinRate::from_counts(3, 2, 1).rate - 4.0 / 6.0).abs() < 1e-12);
}

#[test]
fn kl_of_a_policy_to_itself_is_zero() {
    let m = tiny(4);
    let p = prompts();
    for c in [cfg(1.0, Some(models::tokenizer::EOT)), cfg(0.0, None), cfg(0.7, None)] {
        let kl = kl_to_reference(&m, &m, &p, &c).unwrap();
        assert!(kl.abs() < 1e-5, "{kl}");
        let kl = kl_to_reference(&m, &m.copy().unwrap(), &p, &c).unwrap();
        assert!(kl.abs() < 1e-5, "{kl}");
    }
    // The parrot is near-deterministic; under a random reference its tokens cost ~ln(50257) each.
    let yes = Tokenizer::gpt2().encode(" yes")[0];
    let kl = kl_to_reference(&parrot(2, yes), &tiny(3), &p, &cfg(1.0, None)).unwrap();
    assert!(kl > 8.0 * 5.0, "{kl}");
}

#[test]
fn lm_loss_matches_the_models_loss_on_the_same_windows() {
    let m = tiny(6);
    let tokens: Vec<u32> = (0..100u32).map(|i| (i * 7919 + 13) % 50257).collect();
    let window = |s: usize, e: usize| -> (f64, usize) {
        let ids: Vec<i64> = tokens[s..e].iter().map(|&t| t as i64).collect();
        let t = ids.len() - 1;
        let l = m.loss(&Tensor::new(ids[..t].to_vec(), &[1, t]).unwrap(), &Tensor::new(ids[1..].to_vec(), &[1, t]).unwrap()).unwrap().to_scalar().unwrap();
        (l as f64, t)
    };
    // One window of 17 tokens.
    let one = lm_loss(&m, &tokens[..17], 16).unwrap();
    assert!((one - window(0, 17).0).abs() < 1e-5, "{one}");
    // 100 tokens in windows of 17: five full ones and a last of 15, weighted by predicted tokens.
    let all = lm_loss(&m, &tokens, 16).unwrap();
    let (mut total, mut n) = (0.0, 0);
    for s in (0..100).step_by(17) {
        let (l, t) = window(s, (s + 17).min(100));
        total += l * t as f64;
        n += t;
    }
    assert!((all - total / n as f64).abs() < 1e-5, "{all} vs {}", total / n as f64);
    assert!(lm_loss(&m, &tokens[..1], 16).is_err());
}
