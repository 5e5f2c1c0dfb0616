#!/usr/bin/env python3
"""nano-vllm's benchmark workload in Hugging Face transformers: the peer of
`lab bench --workload nano-vllm --json`, with the same JSON keys.

Workload (nano-vllm's bench.py, drawn here with Python's own `random`, which the engine's
`py_random.rs` reproduces bit for bit): `random.seed(0)`; for each request a prompt length
`randint(100, max_input_len)` and that many ids `randint(0, 10000)`; then, for each request, an
output length `randint(100, max_output_len)` (a lower bound above the maximum becomes the
maximum). 256 x 1024 x 1024 gives 142,827 prompt and 133,966 output tokens. Ids above a toy
model's vocabulary wrap around it (id % vocab), as in the engine.

How transformers runs it: every request arrives at t = 0; they go through `model.generate` in
request order, in left-padded batches of `--batch-size` (64), sampling at temperature 0.6 over
the whole vocabulary (top_k=0, top_p=1). A batch generates to its longest output length
(min_new_tokens = max_new_tokens, so EOS never ends a row early); each request counts only its
own output length: its output tokens are its first `max_tokens`, it finishes when its
`max_tokens`-th token exists (the rest of its row is work the batch does for the others, and is
counted in the time but not in the tokens). TTFT is from t = 0 to the batch's first token (so it
includes the batches before); TPOT is (its last token - its first) / (max_tokens - 1); latency
is from t = 0 to its last token. Token
times come from CUDA events recorded by a stopping criterion after each step (no extra host
sync), on the CPU from the host clock.

Batch-1 decode: (time(generate 129 tokens) - time(generate 1)) / 128, greedy, for the first
128 ids of nano-vllm's first prompt, median of --runs after a warm-up.

Usage (model dir as written by `lab save-model`: config.json + model.safetensors):
    python3 scripts/bench_transformers_gpu.py --model DIR [--limit N] > result.json
    python3 scripts/bench_transformers_gpu.py --make-test-model /tmp/tiny-hf   # for a CPU check
The figures go to stderr, the JSON line to stdout.
"""
import argparse
import json
import random
import statistics
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, StoppingCriteria, StoppingCriteriaList


def workload(num_requests, max_input_len, max_output_len):
    """nano-vllm's draws, in its order: all prompts, then all output lengths."""
    random.seed(0)
    lo_in, lo_out = min(100, max_input_len), min(100, max_output_len)
    prompts = [
        [random.randint(0, 10000) for _ in range(random.randint(lo_in, max_input_len))]
        for _ in range(num_requests)
    ]
    max_tokens = [random.randint(lo_out, max_output_len) for _ in range(num_requests)]
    return prompts, max_tokens


def decode_b1_prompt():
    """The first 128 ids of nano-vllm's first prompt."""
    random.seed(0)
    random.randint(100, 1024)
    return [random.randint(0, 10000) for _ in range(128)]


