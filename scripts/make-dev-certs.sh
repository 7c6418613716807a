#!/usr/bin/env bash
# Development certificates for a TLS cluster (docs/deployment.md), made with
# openssl: one CA and, signed by it, EC P-256 certificates for
#   cps-1..3      nodes of docker/compose.tls.yaml (SANs cps-N, localhost,
#                 127.0.0.1; serverAuth and clientAuth: one certificate serves
#                 clients, authenticates to peers and to etcd)
#   etcd-1..3     members of the etcd of docker/compose.tls.yaml
#   client        a client certificate (CN cps-client) for --client-ca
#   kubernetes/   ca.crt, tls.crt, tls.key for the Secret cps-tls of
#                 docker/kubernetes/ (SANs *.cps-peers.NS.svc, cps.NS.svc, ...)
#
# Usage: scripts/make-dev-certs.sh [-f] [OUT_DIR]
#   OUT_DIR  default docker/certs (git-ignored and outside the image's build
#            context); -f replaces certificates already there.
#   CPS_NAMESPACE  Kubernetes namespace in the SANs of kubernetes/ (cps)
#   CERT_DAYS      validity in days (365)
#
# Dev only: the keys are world-readable (0644) so that the containers' user
# 10001 can read them through a bind mount. Never use them in production.
set -euo pipefail

force=0
if [[ "${1:-}" == "-f" ]]; then
    force=1
    shift
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/docker/certs}"
namespace="${CPS_NAMESPACE:-cps}"
days="${CERT_DAYS:-365}"

if [[ -e "$out/ca.crt" && "$force" != 1 ]]; then
    echo "make-dev-certs: $out/ca.crt exists (use -f to make new certificates)" >&2
    exit 1
fi
mkdir -p "$out/kubernetes"
work="$(mktemp -d)"
mkdir -p "$work/kubernetes"
trap 'rm -rf "$work"' EXIT

new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# sign NAME CN SANS EKU: $out/NAME.key and $out/NAME.crt signed by the CA.
sign() {
    local name="$1" cn="$2" sans="$3" eku="$4"
    new_key "$out/$name.key"
    openssl req -new -key "$out/$name.key" -subj "/O=CPS dev/CN=$cn" -out "$work/$name.csr"
    {
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature, keyEncipherment"
        echo "extendedKeyUsage = $eku"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid"
        if [[ -n "$sans" ]]; then
            echo "subjectAltName = $sans"
        fi
    } >"$work/$name.ext"
    openssl x509 -req -in "$work/$name.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
        -CAserial "$work/ca.srl" -CAcreateserial -days "$days" -sha256 \
        -extfile "$work/$name.ext" -out "$out/$name.crt" 2>/dev/null
}

new_key "$out/ca.key"
openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$days" \
    -subj "/O=CPS dev/CN=CPS dev CA" \
    -addext "basicConstraints = critical, CA:TRUE" \
    -addext "keyUsage = critical, keyCertSign, cRLSign" \
    -addext "subjectKeyIdentifier = hash" \
    -out "$out/ca.crt"

for n in 1 2 3; do
    sign "cps-$n" "cps-$n" "DNS:cps-$n, DNS:localhost, IP:127.0.0.1" "serverAuth, clientAuth"
    sign "etcd-$n" "etcd-$n" "DNS:etcd-$n, DNS:localhost, IP:127.0.0.1" "serverAuth, clientAuth"
done
sign client cps-client "" clientAuth

peers="cps-peers.$namespace.svc"
sign kubernetes/tls cps \
    "DNS:*.$peers, DNS:*.$peers.cluster.local, DNS:cps.$namespace.svc, DNS:cps.$namespace.svc.cluster.local, DNS:cps, DNS:localhost, IP:127.0.0.1" \
    "serverAuth, clientAuth"
cp "$out/ca.crt" "$out/kubernetes/ca.crt"

chmod 0755 "$out" "$out/kubernetes"
find "$out" -type f -exec chmod 0644 {} +
chmod 0600 "$out/ca.key"
echo "make-dev-certs: certificates in $out (namespace $namespace for kubernetes/)"
