-- The established Python way, for benches/side_by_side.sh: PL/Python functions that call sentence-transformers
-- and transformers (PyTorch) inside the backend, as PostgresML does, answering what pg_ai's functions answer:
--
--   py_embed(text, model) real[]                    SentenceTransformer.encode, normalised (ai_embed)
--   py_embed(text[], model) TABLE(ord, embedding)   one encode call over the array, batch size 32
--   py_fill_mask(text, model, top_k) TABLE(token, score, sequence)        the fill-mask pipeline (ai_fill_mask)
--   py_fill_mask(text[], model, top_k) TABLE(ord, token, score, sequence) the pipeline over a list, batch size 32
--   py_generate(prompt, model, max_tokens) text     model.generate, greedy, the continuation only (ai_generate)
--   py_pretrain(model, objective, query) float8      tokens/s of 100 steps of transformers + torch.optim.AdamW
--                                                   training a fresh copy of the pg_ai model `model` (same
--                                                   config, same tokenizer) on the query's rows, as
--                                                   benches/train_torch.py does
--
-- Models are named as in pg_ai: the directory is read from pg_ai's own catalog (ai.models.source), loaded on
-- first use and cached in the backend (GD), like pg_ai's per-backend cache. Settings read at the first call:
--   pybench.site_packages  a directory with torch, transformers and sentence-transformers for CPython 3.11
--   pybench.threads        torch.set_num_threads (0 or unset: PyTorch's default)

CREATE EXTENSION IF NOT EXISTS plpython3u;

CREATE OR REPLACE FUNCTION py_bootstrap() RETURNS void LANGUAGE plpython3u AS $$
import os, sys
if 'pb_load' in GD:
    return
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
os.environ.setdefault('HF_HUB_DISABLE_PROGRESS_BARS', '1')
site = plpy.execute("SELECT current_setting('pybench.site_packages', true) AS s")[0]['s']
if site and site not in sys.path:
    sys.path.insert(0, site)
if not hasattr(sys, 'argv'):
    sys.argv = ['postgres']   # some libraries look at sys.argv, which an embedded interpreter lacks
import torch
import transformers
transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()
threads = plpy.execute("SELECT current_setting('pybench.threads', true) AS t")[0]['t']
if threads and int(threads) > 0:
    torch.set_num_threads(int(threads))
# The encoders (embed, fill-mask) on the device pybench.device names, as pg_ai.device puts pg_ai's.
device = plpy.execute("SELECT coalesce(current_setting('pybench.device', true), 'cpu') AS d")[0]['d'] or 'cpu'
lookup = plpy.prepare("SELECT source FROM ai.models WHERE name = $1", ["text"])
models = {}

def load(name, task):
    key = (name, task)
    if key not in models:
        rows = plpy.execute(lookup, [name])
        if len(rows) == 0:
            plpy.error(f'model "{name}" does not exist', sqlstate='42704')
        path = rows[0]['source']
        if task == 'embed':
            from sentence_transformers import SentenceTransformer
            models[key] = SentenceTransformer(path, device=device)
        elif task == 'fill-mask':
            from transformers import pipeline
            models[key] = pipeline('fill-mask', model=path, device=device)
        elif task == 'generate':
            from transformers import AutoModelForCausalLM, AutoTokenizer
            models[key] = (AutoTokenizer.from_pretrained(path),
                           AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval())
    return models[key]

GD['torch'] = torch
GD['pb_load'] = load
$$;

CREATE OR REPLACE FUNCTION py_embed(input text, model text) RETURNS real[]
LANGUAGE plpython3u STRICT STABLE AS $$
if 'pb_load' not in GD:
    plpy.execute("SELECT py_bootstrap()")
m = GD['pb_load'](model, 'embed')
return m.encode(input, normalize_embeddings=True, convert_to_numpy=True).tolist()
$$;

CREATE OR REPLACE FUNCTION py_embed(inputs text[], model text) RETURNS TABLE(ord int, embedding real[])
LANGUAGE plpython3u STRICT STABLE AS $$
if 'pb_load' not in GD:
    plpy.execute("SELECT py_bootstrap()")
m = GD['pb_load'](model, 'embed')
present = [i for i, t in enumerate(inputs) if t is not None]
vectors = m.encode([inputs[i] for i in present], batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
by_position = {i: v.tolist() for i, v in zip(present, vectors)}
return [(i + 1, by_position.get(i)) for i in range(len(inputs))]
$$;

CREATE OR REPLACE FUNCTION py_fill_mask(input text, model text, top_k int DEFAULT 5)
RETURNS TABLE(token text, score real, sequence text)
LANGUAGE plpython3u STRICT STABLE AS $$
if 'pb_load' not in GD:
    plpy.execute("SELECT py_bootstrap()")
fill = GD['pb_load'](model, 'fill-mask')
return [(a['token_str'], a['score'], a['sequence']) for a in fill(input, top_k=top_k)]
$$;

CREATE OR REPLACE FUNCTION py_fill_mask(inputs text[], model text, top_k int DEFAULT 5)
RETURNS TABLE(ord int, token text, score real, sequence text)
LANGUAGE plpython3u STRICT STABLE AS $$
if 'pb_load' not in GD:
    plpy.execute("SELECT py_bootstrap()")
fill = GD['pb_load'](model, 'fill-mask')
present = [i for i, t in enumerate(inputs) if t is not None]
if not present:
    return []
answers = fill([inputs[i] for i in present], top_k=top_k, batch_size=32)
if len(present) == 1 and answers and isinstance(answers[0], dict):
    answers = [answers]   # the pipeline unwraps a list of one
return [(i + 1, a['token_str'], a['score'], a['sequence']) for i, one in zip(present, answers) for a in one]
$$;

CREATE OR REPLACE FUNCTION py_generate(prompt text, model text, max_tokens int DEFAULT 64) RETURNS text
LANGUAGE plpython3u STRICT VOLATILE AS $$
if 'pb_load' not in GD:
    plpy.execute("SELECT py_bootstrap()")
torch = GD['torch']
tokenizer, lm = GD['pb_load'](model, 'generate')
encoded = tokenizer(prompt, return_tensors='pt')
with torch.inference_mode():
    out = lm.generate(**encoded, max_new_tokens=max_tokens, do_sample=False)
return tokenizer.decode(out[0, encoded['input_ids'].shape[1]:], skip_special_tokens=True)
$$;

CREATE OR REPLACE FUNCTION py_pretrain(model text, objective text, query text) RETURNS float8
LANGUAGE plpython3u AS $$
plpy.execute("SELECT py_bootstrap()")
torch = GD['torch']
import os, random, time
from transformers import (AutoConfig, BertForMaskedLM, DataCollatorForLanguageModeling, GPT2LMHeadModel,
                          PreTrainedTokenizerFast)
steps, batch_size, max_length = 100, 16, 128
where = plpy.prepare("SELECT format('%s/pg_ai/models/%s/%s', current_setting('data_directory'), "
                     "(SELECT oid FROM pg_database WHERE datname = current_database()), files_sha256) AS dir "
                     "FROM ai.models WHERE name = $1", ["text"])
folder = plpy.execute(where, [model])[0]['dir']
tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(folder, 'tokenizer.json'))
config = AutoConfig.from_pretrained(folder)
torch.manual_seed(0)
net = (GPT2LMHeadModel if objective == 'clm' else BertForMaskedLM)(config)
net.train()
texts = [r['text'] for r in plpy.execute(query)]
if objective == 'clm':
    tok.pad_token = tok.eos_token = '<|endoftext|>'
    encoded = [tok(t + '<|endoftext|>', truncation=True, max_length=max_length)['input_ids'] for t in texts]
else:
    tok.pad_token, tok.mask_token = '[PAD]', '[MASK]'
    encoded = [tok(t, truncation=True, max_length=max_length)['input_ids'] for t in texts]
collator = DataCollatorForLanguageModeling(tok, mlm=objective == 'mlm', mlm_probability=0.15)
no_decay = [p for n, p in net.named_parameters() if n.endswith('bias') or 'LayerNorm' in n or '.ln_' in n]
decay = [p for p in net.parameters() if all(p is not q for q in no_decay)]
opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.01}, {'params': no_decay, 'weight_decay': 0.0}], lr=5e-4)
rng = random.Random(0)
tokens = 0
started = time.perf_counter()
for _ in range(steps):
    batch = collator([{'input_ids': ids} for ids in rng.sample(encoded, batch_size)])
    tokens += int(batch['attention_mask'].sum())
    loss = net(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
return tokens / (time.perf_counter() - started)
$$;
