"""Tiny random models of each supported architecture, saved by Hugging Face transformers, with
transformers' greedy tokens and full first-step logits: the reference for the architecture
details SmolLM2 does not exercise (Qwen2's q/k/v bias, Llama-3 rope scaling, untied LM head,
Mistral, GQA group sizes).

    /work/venv-ref/py/bin/python scripts/make_arch_reference.py   # writes tests/data/arch/

Each model directory holds config.json, model.safetensors (float32) and a byte-level
tokenizer.json (ids 0-2 special, 3-258 the bytes), and `reference.json` holds prompts and outputs.
"""
import json
import os

import torch
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "arch")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def bytes_to_unicode():
    """GPT-2's printable stand-in for every byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer_json():
    vocab = {s: i for i, s in enumerate(SPECIAL)}
    m = bytes_to_unicode()
    for b in range(256):
        vocab[m[b]] = len(SPECIAL) + b
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, s in enumerate(SPECIAL)],
        "normalizer": None, "pre_tokenizer": byte_level, "post_processor": byte_level, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": []},
    }


COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, vocab_size=259,
              max_position_embeddings=512, rms_norm_eps=1e-5, initializer_range=0.2,
              bos_token_id=1, eos_token_id=2)

MODELS = {
    "llama3-rope-scaling": LlamaConfig(
        **COMMON, num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False,
        rope_theta=10000.0,
        rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "qwen2-bias": Qwen2Config(
        **COMMON, num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
        rope_theta=1000000.0),
    "mistral": MistralConfig(
        **COMMON, num_attention_heads=8, num_key_value_heads=2, head_dim=8, tie_word_embeddings=False,
        rope_theta=10000.0, sliding_window=None),
}

PROMPTS = [[3 + b for b in "Hello, world".encode()],
           [1] + [3 + b for b in "user\nWhat is 2+2?".encode()] + [2, 1],
           [3 + (i * 37) % 256 for i in range(150)]]


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    for name, config in MODELS.items():
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
        with torch.no_grad():  # norms away from 1 and biases away from 0, so that they matter
            for n, p in model.named_parameters():
                if n.endswith("norm.weight"):
                    p.copy_(1.0 + 0.2 * torch.randn_like(p))
                elif n.endswith(".bias"):
                    p.copy_(0.5 * torch.randn_like(p))
        model.save_pretrained(d, safe_serialization=True)
        with open(os.path.join(d, "tokenizer.json"), "w") as f:
            json.dump(tokenizer_json(), f)
        model.generation_config.eos_token_id = None
        runs = []
        for ids in PROMPTS:
            x = torch.tensor([ids])
            with torch.no_grad():
                logits = model(x).logits[0, -1].tolist()
                out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=16,
                                     min_new_tokens=16, do_sample=False, num_beams=1)
            runs.append({"prompt_token_ids": ids, "token_ids": out[0, len(ids):].tolist(),
                         "first_step_logits": logits})
        ref = {"architecture": config.architectures or type(model).__name__,
               "transformers_version": transformers.__version__, "torch_version": torch.__version__,
               "runs": runs}
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump(ref, f)
        print(name, [r["token_ids"][:6] for r in runs])


if __name__ == "__main__":
    main()
