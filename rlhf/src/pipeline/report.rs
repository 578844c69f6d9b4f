//! What a run leaves for people: the world's data as JSONL (the formats `instructgpt sft/rm/ppo`
//! read), the results table, and report.html: one self-contained page with the curves as inline
//! SVG, the table and sample answers.

use super::config::PipelineConfig;
use super::evaluate::{Results, Sample};
use super::world::Task;
use crate::data::{Comparison, Demonstration};
use anyhow::Result;
use std::fmt::Write as _;
use std::path::Path;

fn write_jsonl(path: &Path, lines: impl Iterator<Item = serde_json::Value>) -> Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.to_string());
        text.push('\n');
    }
    engine::safetensors::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// `dir/<split>_prompts.jsonl` ({"prompt", "family"}) and `dir/demonstrations.jsonl` (the SFT split, as the labelers wrote it, with its gold score).
pub fn write_data(dir: &Path, splits: &[(&str, &[Task])], sft: &[Task], demos: &[Demonstration]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, tasks) in splits {
        write_jsonl(&dir.join(format!("{name}_prompts.jsonl")), tasks.iter().map(|t| serde_json::json!({ "prompt": t.prompt, "family": t.family.name() })))?;
    }
    write_jsonl(&dir.join("demonstrations.jsonl"), demos.iter().zip(sft).map(|(d, t)| serde_json::json!({ "prompt": d.prompt, "response": d.response, "gold": t.score(&d.response) })))
}

/// The labelers' K-wise rankings ({"prompt", "responses", "ranking"}, best first, as `instructgpt
/// rm` reads them), with each response's gold score beside them (for analysis; never trained on).
pub fn write_comparisons(path: &Path, data: &[Comparison], tasks: &[Task]) -> Result<()> {
    write_jsonl(path, data.iter().zip(tasks).map(|(c, t)| serde_json::json!({ "prompt": c.prompt, "responses": c.responses, "ranking": c.ranking, "gold": c.responses.iter().map(|r| t.score(r)).collect::<Vec<_>>() })))
}

const MODELS: [&str; 5] = ["pretrained", "sft", "ppo", "ppo_ptx", "large_sft"];

fn cell(v: Option<&f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

/// The results as the table the CLI prints.
pub fn table(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<12} {:>10} {:>14} {:>10} {:>8} {:>8}", "model", "gold score", "ptx loss", "KL to SFT", "length", "habits");
    for m in MODELS.iter().filter(|m| r.gold_score.contains_key(**m)) {
        let _ = writeln!(s, "{:<12} {:>10} {:>14} {:>10} {:>8} {:>8}", m, cell(r.gold_score.get(*m), 3), cell(r.ptx_loss.get(*m), 4), cell(r.kl.get(*m), 3), cell(r.response_length.get(*m), 1), cell(r.habit_rate.get(*m), 3));
    }
    for (k, w) in &r.win_counts {
        let _ = writeln!(s, "win rate {k:<28} {:.3}  ({} wins, {} ties, {} losses; gold judge, {} held-out prompts x {})", w.rate, w.wins, w.ties, w.losses, r.eval_prompts, r.eval_samples.max(1));
    }
    let _ = writeln!(s, "reward model held-out accuracy {:.3}  (labelers agree with each other on {:.3} of pairs, with the gold score on {:.3})", r.rm_accuracy, r.labeler_agreement, r.labeler_gold_agreement);
    let (ps, pt, sf) = (r.ptx_loss.get("ppo"), r.ptx_loss.get("ppo_ptx"), r.ptx_loss.get("sft"));
    if let (Some(ps), Some(pt), Some(sf)) = (ps, pt, sf) {
        let _ = writeln!(s, "alignment tax (ptx loss rise over SFT): PPO {:+.4}, PPO-ptx {:+.4}", ps - sf, pt - sf);
    }
    let _ = writeln!(s, "wall time {:.0} s", r.seconds.get("total").copied().unwrap_or(f64::NAN));
    s
}

/// (x, y) pairs of `y_key` against `x_key` from a JSONL metrics file (lines without y are skipped).
pub fn series(path: &Path, x_key: &str, y_key: &str) -> Vec<(f64, f64)> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get(x_key)?.as_f64()?, v.get(y_key)?.as_f64()?)))
        .filter(|(_, y)| y.is_finite())
        .collect()
}

