#!/usr/bin/env bash
# Builds the gateway and the engine, fetches the real model (all-MiniLM-L6-v2,
# int8 ONNX) and ONNX Runtime, and runs the gateway with
# examples/quickstart.toml: the deployment starts at zero replicas, the first
# request wakes one (the gateway starts an engine process and parks the
# request until the model is loaded), later ones reuse it, and it scales back
# to zero after a minute without traffic. Serves until Ctrl-C; the replicas
# stop with the gateway.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-models.sh
cargo build --release -p gateway -p engine
bin="${CARGO_TARGET_DIR:-target}/release"
config=examples/quickstart.toml

pid=
cleanup() {
    [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin/gateway" check --config "$config"
"$bin/gateway" serve --config "$config" & pid=$!
for _ in $(seq 300); do
    curl -sf http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break
    sleep 0.1
done

key="igw_demo_key_not_secret"
admin="$bin/gateway status --model demo1 --key igw_demo_admin_not_secret"
predict() {
    curl -s -w '\n%{http_code} in %{time_total} s\n' -H "Authorization: Api-Key $key" \
        -H 'Host: model-demo1.localhost' -d "{\"text\": \"$1\"}" http://127.0.0.1:8080/production/predict |
        cut -c1-120
}
echo
echo "Zero replicas are running:"
$admin
echo
echo "First prediction: wakes a replica from zero (a 384-number embedding, cut short):"
predict "hello world"
echo
echo "Second prediction, on the warm replica:"
predict "hello again"
echo
$admin
echo
echo "Gateway on 127.0.0.1:8080 (admin 127.0.0.1:8081). Try:"
echo
echo "  curl -s -H 'Authorization: Api-Key $key' -H 'Host: model-demo1.localhost' \\"
echo "       -d '{\"inputs\": [\"a\", \"bb\"]}' http://127.0.0.1:8080/production/predict"
echo "  $admin"
echo
echo "After 60 s without requests the replica stops (SCALED_TO_ZERO); the next"
echo "request wakes it again. Serving until Ctrl-C."
wait "$pid"
