#!/usr/bin/env bash
# Runs the whole test suite (unit, integration with real gateway and engine
# processes on loopback, doc tests, the config example check).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The real model, its tokenizer and ONNX Runtime, for the engine tests.
scripts/fetch-models.sh
# The Python clients the API tests run (openai, tritonclient), in .venv.
scripts/python-env.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
# The TensorRT binding layer: bindgen over the C shim and the safe wrapper,
# tested end to end against the CPU mock shim (no GPU here).
IGW_TENSORRT_MOCK=1 cargo test -p engine --features tensorrt --lib tensorrt
