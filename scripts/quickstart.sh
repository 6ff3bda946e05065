#!/usr/bin/env bash
# Builds the gateway and the engine, fetches the real model (all-MiniLM-L6-v2,
# int8 ONNX) and ONNX Runtime, and runs the gateway with
# examples/quickstart.toml: the deployment starts at zero replicas, the first
# request wakes one (the gateway starts an engine process and parks the
# request until the model is loaded), later ones reuse it, and it scales back
# to zero after a minute without traffic. Serves until Ctrl-C; the replicas
# stop with the gateway.
#
# QUICKSTART_CONFIG=examples/other.toml runs another config instead, e.g. a
# copy on other ports when 8080 or 8081 is taken (keep it in examples/: the
# model paths in it are relative to the file).
set -euo pipefail
cd "$(dirname "$0")/.."
config="${QUICKSTART_CONFIG:-examples/quickstart.toml}"

# The address `[listeners] $1` sets in $config, or the gateway's default $2.
listener() {
    local line section='' key="^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"([^\"]*)\""
    while IFS= read -r line || [[ -n $line ]]; do
        if [[ $line =~ ^[[:space:]]*\[ ]]; then
            section=''
            [[ $line =~ ^[[:space:]]*\[listeners\][[:space:]]*(#.*)?$ ]] && section=1
        elif [[ -n $section && $line =~ $key ]]; then
            echo "${BASH_REMATCH[1]}"
            return
        fi
    done <"$config"
    echo "$2"
}
predict_addr=$(listener predict 127.0.0.1:8080)
admin_addr=$(listener admin 127.0.0.1:8081)

# Exits 1 naming the port when something already listens on the predict or
# admin address: the gateway would refuse to start. Probed with bash's
# /dev/tcp (a connection is accepted only where something listens; what a
# previous run left in TIME_WAIT does not count, nor for the gateway).
check_ports() {
    local what addr host port
    for what in predict admin; do
        if [[ $what == predict ]]; then addr=$predict_addr; else addr=$admin_addr; fi
        host=${addr%:*} port=${addr##*:}
        host=${host#[} host=${host%]}
        [[ $host == 0.0.0.0 ]] && host=127.0.0.1
        [[ $host == :: ]] && host=::1
        if timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null; then
            echo "error: port $port is busy: something already listens on $addr, the gateway's $what address ([listeners] $what in $config)" >&2
            if command -v ss >/dev/null 2>&1; then
                ss -Hltnp "sport = :$port" 2>/dev/null | sed 's/^/    /' >&2 || true
            fi
            cat >&2 <<'EOF'
Stop what holds it (a gateway from an earlier quick start?), or run on other ports:

    sed -e 's/:8080"/:9080"/' -e 's/:8081"/:9081"/' examples/quickstart.toml >examples/quickstart-local.toml
    QUICKSTART_CONFIG=examples/quickstart-local.toml scripts/quickstart.sh
EOF
            exit 1
        fi
    done
}

check_ports # before the build, not minutes later
scripts/setup.sh
scripts/fetch-models.sh
cargo build --release -p gateway -p engine
bin="${CARGO_TARGET_DIR:-target}/release"

pid=
cleanup() {
    [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin/gateway" check --config "$config"
check_ports # again: the build took a while
"$bin/gateway" serve --config "$config" & pid=$!
ready=
for _ in $(seq 300); do
    curl -sf "http://$predict_addr/readyz" >/dev/null 2>&1 && ready=1 && break
    if ! kill -0 "$pid" 2>/dev/null; then
        status=0
        wait "$pid" || status=$?
        pid=
        echo "error: the gateway exited (status $status) before it was ready: see its error above" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ -z $ready ]]; then
    echo "error: the gateway did not answer http://$predict_addr/readyz within 30 s" >&2
    exit 1
fi

key="igw_demo_key_not_secret"
admin="$bin/gateway status --model demo1 --key igw_demo_admin_not_secret"
if [[ $admin_addr != 127.0.0.1:8081 ]]; then
    admin="$bin/gateway --admin http://$admin_addr status --model demo1 --key igw_demo_admin_not_secret"
fi
predict() {
    curl -s -w '\n%{http_code} in %{time_total} s\n' -H "Authorization: Api-Key $key" \
        -H 'Host: model-demo1.localhost' -d "{\"text\": \"$1\"}" "http://$predict_addr/production/predict" |
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
echo "Gateway on $predict_addr (admin $admin_addr). Try:"
echo
echo "  curl -s -H 'Authorization: Api-Key $key' -H 'Host: model-demo1.localhost' \\"
echo "       -d '{\"inputs\": [\"a\", \"bb\"]}' http://$predict_addr/production/predict"
echo "  $admin"
echo
echo "After 60 s without requests the replica stops (SCALED_TO_ZERO); the next"
echo "request wakes it again. Serving until Ctrl-C."
wait "$pid"
