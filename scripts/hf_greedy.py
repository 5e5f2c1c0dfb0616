#!/usr/bin/env python3
"""Greedy decoding with Hugging Face transformers for prompts given as token ids: the reference
that `lab generate` is checked against (scripts/compare_greedy.py, scripts/gpu-engine-check.sh).

The model directory is one `lab save-model` wrote (random weights of a real shape). Each prompt
runs alone (batch 1: no padding, no attention mask to differ from the engine), one forward per
step with a KV cache, EOS ignored. Per step it records the chosen id, the runner-up and the
top1 - top2 margin of the raw logits (the model's output, before any logits processor): a
small margin means the two best tokens are within the arithmetic's noise of each other.

Usage:
    python scripts/hf_greedy.py --model DIR --prompts prompts.json --max-new-tokens 32 \\
        --out hf.json [--device auto|cuda|cpu] [--dtype bfloat16|float32]

prompts.json is the format of `lab generate --prompts-file`: a JSON array whose items are
arrays of token ids (strings are refused: this script has no tokenizer).
"""
import argparse
import inspect
import json
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="Hugging Face model directory")
    p.add_argument("--prompts", required=True, help="JSON array of token-id arrays")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--out", required=True, help="where to write the JSON result")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                   help="auto: cuda if available, else cpu")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    return p.parse_args()


def load_prompts(path):
    with open(path) as f:
        prompts = json.load(f)
    ok = isinstance(prompts, list) and prompts and all(
        isinstance(p, list) and p and all(isinstance(i, int) and i >= 0 for i in p)
        for p in prompts)
    if not ok:
        sys.exit(f"error: {path} must be a non-empty JSON array of non-empty arrays of token ids")
    return prompts


def top2(logits):
    """(top1 id, top1 value, runner-up id, margin) of a 1-D float tensor. argmax takes the
    lowest id on a tie (as the engine's sampler does); the runner-up is the best other id."""
    best = int(torch.argmax(logits))
    top1 = float(logits[best])
    rest = logits.clone()
    rest[best] = float("-inf")
    second = int(torch.argmax(rest))
    return best, top1, second, top1 - float(rest[second])


def forward_kwargs(model):
    """The names this transformers version uses: the KV cache argument was `past_key_values`
    (renamed `cache` in 5.x) and `logits_to_keep` (4.50+) spares the prefill's full logits."""
    params = inspect.signature(model.forward).parameters
    cache = "cache" if "cache" in params else "past_key_values"
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    return cache, extra


@torch.inference_mode()
def greedy(model, ids, new_tokens, device):
    """One prompt: prefill, then one forward per new token, reusing the KV cache."""
    cache_arg, extra = forward_kwargs(model)
    step = {"token_ids": [], "runner_up_ids": [], "margins": [], "top1_logits": []}
    input_ids = torch.tensor([ids], device=device)
    past = None
    for _ in range(new_tokens):
        out = model(input_ids=input_ids, use_cache=True, **{cache_arg: past}, **extra)
        past = getattr(out, cache_arg)
        best, top1, second, margin = top2(out.logits[0, -1].float())
        step["token_ids"].append(best)
        step["runner_up_ids"].append(second)
        step["margins"].append(round(margin, 6))
        step["top1_logits"].append(round(top1, 6))
        input_ids = torch.tensor([[best]], device=device)
    return step


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device")
    else:
        device = args.device
    dtype = DTYPES[args.dtype]
    prompts = load_prompts(args.prompts)

    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype,
                                                 attn_implementation="sdpa")
    model = model.to(device=device, dtype=dtype).eval()
    vocab = model.config.vocab_size
    if any(i >= vocab for p in prompts for i in p):
        sys.exit(f"error: a prompt token id is outside the vocabulary (size {vocab})")
    load_s = time.time() - t0

    t0 = time.time()
    results = []
    for ids in prompts:
        r = greedy(model, ids, args.max_new_tokens, device)
        results.append({"prompt_token_ids": ids, **r})
    run_s = time.time() - t0

    report = {
        "model": args.model,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "dtype": args.dtype,
        "attn_implementation": "sdpa",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "max_new_tokens": args.max_new_tokens,
        "notes": "greedy, batch 1, EOS ignored, one forward per step with a KV cache; "
                 "margins[i] = top1 - top2 of the raw logits at step i (in the model's dtype, "
                 "read as float32), runner_up_ids[i] = the top-2 id, top1_logits[i] = the top "
                 "logit. Values rounded to 1e-6.",
        "load_seconds": round(load_s, 2),
        "run_seconds": round(run_s, 2),
        "results": results,
    }
    with open(args.out, "w") as f:
        json.dump(report, f)
    small = min((m, i, s) for i, r in enumerate(results) for s, m in enumerate(r["margins"]))
    print(f"hf_greedy: {len(prompts)} prompts x {args.max_new_tokens} tokens on {device} "
          f"({args.dtype}) in {run_s:.1f} s (load {load_s:.1f} s); smallest margin "
          f"{small[0]:.4f} (prompt {small[1] + 1}, step {small[2]}) -> {args.out}")


if __name__ == "__main__":
    main()
