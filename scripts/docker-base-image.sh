#!/usr/bin/env bash
# Makes a local stand-in for the official node:20-bookworm-slim image where no registry can be
# pulled from, so docker/Dockerfile builds unchanged:
#
#   DOCKER_HOST=unix://... docker-base-image.sh [TAG]      (TAG: node:20-bookworm-slim)
#
# Debian bookworm, variant minbase (essential packages + apt), bootstrapped by mmdebstrap from
# the mirror this machine's apt uses (apt-cache policy; env DEBIAN_MIRROR overrides), plus what
# the official image adds on top: this machine's Node in /usr/local (bin/node, lib/node_modules/npm
# with the npm/npx links, include/node), a `node` user and group with uid/gid 1000 and home
# /home/node, and the dpkg settings of Debian's own slim images (no docs/man/locales,
# force-unsafe-io). One difference, on purpose: env npm_config_nodedir=/usr/local. The official
# image's node-gyp fetches Node's headers from nodejs.org (and better-sqlite3 first tries a
# prebuilt binary from GitHub); with neither reachable it compiles against the headers here.
# And, only where this machine has them, the settings its npm needs to reach the registry: the
# extra CA certificates it trusts (env NODE_EXTRA_CA_CERTS, else npm's cafile: a TLS-inspecting
# egress proxy) and a registry other than npmjs.org, as env NODE_EXTRA_CA_CERTS and
# npm_config_registry in the image.
# The rootfs is streamed into `docker import`: nothing is written outside mmdebstrap's temp dir
# (in TMPDIR). Needs root and Debian's mmdebstrap; about a minute.
set -euo pipefail

TAG=${1:-node:20-bookworm-slim}
DOCKER_CLI=${DOCKER:-/usr/bin/docker}
SUITE=bookworm

die () { echo "docker-base-image: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap's root mode)"
command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap not found: install Debian package mmdebstrap (bash scripts/install-test-deps.sh does it)"

node_bin=$(readlink -f "${NODE:-$(command -v node)}")
prefix=$(dirname "$(dirname "$node_bin")")
for p in bin/node lib/node_modules/npm/bin/npm-cli.js include/node/node.h; do
  [ -e "$prefix/$p" ] || die "$prefix/$p not found: expected Node's usual layout under $prefix"
done
version=$("$node_bin" -p 'process.versions.node')
want=$(printf '%s' "$TAG" | sed -n 's/^node:\([0-9][0-9]*\)-.*/\1/p')
[ -z "$want" ] || [ "${version%%.*}" = "$want" ] || die "this machine's Node is $version; $TAG needs Node $want"

# What this machine's npm needs to reach its registry, handed on to the image's npm.
extra_ca=${NODE_EXTRA_CA_CERTS:-}
if [ -z "$extra_ca" ] && command -v npm >/dev/null 2>&1; then
  extra_ca=$(npm config get cafile 2>/dev/null || true)
  { [ "$extra_ca" != null ] && [ "$extra_ca" != undefined ]; } || extra_ca=
fi
[ -z "$extra_ca" ] || [ -r "$extra_ca" ] || die "CA file $extra_ca (NODE_EXTRA_CA_CERTS or npm cafile) is not readable"
registry=$(npm config get registry 2>/dev/null || echo https://registry.npmjs.org/)
changes=()
[ -z "$extra_ca" ] || changes+=(--change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/node-extra-ca-certs.pem')
case "$registry" in https://registry.npmjs.org|https://registry.npmjs.org/) ;; *) changes+=(--change "ENV npm_config_registry=$registry") ;; esac

# The same mirrors as the host, by suite (a line per suite found; deb.debian.org otherwise).
sources=()
if [ -n "${DEBIAN_MIRROR:-}" ]; then
  sources=("deb $DEBIAN_MIRROR $SUITE main")
else
  for s in "$SUITE" "$SUITE-updates" "$SUITE-security"; do
    url=$(apt-cache policy 2>/dev/null | awk -v r="$s/main" '$3 == r && $2 ~ /^https?:\/\// { print $2; exit }')
    [ -z "$url" ] || sources+=("deb $url $s main")
  done
  [ ${#sources[@]} -gt 0 ] || sources=("deb http://deb.debian.org/debian $SUITE main")
fi

# Runs on the host after the packages are installed, with the root filesystem in "$1".
customize=$(cat <<EOF
set -e
tar -C '$prefix' -c bin/node lib/node_modules/npm include/node | tar -C "\$1/usr/local" -x --no-same-owner
ln -s ../lib/node_modules/npm/bin/npm-cli.js "\$1/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "\$1/usr/local/bin/npx"
chroot "\$1" groupadd --gid 1000 node
chroot "\$1" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright' \
  'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/locale/*' \
  >"\$1/etc/dpkg/dpkg.cfg.d/docker"
echo force-unsafe-io >"\$1/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
find "\$1/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
rm -rf "\$1"/usr/share/man/* "\$1"/usr/share/info/* "\$1"/usr/share/locale/*
rm -f "\$1"/usr/lib/*/libeatmydata*
EOF
)
[ -z "$extra_ca" ] || customize+=$'\n'"install -m 0644 '$extra_ca' \"\$1/usr/local/share/node-extra-ca-certs.pem\""

echo "docker-base-image: $TAG = Debian $SUITE minbase (${sources[*]}) + Node $version from $prefix" >&2
# The eatmydata hook (shipped with mmdebstrap) skips fsync while dpkg installs.
mmdebstrap --variant=minbase --quiet --format=tar \
  --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
  --customize-hook="$customize" \
  "$SUITE" - "${sources[@]}" \
| "$DOCKER_CLI" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=$version" \
    --change 'ENV npm_config_nodedir=/usr/local' \
    --change 'CMD ["node"]' "${changes[@]}" \
    - "$TAG" >/dev/null
echo "docker-base-image: $TAG imported" >&2