const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A line chart as an inline SVG.
pub fn chart(title: &str, x_label: &str, lines: &[(&str, Vec<(f64, f64)>)]) -> String {
    let (w, h, l, r, t, b) = (460.0, 260.0, 56.0, 12.0, 28.0, 40.0);
    let pts: Vec<&(f64, f64)> = lines.iter().flat_map(|(_, p)| p).collect();
    let mut svg = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}"><text x="{}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#, w / 2.0, esc(title));
    if pts.is_empty() {
        svg.push_str(r#"<text x="230" y="130" text-anchor="middle" font-size="12">no data</text></svg>"#);
        return svg;
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in &pts {
        (x0, x1, y0, y1) = (x0.min(*x), x1.max(*x), y0.min(*y), y1.max(*y));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    (y0, y1) = (y0 - pad, y1 + pad);
    let px = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
    let py = |y: f64| t + (1.0 - (y - y0) / (y1 - y0)) * (h - t - b);
    let _ = write!(svg, r##"<rect x="{l}" y="{t}" width="{}" height="{}" fill="none" stroke="#888"/>"##, w - l - r, h - t - b);
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        let _ = write!(svg, r##"<text x="{}" y="{}" text-anchor="end" font-size="10">{}</text><line x1="{l}" x2="{}" y1="{2}" y2="{2}" stroke="#eee"/>"##, l - 4.0, py(y) + 3.0, if (y1 - y0) < 0.1 { format!("{y:.3}") } else { format!("{y:.2}") }, w - r);
    }
    for i in 0..=4 {
        let x = x0 + (x1 - x0) * i as f64 / 4.0;
        let _ = write!(svg, r#"<text x="{}" y="{}" text-anchor="middle" font-size="10">{:.0}</text>"#, px(x), h - b + 14.0, x);
    }
    let _ = write!(svg, r#"<text x="{}" y="{}" text-anchor="middle" font-size="11">{}</text>"#, l + (w - l - r) / 2.0, h - 6.0, esc(x_label));
    for (i, (name, p)) in lines.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let coords: Vec<String> = p.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let _ = write!(svg, r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{}"/>"#, coords.join(" "));
        if p.len() == 1 {
            let _ = write!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#, px(p[0].0), py(p[0].1));
        }
        let _ = write!(svg, r#"<text x="{}" y="{}" font-size="11" fill="{c}">{}</text>"#, l + 8.0, t + 14.0 + 13.0 * i as f64, esc(name));
    }
    svg.push_str("</svg>");
    svg
}

/// report.html: curves, the results table, sample answers, the settings.
pub fn write_html(out: &Path, cfg: &PipelineConfig, r: &Results, samples: &[Sample]) -> Result<()> {
    let m = |stage: &str| out.join(stage).join("metrics.jsonl");
    let mut pretrain = vec![("train", series(&m("pretrained"), "step", "loss")), ("held-out", series(&m("pretrained"), "step", "val_loss"))];
    if cfg.large_model.is_some() {
        pretrain.push(("large: held-out", series(&m("large_pretrained"), "step", "val_loss")));
    }
    let charts = [
        chart("Pretraining loss (nats/byte)", "step", &pretrain),
        chart("SFT loss (response bytes)", "step", &[("train", series(&m("sft"), "step", "loss")), ("held-out", series(&m("sft"), "step", "val_loss"))]),
        chart("Reward model accuracy", "step", &[("train batch (labelers' order)", series(&m("rm"), "step", "accuracy")), ("held-out (gold order)", series(&out.join("rm").join("heldout.jsonl"), "step", "gold_accuracy"))]),
        chart("PPO: reward-model score", "iteration", &[("PPO", series(&m("ppo"), "iteration", "score_mean")), ("PPO-ptx", series(&m("ppo_ptx"), "iteration", "score_mean"))]),
        chart("PPO: KL to SFT", "iteration", &[("PPO", series(&m("ppo"), "iteration", "kl")), ("PPO-ptx", series(&m("ppo_ptx"), "iteration", "kl"))]),
        chart("PPO: held-out ptx loss (alignment tax)", "iteration", &[("PPO", series(&m("ppo"), "iteration", "heldout_ptx_loss")), ("PPO-ptx", series(&m("ppo_ptx"), "iteration", "heldout_ptx_loss"))]),
    ];
    let mut h = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>instructgpt-rs pipeline report</title><style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}pre{background:#f6f6f6;padding:1em;overflow-x:auto}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}.charts{display:flex;flex-wrap:wrap;gap:8px}</style></head><body>");
    let _ = write!(h, "<h1>InstructGPT pipeline: preset <code>{}</code>, seed {}</h1>", esc(&r.preset), r.seed);
    let _ = write!(h, "<h2>Results</h2><pre>{}</pre>", esc(&table(r)));
    let _ = write!(h, "<h2>Curves</h2><div class=\"charts\">{}</div>", charts.join(""));
    h.push_str("<h2>Gold score by instruction family</h2><table><tr><th>family</th>");
    let models: Vec<&str> = MODELS.iter().copied().filter(|k| r.gold_score_by_family.contains_key(*k)).collect();
    for k in &models {
        let _ = write!(h, "<th>{k}</th>");
    }
    h.push_str("</tr>");
    for fam in super::world::Family::ALL {
        let _ = write!(h, "<tr><td>{}</td>", fam.name());
        for k in &models {
            let _ = write!(h, "<td>{}</td>", cell(r.gold_score_by_family[*k].get(fam.name()), 3));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table><h2>Sample answers (held-out prompts)</h2><table><tr><th>prompt</th><th>reference</th>");
    for k in &models {
        let _ = write!(h, "<th>{k}</th>");
    }
    h.push_str("</tr>");
    for s in samples {
        let _ = write!(h, "<tr><td><code>{}</code></td><td><code>{}</code></td>", esc(s.prompt.trim_end()), esc(&s.reference_answer));
        for k in &models {
            let (text, g) = s.responses.get(*k).cloned().unwrap_or_default();
            let _ = write!(h, "<td><code>{}</code> ({g:.2})</td>", esc(&text));
        }
        h.push_str("</tr>");
    }
    let _ = write!(h, "</table><h2>Settings</h2><pre>{}</pre></body></html>", esc(&serde_json::to_string_pretty(cfg)?));
    engine::safetensors::write_atomic(&out.join("report.html"), h.as_bytes())?;
    Ok(())
}
