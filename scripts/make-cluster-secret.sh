#!/usr/bin/env bash
# The cluster secret of the compose clusters (docs/deployment.md): 32 random
# bytes, hex-encoded, in one file. Both docker/compose.yaml and
# docker/compose.tls.yaml mount it as the compose secret cluster-secret, at
# /run/secrets/cluster-secret, and point CPS_CLUSTER_SECRET_FILE at it: a
# cluster node refuses to start without a way to know its peers.
#
# Usage: scripts/make-cluster-secret.sh [-f] [FILE]
#   FILE  default docker/certs/cluster-secret (git-ignored, outside the
#         image's build context); -f replaces a secret already there (every
#         node must then be restarted: they all share it).
#
# Dev only: the file is world-readable (0644). Compose mounts a file secret
# as a bind mount of this very file (its uid, gid and mode cannot be set),
# and the containers' user 10001 must read it. Never use it in production.
set -euo pipefail

force=0
if [[ "${1:-}" == "-f" ]]; then
    force=1
    shift
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
file="${1:-$root/docker/certs/cluster-secret}"

if [[ -e "$file" && "$force" != 1 ]]; then
    echo "make-cluster-secret: $file exists (use -f to make a new secret)" >&2
    exit 1
fi
dir="$(dirname "$file")"
mkdir -p "$dir"
tmp="$(mktemp "$dir/.cluster-secret.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
# 32 bytes of the kernel's CSPRNG as 64 hex digits, one line.
od -An -v -tx1 -N32 /dev/urandom | tr -d ' \n' >"$tmp"
echo >>"$tmp"
if [[ "$(tr -d '\n' <"$tmp" | wc -c)" != 64 ]]; then
    echo "make-cluster-secret: could not read 32 bytes from /dev/urandom" >&2
    exit 1
fi
chmod 0644 "$tmp"
mv -f "$tmp" "$file"
trap - EXIT
echo "make-cluster-secret: secret in $file"
