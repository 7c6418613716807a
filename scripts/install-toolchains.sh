#!/usr/bin/env bash
# Install the toolchains of the non-Python interop clients (clients/) on a
# Debian 12 machine: C++ (protoc + grpc_cpp_plugin + libgrpc++), Go (go,
# protoc-gen-go, protoc-gen-go-grpc and the Go gRPC libraries, all from
# Debian) and Node.js (npm ci in clients/node from its package-lock.json);
# and etcd (server and etcdctl) for the cluster tests.
#
# Idempotent: when everything is there it only checks (about a second).
# Needs root (or sudo) for apt-get; CI runs it as root.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    # C++: protoc, the gRPC C++ plugin, headers and libraries, pkg-config.
    g++ make pkg-config
    protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev
    # Go: the compiler, the two protoc plugins and the Go libraries the
    # generated code and the client import (GOPATH mode, see docs/clients/go.md).
    golang-go protoc-gen-go protoc-gen-go-grpc
    golang-google-grpc-dev golang-google-protobuf-dev golang-google-genproto-dev
    # github.com/golang/protobuf 1.5 (APIv1 over APIv2), named: otherwise apt
    # picks 1.3 for grpc, which predates the APIv2 messages of protoc-gen-go 1.28.
    golang-github-golang-protobuf-1-5-dev
    # etcd 3.4 for cluster mode and its tests (tests/cluster/harness starts
    # /usr/bin/etcd members on free loopback ports) and etcdctl for operators.
    etcd-server etcd-client
)
# Node.js and npm: only when the machine has no node at all (Debian's nodejs
# 18 is enough for @grpc/grpc-js).
command -v node >/dev/null || APT_PACKAGES+=(nodejs)
command -v npm >/dev/null || APT_PACKAGES+=(npm)

missing=()
for package in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$package")
done

if [ ${#missing[@]} -gt 0 ]; then
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "install-toolchains: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "install-toolchains: Debian packages already installed"
fi

# Node: reinstall only when package-lock.json changed since the last npm ci.
lock_sum=$(sha256sum clients/node/package-lock.json | cut -d' ' -f1)
stamp=clients/node/node_modules/.cps-lock-sha256
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
    echo "install-toolchains: npm ci in clients/node"
    (cd clients/node && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_sum" >"$stamp"
else
    echo "install-toolchains: clients/node/node_modules up to date"
fi

protoc --version
grpc_cpp_plugin --version 2>/dev/null || command -v grpc_cpp_plugin
go version
node --version
etcd --version | sed -n 1p
