#!/usr/bin/env bash
# Builds the gateway and the engine, starts two engine replicas and the
# gateway with examples/gateway.toml, shows a prediction, and serves until
# Ctrl-C. Everything it starts stops with it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p gateway -p engine
bin=target/release

pids=()
cleanup() {
    ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin/engine" --listen 127.0.0.1:9101 --replica-id replica-1 --fixed-ms 5 & pids+=($!)
"$bin/engine" --listen 127.0.0.1:9102 --replica-id replica-2 --fixed-ms 5 & pids+=($!)
"$bin/gateway" check --config examples/gateway.toml
"$bin/gateway" serve --config examples/gateway.toml & pids+=($!)

for _ in $(seq 100); do
    curl -sf http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break
    sleep 0.1
done

key="igw_demo_key_not_secret"
echo
echo "Gateway on 127.0.0.1:8080 (admin 127.0.0.1:8081). Try:"
echo
echo "  curl -s -H 'Authorization: Api-Key $key' -H 'Host: model-demo1.localhost' \\"
echo "       -d '{\"text\": \"hello world\"}' http://127.0.0.1:8080/production/predict"
echo "  curl -s -H 'Authorization: Api-Key $key' -d '{\"inputs\": [\"a\", \"bb\"]}' \\"
echo "       http://127.0.0.1:8080/models/demo1/environments/staging/predict"
echo
echo "First prediction:"
curl -s -i -H "Authorization: Api-Key $key" -H 'Host: model-demo1.localhost' \
    -d '{"text": "hello world"}' http://127.0.0.1:8080/production/predict
echo
echo
echo "Serving until Ctrl-C."
wait "${pids[2]}"
