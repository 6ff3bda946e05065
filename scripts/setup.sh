#!/usr/bin/env bash
# Installs what building and testing the workspace needs on a fresh Debian
# machine with Rust: cmake (Pingora's zlib-ng build), libclang-dev (bindgen,
# for the engine's `tensorrt` feature), libssl-dev with pkg-config (TLS: the
# gateway links Debian's OpenSSL, see .cargo/config.toml), protobuf-compiler
# (`protoc`, which the etcd-client crate's build runs) and etcd-server (the
# fleet tests start a real etcd). Safe to run again.
#
# Each need is checked by its Debian package, never by a file glob: the base
# image ships libclang-cpp14 (`libclang-cpp.so.14`), which a `libclang*.so*`
# glob matches but which is not the libclang that bindgen loads.
set -euo pipefail

installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

missing=()
for pkg in cmake libclang-dev libssl-dev pkg-config protobuf-compiler etcd-server; do
    installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    echo "setup: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