def percentile(values, p):
    """Linear interpolation between the nearest ranks (numpy's default; the engine's too)."""
    if not values:
        return float("nan")
    v = sorted(values)
    pos = p / 100 * (len(v) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


class StepClock(StoppingCriteria):
    """Never stops generation; marks the time each step's new token exists (it is called once
    per step, after the token is appended): a CUDA event on the GPU, the host clock on the CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.marks = []
        self.never = None

    def __call__(self, input_ids, scores, **kwargs):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())
        if self.never is None or self.never.shape[0] != input_ids.shape[0]:
            self.never = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self.never


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def left_padded(prompts, pad_id, device):
    width = max(map(len, prompts))
    ids = [[pad_id] * (width - len(p)) + p for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return (torch.tensor(ids, device=device), torch.tensor(mask, device=device))


def generate(model, prompts, new_tokens, pad_id, device, sample, clock=None):
    ids, mask = left_padded(prompts, pad_id, device)
    kw = dict(do_sample=True, temperature=0.6, top_k=0, top_p=1.0) if sample else dict(do_sample=False)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=pad_id,
        stopping_criteria=StoppingCriteriaList([clock] if clock else []),
        **kw,
    )
    made = out.shape[1] - ids.shape[1]
    if made != new_tokens:
        sys.exit(f"error: generate made {made} tokens, not {new_tokens}")
    return out


def run_workload(model, prompts, max_tokens, batch_size, pad_id, device):
    """All requests at t = 0, batches in request order; per-request TTFT and TPOT."""
    ttft, tpot, latency, steps = [], [], [], 0
    sync(device)
    t0 = time.perf_counter()
    for b in range(0, len(prompts), batch_size):
        batch, lens = prompts[b : b + batch_size], max_tokens[b : b + batch_size]
        clock = StepClock(device)
        sync(device)
        start = time.perf_counter() - t0
        if clock.cuda:
            start_event = torch.cuda.Event(enable_timing=True)
            start_event.record()
        generate(model, batch, max(lens), pad_id, device, True, clock)
        sync(device)
        if clock.cuda:  # token k's time = batch start + GPU time from the start event
            marks = [start + start_event.elapsed_time(e) / 1e3 for e in clock.marks]
        else:
            marks = [m - t0 for m in clock.marks]
        steps += max(lens)
        for m in lens:
            ttft.append(marks[0])
            latency.append(marks[m - 1])
            if m >= 2:
                tpot.append((marks[m - 1] - marks[0]) / (m - 1))
    return time.perf_counter() - t0, ttft, tpot, latency, steps


def decode_b1_ms(model, ids, pad_id, device, runs):
    def timed(n):
        sync(device)
        t = time.perf_counter()
        generate(model, [ids], n, pad_id, device, False)
        sync(device)
        return time.perf_counter() - t

    timed(129)  # warm-up
    t129 = statistics.median(timed(129) for _ in range(runs))
    t1 = statistics.median(timed(1) for _ in range(runs))
    return 1e3 * (t129 - t1) / 128


def make_test_model(out):
    """A tiny random Llama in the layout `lab save-model` writes (config + safetensors)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    print(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="Hugging Face model directory (config.json + model.safetensors)")
    ap.add_argument("--workload", choices=["nano-vllm", "decode-b1"], default="nano-vllm",
                    help="nano-vllm: the workload, then batch-1 decode; decode-b1: batch-1 decode alone")
    ap.add_argument("--num-requests", type=int, default=256)
    ap.add_argument("--max-input-len", type=int, default=1024)
    ap.add_argument("--max-output-len", type=int, default=1024)
    ap.add_argument("--limit", type=int, help="run only the first N requests of the workload")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3, help="batch-1 decode: timed runs (median)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--threads", type=int, help="CPU threads for torch")
    ap.add_argument("--make-test-model", metavar="DIR", help="write a tiny random model to DIR and exit")
    args = ap.parse_args()
    if args.make_test_model:
        return make_test_model(args.make_test_model)
    if not args.model:
        sys.exit("error: --model DIR is required")
    n = args.num_requests
    if n < 1 or args.max_input_len < 1 or args.max_output_len < 1 or args.batch_size < 1 or args.runs < 1:
        sys.exit("error: --num-requests, --max-input-len, --max-output-len, --batch-size, --runs must be >= 1")
    limit = n if args.limit is None else args.limit
    if not 1 <= limit <= n:
        sys.exit(f"error: --limit {limit} must be between 1 and --num-requests ({n})")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=getattr(torch, args.dtype), attn_implementation="sdpa"
    ).to(device).eval()
    vocab = model.config.vocab_size
    pad_id = model.config.pad_token_id
    if pad_id is None:
        eos = model.config.eos_token_id
        pad_id = (eos[0] if isinstance(eos, list) else eos) if eos is not None else 0
    fit = lambda ids: [i % vocab for i in ids]  # noqa: E731
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {name}, {args.dtype}, "
          f"vocab {vocab}", file=sys.stderr)

    report = {"engine": "transformers", "workload": args.workload, "model": args.model}
    with torch.inference_mode():
        if args.workload == "nano-vllm":
            prompts, max_tokens = workload(n, args.max_input_len, args.max_output_len)
            prompts, max_tokens = [fit(p) for p in prompts[:limit]], max_tokens[:limit]
            generate(model, [prompts[0][:16]], 16, pad_id, device, True)  # warm-up
            wall, ttft, tpot, latency, steps = run_workload(model, prompts, max_tokens, args.batch_size, pad_id, device)
            p_tok, o_tok = sum(map(len, prompts)), sum(max_tokens)
            report.update(requests=limit, prompt_tokens=p_tok, output_tokens=o_tok, wall_s=wall,
                          output_tok_per_s=o_tok / wall, total_tok_per_s=(p_tok + o_tok) / wall,
                          steps=steps, preemptions=0)
            for key, v in (("ttft", ttft), ("tpot", tpot), ("latency", latency)):
                for p in (50, 90, 99):
                    report[f"{key}_ms_p{p}"] = 1e3 * percentile(v, p)
            print(f"nano-vllm workload: {limit} requests at t=0, {p_tok} prompt + {o_tok} output tokens\n"
                  f"  {wall:.2f} s in batches of {args.batch_size}: {o_tok / wall:.1f} output tok/s, "
                  f"{(p_tok + o_tok) / wall:.1f} total tok/s\n"
                  f"  TTFT ms: p50 {report['ttft_ms_p50']:.2f}  p90 {report['ttft_ms_p90']:.2f}  "
                  f"p99 {report['ttft_ms_p99']:.2f}\n"
                  f"  TPOT ms: p50 {report['tpot_ms_p50']:.2f}  p90 {report['tpot_ms_p90']:.2f}  "
                  f"p99 {report['tpot_ms_p99']:.2f}\n"
                  f"  E2E latency ms: p50 {report['latency_ms_p50']:.2f}  p90 {report['latency_ms_p90']:.2f}  "
                  f"p99 {report['latency_ms_p99']:.2f}", file=sys.stderr)
        ms = decode_b1_ms(model, fit(decode_b1_prompt()), pad_id, device, args.runs)
    print(f"batch-1 decode: {ms:.3f} ms/token (median of {args.runs})", file=sys.stderr)
    report.update(decode_b1_ms_per_token=ms, batch_size=args.batch_size, device=name, dtype=args.dtype,
                  transformers=transformers.__version__, torch=torch.__version__)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
