#!/usr/bin/env python3
"""The Python server a user would write instead of running the engine:
FastAPI + uvicorn + ONNX Runtime + Hugging Face tokenizers, serving the
quick start's model (all-MiniLM-L6-v2 int8) with the engine's pipeline:
tokenise, run the transformer, mean-pool over the attention mask,
L2-normalise. One request, one model call: no batching.

    POST /predict  {"text": "..."}
    -> {"outputs": [{"embedding": [384 floats], "tokens": N}]}

benches/engine_batching.py runs it beside the engine; to run it alone:

    .venv/bin/python benches/fastapi_server.py --port 8000 --workers 2 --threads 1
    curl -s -d '{"text": "hello world"}' -H 'Content-Type: application/json' http://127.0.0.1:8000/predict

Needs scripts/python-env.sh (.venv: onnxruntime, tokenizers, numpy,
fastapi, uvicorn) and scripts/fetch-models.sh (the model).

What it does like the engine, so the comparison is of servers, not of
settings: the model's tokenizer.json pads every input to 128 tokens and
truncates at 128; like the engine, this pads only to the longest input of
the call (here: no padding, one input) and refuses inputs over 256 tokens
(422) instead of truncating them. The session is ONNX Runtime's default
CPU session (all graph optimisations) with `--threads` intra-op threads
(0: ONNX Runtime's default, one per core) and one inter-op thread, as the
engine's. The endpoint is a plain `def`: FastAPI runs it on its thread
pool, and ONNX Runtime releases the GIL while it computes.

One departure from `uvicorn app:app --workers N`: with more than one
worker, uvicorn's listening socket loses TCP_NODELAY on Linux
(Kludex/uvicorn#3149) and every keep-alive response then waits ~40 ms for
the client's delayed ACK (p50 52 ms at one connection against 9 ms with
one worker, measured here). This server binds the socket itself so that
the comparison is with a Python server working as intended; `--stock`
runs uvicorn as shipped.
"""

import argparse
import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models/all-minilm-l6-v2-int8/model.onnx"
MAX_TOKENS = 256

# The workers import this module afresh (uvicorn's --workers spawns them):
# their settings come in the environment, set by main() below.
ENV_MODEL = "FASTAPI_BENCH_MODEL"
ENV_TOKENIZER = "FASTAPI_BENCH_TOKENIZER"
ENV_THREADS = "FASTAPI_BENCH_THREADS"


def build_app():
    import numpy as np
    import onnxruntime as ort
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel
    from tokenizers import Tokenizer

    model = os.environ.get(ENV_MODEL, str(DEFAULT_MODEL))
    tokenizer_file = os.environ.get(ENV_TOKENIZER) or str(Path(model).with_name("tokenizer.json"))
    threads = int(os.environ.get(ENV_THREADS, "1"))

    tokenizer = Tokenizer.from_file(tokenizer_file)
    tokenizer.no_padding()
    tokenizer.no_truncation()

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    input_names = {i.name for i in session.get_inputs()}

    def embed(text):
        encoding = tokenizer.encode(text)
        if len(encoding.ids) > MAX_TOKENS:
            raise HTTPException(422, f"input is longer than this model's {MAX_TOKENS} tokens")
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in input_names:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feed)[0]  # [1, seq, dim]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return {"embedding": pooled[0].tolist(), "tokens": int(mask.sum())}

    embed("warm-up")

    class PredictRequest(BaseModel):
        text: str

    app = FastAPI()

    @app.post("/predict")
    def predict(request: PredictRequest):
        return {"outputs": [embed(request.text)]}

    @app.get("/health")
    def health():
        return {"status": "ready"}

    return app


# `uvicorn fastapi_server:app` (and every worker main() starts) builds the
# app on import; running the file itself only parses flags and starts uvicorn.
app = build_app() if __name__ != "__main__" else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    ap.add_argument("--threads", type=int, default=1,
                    help="ONNX Runtime intra-op threads per worker (default 1; 0 = one per core)")
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--tokenizer", help="tokenizer.json (default: beside the model)")
    ap.add_argument("--log-level", default="warning")
    ap.add_argument("--stock", action="store_true",
                    help="uvicorn.run(workers=N) exactly, without the TCP_NODELAY fix (see main())")
    args = ap.parse_args()
    if not Path(args.model).exists():
        sys.exit(f"{args.model} does not exist: run scripts/fetch-models.sh first")
    os.environ[ENV_MODEL] = args.model
    os.environ[ENV_THREADS] = str(args.threads)
    if args.tokenizer:
        os.environ[ENV_TOKENIZER] = args.tokenizer
    import uvicorn

    app_dir = str(Path(__file__).resolve().parent)
    if args.stock or args.workers == 1:
        uvicorn.run("fastapi_server:app", app_dir=app_dir, host=args.host, port=args.port, workers=args.workers,
                    log_level=args.log_level, access_log=False)
        return
    # What uvicorn.run does with workers > 1, but with the listening socket
    # created as IPPROTO_TCP: uvicorn's own has proto 0, the connections it
    # accepts inherit it, and asyncio sets TCP_NODELAY only on sockets that
    # say IPPROTO_TCP, so every response waits ~40 ms for the client's
    # delayed ACK (Kludex/uvicorn#3149, open; --stock shows it).
    from uvicorn.supervisors import Multiprocess

    sys.path.insert(0, app_dir)  # as uvicorn.run(app_dir=...) does
    config = uvicorn.Config("fastapi_server:app", host=args.host, port=args.port,
                            workers=args.workers, log_level=args.log_level, access_log=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.set_inheritable(True)
    Multiprocess(config, sockets=[sock]).run()


if __name__ == "__main__":
    main()
