#!/usr/bin/env python3
"""Rebuild the bundled RLHF subsets in data/rlhf/ from the shared datasets (deterministic: the
first records that pass the documented filters, in file order). Run from the repository root:
    python3 data/rlhf/make_subsets.py /path/to/shared/data
The Rust code never reads the shared folder; it reads only the files this script writes."""
import gzip, json, os, sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "../shared/data"
OUT = os.path.dirname(os.path.abspath(__file__))


def human(text):
    # The chat template of every bundled prompt (Anthropic's, as HH-RLHF uses it).
    return "\n\nHuman: " + text.strip()


def chat_prompt(messages):
    turns = "".join(human(m["content"]) if m["role"] == "user" else "\n\nAssistant: " + m["content"].strip() for m in messages)
    return turns + "\n\nAssistant:"


def reply(text):
    return " " + text.strip()


def jsonl(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def write(name, rows):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{name}: {len(rows)} records, {os.path.getsize(os.path.join(OUT, name))} bytes")


# Demonstrations: all 175 Self-Instruct seed tasks, then the first 125 OASST1 sft rows of at most
# 1,500 characters (prompt + response).
demos = []
for t in jsonl(f"{SRC}/self_instruct/seed_tasks.jsonl"):
    inst = t["instances"][0]
    user = t["instruction"].strip() + (("\n\nInput: " + inst["input"].strip()) if inst["input"].strip() else "")
    demos.append({"prompt": human(user) + "\n\nAssistant:", "response": reply(inst["output"]), "source": "self-instruct/" + t["id"]})
n = 0
for r in jsonl(f"{SRC}/oasst1_en_val/sft.jsonl"):
    p, resp = chat_prompt(r["messages"]), reply(r["response"])
    if n < 125 and len(p) + len(resp) <= 1500 and resp.strip():
        demos.append({"prompt": p, "response": resp, "source": "oasst1/" + r["response_message_id"]})
        n += 1
write("demonstrations.jsonl", demos)

# HH-RLHF, in its own format: the first 150 helpful-base test pairs of at most 1,500 characters
# each whose final replies are non-empty and differ.
def hh_reply(d):
    return d[d.rfind("\n\nAssistant:") + len("\n\nAssistant:"):].strip()

hh = []
for r in jsonl(f"{SRC}/hh_rlhf/helpful-base.test.jsonl.gz"):
    c, j = r["chosen"], r["rejected"]
    if len(hh) < 150 and len(c) <= 1500 and len(j) <= 1500 and hh_reply(c) and hh_reply(j) and c != j:
        hh.append({"chosen": c, "rejected": j})
write("hh_rlhf_helpful.jsonl", hh)

# OASST1 K-wise rankings, rebuilt from pairs.jsonl: every ranked reply of a prompter turn, in
# message-id order, ranking = indices best first. The first 80 turns with every reply <= 800 chars.
groups = {}
order = []
for r in jsonl(f"{SRC}/oasst1_en_val/pairs.jsonl"):
    key = r["parent_message_id"]
    if key not in groups:
        groups[key] = {"messages": r["messages"], "replies": {}}
        order.append(key)
    g = groups[key]["replies"]
    g[r["chosen_message_id"]] = (r["chosen_rank"], r["chosen"])
    g[r["rejected_message_id"]] = (r["rejected_rank"], r["rejected"])
ranked = []
for key in order:
    g = groups[key]
    ids = sorted(g["replies"])
    texts = [g["replies"][i][1] for i in ids]
    ranks = [g["replies"][i][0] for i in ids]
    if len(ranked) < 80 and all(0 < len(t.strip()) <= 800 for t in texts) and len(set(ranks)) == len(ranks) and len(set(texts)) == len(texts):
        ranking = sorted(range(len(ids)), key=lambda i: ranks[i])
        ranked.append({"prompt": chat_prompt(g["messages"]), "responses": [reply(t) for t in texts], "ranking": ranking})
write("oasst1_rankings.jsonl", ranked)

# TL;DR comparisons, in their own format: the first 60 of batch 13 whose post is <= 1,200 chars.
tldr = []
for r in jsonl(f"{SRC}/summarize_from_feedback/comparisons_batch13.jsonl.gz"):
    if len(tldr) < 60 and len(r["info"]["post"]) <= 1200:
        tldr.append(r)
write("tldr_comparisons.jsonl", tldr)

# PPO prompts: the first 300 single-turn prompts of ppo_prompts (<= 500 chars) that are not the
# first turn of any bundled demonstration or comparison (InstructGPT kept the stages' prompts apart).
used = {d["prompt"].split("\n\nAssistant:")[0] for d in demos}
used |= {d["chosen"].split("\n\nAssistant:")[0] for d in hh}
used |= {d["prompt"].split("\n\nAssistant:")[0] for d in ranked}
ppo = []
for r in jsonl(f"{SRC}/ppo_prompts/prompts.jsonl"):
    first = human(r["prompt"])
    if len(ppo) < 300 and len(r["prompt"]) <= 500 and r["prompt"].strip() and first not in used:
        ppo.append({"prompt": first + "\n\nAssistant:", "source": r["source"]})
write("ppo_prompts.jsonl", ppo)

# Held-out evaluation prompts: all 80 Vicuna-bench questions and the first turn of all 80 MT-bench
# questions.
ev = [{"prompt": human(r["turns"][0]) + "\n\nAssistant:", "source": f"vicuna-bench/{r['question_id']}"} for r in jsonl(f"{SRC}/eval_prompts/vicuna_bench_questions.jsonl")]
ev += [{"prompt": human(r["turns"][0]) + "\n\nAssistant:", "source": f"mt-bench/{r['question_id']}"} for r in jsonl(f"{SRC}/eval_prompts/mt_bench_questions.jsonl")]
write("eval_prompts.jsonl", ev)
