"""Makes random BERT-base-size sequence classifiers of the encoder families (BERT, MPNet, DeBERTa-v3,
ModernBERT; 3 labels, all-MiniLM-L6-v2's WordPiece vocabulary of 30522 tokens, which the architectures do not
depend on) and times transformers on them, for benches/families.sh:

    python3 benches/families.py make OUT_DIR MINILM_DIR     # once; a complete model directory is left alone
    python3 benches/families.py time THREADS DIR...         # the same rows and measures as benches/families.rs

Random weights answer nonsense, which does not matter for speed.
"""

import os
import shutil
import statistics
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def texts(n):
    subjects = ["the cat", "alice", "bob", "the dog", "a man", "my neighbour", "the team", "grace"]
    verbs = ["sat in", "is eating", "ran to", "lives in", "is playing", "looked at", "found"]
    objects = ["the park", "bread", "paris", "the river", "tennis", "a new film", "the old house"]
    out = []
    for i in range(n):
        s, v, o = subjects[i % 8], verbs[(i // 8) % 7], objects[(i // 56) % 7]
        out.append(f"{s} {v} {o} and then {s} {v} {o} again .")
    return out


def make(out, minilm):
    from transformers import (BertConfig, BertForSequenceClassification, DebertaV2Config,
                              DebertaV2ForSequenceClassification, MPNetConfig, MPNetForSequenceClassification,
                              ModernBertConfig, ModernBertForSequenceClassification)
    tok = AutoTokenizer.from_pretrained(minilm)
    ids = dict(vocab_size=30522, pad_token_id=tok.pad_token_id, num_labels=3)
    models = {
        "bert-base": lambda: BertForSequenceClassification(BertConfig(**ids)),
        "mpnet-base": lambda: MPNetForSequenceClassification(MPNetConfig(**ids)),
        # deberta-v3-base's configuration, with this vocabulary.
        "deberta-v3-base": lambda: DebertaV2ForSequenceClassification(DebertaV2Config(
            relative_attention=True, position_buckets=256, max_relative_positions=-1, pos_att_type=["p2c", "c2p"],
            share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0,
            layer_norm_eps=1e-7, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, **ids)),
        "modernbert-base": lambda: ModernBertForSequenceClassification(ModernBertConfig(
            cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id, **ids)),
    }
    for name, build in models.items():
        path = os.path.join(out, name)
        if os.path.isfile(os.path.join(path, "model.safetensors")):
            continue
        torch.manual_seed(0)
        tmp = path + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        build().eval().save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, path)
        print("made", path)


def timed(model, tok, batch):
    with torch.inference_mode():
        enc = tok(batch, padding=True, truncation=True, return_tensors="pt")
        model(**enc).logits.softmax(-1).tolist()


def time_models(threads, dirs):
    torch.set_num_threads(threads)
    rows = texts(256)
    for path in dirs:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        timed(model, tok, rows[:1])
        single = []
        for i in range(20):
            started = time.perf_counter()
            timed(model, tok, rows[i:i + 1])
            single.append(time.perf_counter() - started)
        # Batches of 32 rows of similar length, as pg_ai's array forms make them.
        ordered = sorted(rows, key=lambda t: len(tok(t).input_ids))
        started = time.perf_counter()
        for i in range(0, len(ordered), 32):
            timed(model, tok, ordered[i:i + 32])
        rate = len(rows) / (time.perf_counter() - started)
        print(f"transformers {os.path.basename(path)}: single row {statistics.median(single) * 1e3:.1f} ms, "
              f"256 rows as an array {rate:.1f} rows/s")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3])
    else:
        time_models(int(sys.argv[2]), sys.argv[3:])
