"""transformers' generate() on the fixtures that `cargo bench -p pg_ai_engine --bench generate` measures, with the same prompt
and inputs, printed in the same form, so that benches/generate.sh can put the two side by side.

    python3 benches/generate_transformers.py   # any Python with torch and transformers (benches/generate.sh)
"""

import os
import time

import torch
from transformers import AutoTokenizer, GPT2LMHeadModel, T5ForConditionalGeneration

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "models")
SMOLLM2_PROMPT = (
    "PostgreSQL is a powerful, open source object-relational database system with over 35 years "
    "of active development that has earned it a strong reputation for reliability, feature robustness, and "
    "performance. It supports both SQL and JSON querying, and it runs on all major operating systems."
)
PROMPT = "the cat sat in the park . alice is eating bread . bob lives in"
TRANSLATE_INPUTS = [
    "translate English to German: the cat sat in the park .",
    "translate English to German: alice is eating bread .",
    "translate English to German: bob lives in vienna .",
    "translate English to German: the horse ran to the river .",
]


@torch.no_grad()
def decoder(name, model, ids, context):
    """Prompt processing, then greedy generation one token at a time with the KV cache."""
    model(ids)
    started = time.perf_counter()
    out = model(ids, use_cache=True)
    prompt_time = time.perf_counter() - started
    room = context - ids.shape[1] - 1
    n = min(64, room)
    past, logits = out.past_key_values, out.logits[:, -1]
    started = time.perf_counter()
    for _ in range(n):
        nxt = logits.argmax(-1, keepdim=True)
        out = model(nxt, past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1]
    generation_time = time.perf_counter() - started
    print(name)
    print(f"  prompt: {ids.shape[1]} tokens in {prompt_time * 1e3:.1f} ms, {ids.shape[1] / prompt_time:.0f} tokens/s")
    print(f"  generation: {n} tokens in {generation_time * 1e3:.1f} ms, {n / generation_time:.1f} tokens/s")


def gpt2():
    path = os.path.join(ROOT, "gpt2")
    tok, model = AutoTokenizer.from_pretrained(path), GPT2LMHeadModel.from_pretrained(path).eval()
    ids = tok(PROMPT, return_tensors="pt").input_ids
    decoder("tests/fixtures/models/gpt2 (tiny, 64-token context)", model, ids, model.config.n_positions)


def smollm2():
    """transformers reads the GGUF file by de-quantizing it to f32 (needs the gguf and accelerate packages)."""
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not os.path.isfile(os.path.join(REPO, ".models", name)):
        print("skipping SmolLM2: run scripts/fetch-smollm2.sh first")
        return
    from transformers import AutoModelForCausalLM
    tok = AutoTokenizer.from_pretrained(os.path.join(REPO, ".models"), gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(os.path.join(REPO, ".models"), gguf_file=name).eval()
    ids = tok(SMOLLM2_PROMPT, return_tensors="pt").input_ids
    decoder("SmolLM2-135M-Instruct, GGUF Q4_1", model, ids, 2048)


def bench_models():
    """The full-size f32 models with random weights (benches/make_bench_models.py), as benches/side_by_side.sh uses."""
    from transformers import AutoModelForCausalLM
    for name, directory in (("GPT-2 124M size", "gpt2-124m"), ("SmolLM2-135M size (Llama)", "smollm2-135m")):
        path = os.path.join(REPO, ".models", "bench", directory)
        if not os.path.isdir(path):
            print(f"skipping {name}: run benches/make_bench_models.py first")
            continue
        tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
        ids = tok(SMOLLM2_PROMPT, return_tensors="pt").input_ids
        decoder(f"{name}, f32", model, ids, 1024)


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
    smollm2()
    bench_models()
    gpt2()
    t5(1)
    t5(3)
