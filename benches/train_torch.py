"""PyTorch (eager, through transformers) training on the configuration and rows of `cargo bench -p pg_ai_engine --bench train`,
printed in the same form so that benches/train.sh can put the two side by side. Run the Rust bench first: this
reads the config.json and tokenizer.json it wrote to target/bench-train/{mlm,clm,seq2seq}, so both sides train the
same architecture on the same tokens, 100 AdamW steps with gradient clipping, batch 16, rows up to 128 tokens.
Seq2seq maps each row to its words in reverse order and counts source and target tokens, as pg_ai does.

    python3 benches/train_torch.py   # any Python with torch and transformers (benches/train.sh)
"""

import os
import random
import time

import torch
from transformers import (AutoConfig, BertForMaskedLM, DataCollatorForLanguageModeling, DataCollatorForSeq2Seq,
                          GPT2LMHeadModel, PreTrainedTokenizerFast, T5ForConditionalGeneration)

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
STEPS, BATCH, MAX_LENGTH = 100, 16, 128


def texts():
    """The fortunes, parsed as engine/benches/train.rs parses them (or the fixture sentences)."""
    folder = "/usr/share/games/fortunes"
    if os.path.isdir(folder):
        out = []
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if "." in name or not os.path.isfile(path):
                continue
            text = open(path, "rb").read().decode("utf-8", "replace")
            out += [" ".join(f.split()) for f in text.split("\n%\n") if f.split()]
        if out:
            return out
    return open(os.path.join(REPO, "tests/fixtures/train/sentences.txt")).read().splitlines()


def train(name, model_class):
    folder = os.path.join(REPO, "target", "bench-train", name)
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(folder, "tokenizer.json"))
    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    model = model_class(config)
    model.train()
    rows = texts()
    if name == "clm":
        tok.pad_token = tok.eos_token = "<|endoftext|>"
        encoded = [{"input_ids": tok(t + "<|endoftext|>", truncation=True, max_length=MAX_LENGTH)["input_ids"]}
                   for t in rows]
    elif name == "seq2seq":
        tok.pad_token, tok.eos_token = "<pad>", "</s>"  # the template adds </s>
        encoded = [{"input_ids": tok(t, truncation=True, max_length=MAX_LENGTH)["input_ids"],
                    "labels": tok(" ".join(reversed(t.split(" "))), truncation=True, max_length=MAX_LENGTH)["input_ids"]}
                   for t in rows]
    else:
        tok.pad_token, tok.mask_token = "[PAD]", "[MASK]"
        encoded = [{"input_ids": tok(t, truncation=True, max_length=MAX_LENGTH)["input_ids"]} for t in rows]
    if name == "seq2seq":
        collator = DataCollatorForSeq2Seq(tok, model=model)
    else:
        collator = DataCollatorForLanguageModeling(tok, mlm=name == "mlm", mlm_probability=0.15)
    no_decay = [p for n, p in model.named_parameters()
                if n.endswith("bias") or "LayerNorm" in n or ".ln_" in n or "layer_norm" in n or "attention_bias" in n]
    decay = [p for p in model.parameters() if all(p is not q for q in no_decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=5e-4)
    rng = random.Random(0)
    tokens = 0
    started = time.perf_counter()
    for _ in range(STEPS):
        batch = collator(rng.sample(encoded, BATCH))
        tokens += int(batch["attention_mask"].sum())
        if name == "seq2seq":
            tokens += int((batch["labels"] != -100).sum())
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    elapsed = time.perf_counter() - started
    print(f"{name} (hidden 128, 2 layers, batch 16)")
    print(f"  training: {STEPS} steps in {elapsed:.1f} s, {tokens / elapsed:.0f} tokens/s")


if __name__ == "__main__":
    import transformers
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    train("mlm", BertForMaskedLM)
    train("clm", GPT2LMHeadModel)
    train("seq2seq", T5ForConditionalGeneration)
