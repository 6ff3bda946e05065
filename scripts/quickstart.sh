#!/usr/bin/env bash
# Builds the gateway and the engine, fetches the real model (all-MiniLM-L6-v2,
# int8 ONNX) and ONNX Runtime, starts two engine replicas serving it and the
# gateway with examples/gateway.toml, shows a prediction, and serves until
# Ctrl-C. Everything it starts stops with it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-models.sh
cargo build --release -p gateway -p engine
bin=target/release

pids=()
cleanup() {
    ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Replicas print a ready line once the model is loaded and warmed up.
"$bin/engine" --config examples/replica.toml --listen 127.0.0.1:9101 --replica-id replica-1 & pids+=($!)
"$bin/engine" --config examples/replica.toml --listen 127.0.0.1:9102 --replica-id replica-2 & pids+=($!)
"$bin/gateway" check --config examples/gateway.toml
"$bin/gateway" serve --config examples/gateway.toml & pids+=($!)

for url in http://127.0.0.1:9101/health/ready http://127.0.0.1:9102/health/ready http://127.0.0.1:8080/readyz; do
    for _ in $(seq 300); do
        curl -sf "$url" >/dev/null 2>&1 && break
        sleep 0.1
    done
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
echo "  $bin/gateway status --model demo1 --key igw_demo_admin_not_secret"
echo
# The gateway routes to a replica once its readiness probe has passed.
for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Api-Key $key" \
        -H 'Host: model-demo1.localhost' -d '{"text": "warm"}' http://127.0.0.1:8080/production/predict || true)
    [[ $code == 200 ]] && break
    sleep 0.1
done

echo "First prediction (a 384-number embedding, cut short here):"
curl -s -i -H "Authorization: Api-Key $key" -H 'Host: model-demo1.localhost' \
    -d '{"text": "hello world"}' http://127.0.0.1:8080/production/predict | cut -c1-160
echo
echo
echo "Serving until Ctrl-C."
wait "${pids[2]}"
