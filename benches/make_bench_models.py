"""Randomly initialised, full-size models for benches/side_by_side.sh, written with save_pretrained (f32
safetensors) so that pg_ai and PL/Python run the very same weights:

  bert-base     BertForMaskedLM, bert-base-uncased configuration (110M parameters), with the WordPiece
                tokenizer of all-MiniLM-L6-v2 (bert-base-uncased's vocabulary, 30522 entries)
  gpt2-124m     GPT2LMHeadModel, GPT-2 small configuration (124M parameters, vocabulary 50257), with
                SmolLM2's byte-level BPE tokenizer (49152 entries) padded with 1105 unreachable entries to 50257
  smollm2-135m  LlamaForCausalLM, SmolLM2-135M configuration (135M parameters), with SmolLM2's tokenizer read
                from the SmolLM2-135M-Instruct GGUF file

Random weights answer nonsense, which does not matter for speed. The decoders get no end-of-text token
(eos_token_id null), so that both sides always generate exactly the tokens asked for.

    python3 benches/make_bench_models.py OUT_DIR MINILM_DIR SMOLLM2_GGUF     # needs torch and transformers

Deterministic (seed 0); a model directory that is already complete is left alone.
"""

import json
import os
import shutil
import sys

import torch
from transformers import (AutoTokenizer, BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM)

out, minilm, gguf = sys.argv[1], sys.argv[2], sys.argv[3]


def done(name):
    return os.path.isfile(os.path.join(out, name, "model.safetensors")) and os.path.isfile(
        os.path.join(out, name, "tokenizer.json"))


def patch_config(path, **fields):
    with open(path) as f:
        config = json.load(f)
    config.update(fields)
    with open(path, "w") as f:
        json.dump(config, f, indent=2)


def save(model, name):
    tmp = os.path.join(out, name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    return tmp


def smollm2_tokenizer(tmp):
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    tok.save_pretrained(tmp)
    return tok


def bert_base():
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig()).eval()  # defaults: bert-base-uncased
    tmp = save(model, "bert-base")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if os.path.exists(os.path.join(minilm, f)):
            shutil.copy(os.path.join(minilm, f), tmp)
    return tmp


def gpt2_124m():
    torch.manual_seed(0)
    config = GPT2Config(bos_token_id=None, eos_token_id=None)  # defaults: GPT-2 small, 124M
    model = GPT2LMHeadModel(config).eval()
    tmp = save(model, "gpt2-124m")
    smollm2_tokenizer(tmp)
    path = os.path.join(tmp, "tokenizer.json")
    with open(path) as f:
        tokenizer = json.load(f)
    vocab = tokenizer["model"]["vocab"]
    used = set(vocab.values()) | {t["id"] for t in tokenizer.get("added_tokens", [])}
    n = 0
    while len(used) < config.vocab_size:
        token, n = f"\u0120pad{n:05d}", n + 1  # byte-level alphabet: decodes to " padNNNNN"
        if token not in vocab:
            vocab[token] = len(used)
            used.add(len(used))
    with open(path, "w") as f:
        json.dump(tokenizer, f, ensure_ascii=False)
    patch_config(os.path.join(tmp, "config.json"), bos_token_id=None, eos_token_id=None)
    return tmp


def smollm2_135m():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, hidden_act="silu",
                         max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(config).eval()
    tmp = save(model, "smollm2-135m")
    smollm2_tokenizer(tmp)
    # pg_ai (candle's LlamaConfig) reads rope_theta at the top level, transformers 5 writes rope_parameters:
    # write both, so both sides rotate with theta 100000.
    patch_config(os.path.join(tmp, "config.json"), rope_theta=100000.0, bos_token_id=None, eos_token_id=None)
    return tmp


os.makedirs(out, exist_ok=True)
for name, make in (("bert-base", bert_base), ("gpt2-124m", gpt2_124m), ("smollm2-135m", smollm2_135m)):
    if done(name):
        continue
    print(f"making {name}", flush=True)
    tmp = make()
    gen = os.path.join(tmp, "generation_config.json")
    if os.path.exists(gen):
        patch_config(gen, bos_token_id=None, eos_token_id=None)
    shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    os.replace(tmp, os.path.join(out, name))
