"""transformers' generate() on the fixtures that `cargo bench --bench generate` measures, with the same prompt
and inputs, printed in the same form, so that benches/generate.sh can put the two side by side.

    /work/pyenv/bin/python benches/generate_transformers.py   # any Python with torch and transformers
"""

import os
import time

import torch
from transformers import AutoTokenizer, GPT2LMHeadModel, T5ForConditionalGeneration

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "models")
PROMPT = "the cat sat in the park . alice is eating bread . bob lives in"
TRANSLATE_INPUTS = [
    "translate English to German: the cat sat in the park .",
    "translate English to German: alice is eating bread .",
    "translate English to German: bob lives in vienna .",
    "translate English to German: the horse ran to the river .",
]


@torch.no_grad()
def gpt2():
    path = os.path.join(ROOT, "gpt2")
    tok, model = AutoTokenizer.from_pretrained(path), GPT2LMHeadModel.from_pretrained(path).eval()
    ids = tok(PROMPT, return_tensors="pt").input_ids
    model(ids)
    started = time.perf_counter()
    out = model(ids, use_cache=True)
    prompt_time = time.perf_counter() - started
    room = model.config.n_positions - ids.shape[1] - 1
    n = min(64, room)
    past, logits = out.past_key_values, out.logits[:, -1]
    started = time.perf_counter()
    for _ in range(n):
        nxt = logits.argmax(-1, keepdim=True)
        out = model(nxt, past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1]
    generation_time = time.perf_counter() - started
    print("tests/fixtures/models/gpt2 (tiny, 64-token context)")
    print(f"  prompt: {ids.shape[1]} tokens in {prompt_time * 1e3:.1f} ms, {ids.shape[1] / prompt_time:.0f} tokens/s")
    print(f"  generation: {n} tokens in {generation_time * 1e3:.1f} ms, {n / generation_time:.1f} tokens/s")


@torch.no_grad()
def t5(num_beams):
    path = os.path.join(ROOT, "t5")
    tok, model = AutoTokenizer.from_pretrained(path), T5ForConditionalGeneration.from_pretrained(path).eval()

    def run():
        total = 0
        for text in TRANSLATE_INPUTS:
            enc = tok(text, return_tensors="pt")
            out = model.generate(**enc, max_new_tokens=24, num_beams=num_beams, do_sample=False)
            total += out.shape[1] - 1  # without the decoder start token, as pg_ai counts
        return total

    run()
    started = time.perf_counter()
    tokens = sum(run() for _ in range(20))
    elapsed = time.perf_counter() - started
    print(f"tests/fixtures/models/t5 (tiny), {num_beams} beam(s)")
    print(f"  translation: {tokens} tokens in {elapsed * 1e3:.1f} ms, {tokens / elapsed:.0f} tokens/s")


if __name__ == "__main__":
    import transformers
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    gpt2()
    t5(1)
    t5(3)
