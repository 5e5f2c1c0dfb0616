#!/usr/bin/env python3
"""Compare greedy tokens of our engine with transformers' (and the GPU engine with the CPU one),
telling a real mismatch from a near tie that bf16 arithmetic may break either way.

Inputs: scripts/hf_greedy.py's JSON, and one or two `lab generate --json --logit-margins`
outputs for the same prompts (e.g. `--engine cuda=cuda.json --engine cpu=cpu.json`). Pairs
compared: each engine against transformers, and with two engines, the first against the second.

Per prompt, tokens are compared step by step. The first differing step decides:
  - the reference's top1 - top2 logit margin there is below the noise threshold: "noise" (the
    two best tokens were too close to call, and both answers are right);
  - otherwise: "MISMATCH", a real disagreement.
After the first divergence the rest of that prompt is not compared (the contexts differ).
The reference of a pair is its second side: transformers, or the second engine (the CPU engine,
f32 throughout, the more precise one). Margins are of raw logits on both sides.

Noise threshold: margin < --noise-abs + --noise-rel * |top1 logit|. bf16 keeps 8 significant
bits (a relative step of 2^-8 = 0.4%), so a bf16 logit of magnitude L is itself rounded to
about L/256, and the bf16 activations it is computed from carry such roundings in every layer.
Measured on the SmolLM2-135M and Llama-3.2-1B shapes (scripts/README.md): transformers' bf16
margins differ from its float32 ones by up to 1.8% and 1.3% of |top1|; two bf16 runs (GPU engine
vs transformers) carry about sqrt(2) times that. Defaults: 0.25 + 4% of |top1|.

While the tokens agree, the top logits are compared too: |top1_a - top1_b| must stay within
--logit-rtol * |top1_b| (default 5%; bf16 vs float32 measured <= 1.4%); a larger drift is reported as "DRIFT" even when the argmax
survives it (a bug that shifts every logit a little would not change greedy tokens).

Prints a table and exits 1 if any prompt has a MISMATCH or DRIFT, 2 on bad input.
"""
import argparse
import json
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hf", required=True, help="hf_greedy.py's JSON")
    p.add_argument("--engine", action="append", required=True, metavar="LABEL=FILE",
                   help="`lab generate --json --logit-margins` output (once or twice)")
    p.add_argument("--noise-abs", type=float, default=0.25)
    p.add_argument("--noise-rel", type=float, default=0.04)
    p.add_argument("--logit-rtol", type=float, default=0.05)
    p.add_argument("--title", default="", help="a heading printed above the table")
    return p.parse_args()


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")


def side(label, results, path):
    """A list of per-prompt dicts with prompt_token_ids, token_ids and, if known, margins and
    top1_logits."""
    if not isinstance(results, list) or not results:
        fail(f"{path}: expected a non-empty list of results")
    for r in results:
        if "token_ids" not in r or "prompt_token_ids" not in r:
            fail(f"{path}: a result lacks token_ids or prompt_token_ids")
    return {"label": label, "results": results, "path": path}


def compare(a, b, i, args):
    """Prompt i of sides a and b, with b the reference. Returns a table row (dict)."""
    ra, rb = a["results"][i], b["results"][i]
    ta, tb = ra["token_ids"], rb["token_ids"]
    margins, top_b, top_a = rb.get("margins"), rb.get("top1_logits"), ra.get("top1_logits")
    row = {"pair": f"{a['label']} vs {b['label']}", "prompt": i + 1,
           "prompt_len": len(rb["prompt_token_ids"]), "distinct": len(set(tb)),
           "compared": 0, "agreed": 0, "diverged_at": None, "margin": None, "drift": 0.0}
    n = min(len(ta), len(tb))
    for s in range(n):
        row["compared"] += 1
        if ta[s] == tb[s]:
            row["agreed"] += 1
            if top_a and top_b:
                drift = abs(top_a[s] - top_b[s]) / max(abs(top_b[s]), 1e-6)
                row["drift"] = max(row["drift"], drift)
            continue
        row["diverged_at"] = s
        if margins is None:
            row["verdict"] = "MISMATCH (reference has no margins)"
            return row
        m = margins[s]
        limit = args.noise_abs + args.noise_rel * abs(top_b[s] if top_b else 0.0)
        row["margin"], row["limit"] = m, limit
        row["verdict"] = "noise" if m < limit else "MISMATCH"
        break
    else:
        row["verdict"] = "agree" if len(ta) == len(tb) else "MISMATCH (lengths differ)"
    if row["verdict"] in ("agree", "noise") and row["drift"] > args.logit_rtol:
        row["verdict"] = "DRIFT"
    return row


def main():
    args = parse_args()
    hf = load_json(args.hf)
    sides = []
    for spec in args.engine:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            fail(f"--engine {spec!r}: expected LABEL=FILE")
        sides.append(side(label, load_json(path), path))
    if len(sides) > 2:
        fail("give --engine once or twice")
    ref = side("transformers", hf.get("results") if isinstance(hf, dict) else None, args.hf)
    for s in sides:
        if len(s["results"]) != len(ref["results"]):
            fail(f"{s['path']} has {len(s['results'])} prompts, {args.hf} "
                 f"{len(ref['results'])}")
        for i, (x, y) in enumerate(zip(s["results"], ref["results"])):
            if x["prompt_token_ids"] != y["prompt_token_ids"]:
                fail(f"prompt {i + 1} differs between {s['path']} and {args.hf}")

    pairs = [(s, ref) for s in sides] + ([(sides[0], sides[1])] if len(sides) == 2 else [])
    rows = [compare(a, b, i, args) for a, b in pairs for i in range(len(ref["results"]))]

    if args.title:
        print(f"### {args.title}")
    print(f"noise: margin < {args.noise_abs} + {args.noise_rel} * |top1|; "
          f"logit drift limit {args.logit_rtol:.0%}; reference = the pair's second side")
    print("| pair | prompt | len | distinct | compared | agreed | diverged at | margin there "
          "| noise limit | max top1 drift | verdict |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        fmt = lambda v, f="{:.3f}": "-" if v is None else f.format(v)  # noqa: E731
        print(f"| {r['pair']} | {r['prompt']} | {r['prompt_len']} | {r['distinct']} "
              f"| {r['compared']} | {r['agreed']} | {fmt(r['diverged_at'], '{}')} "
              f"| {fmt(r['margin'])} | {fmt(r.get('limit'))} | {r['drift']:.2%} "
              f"| {r['verdict']} |")
    bad = [r for r in rows if r["verdict"] not in ("agree", "noise")]
    for pair in dict.fromkeys(r["pair"] for r in rows):
        mine = [r for r in rows if r["pair"] == pair]
        print(f"{pair}: {sum(r['agreed'] for r in mine)}/{sum(r['compared'] for r in mine)} "
              f"tokens agreed; {sum(r['verdict'] == 'agree' for r in mine)} prompts fully, "
              f"{sum(r['verdict'] == 'noise' for r in mine)} diverged within noise, "
              f"{sum(r['verdict'] not in ('agree', 'noise') for r in mine)} failed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
