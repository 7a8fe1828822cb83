#!/usr/bin/env bash
# A throwaway Docker engine in one folder, for tests: Debian's docker.io (dockerd starting its
# own containerd, runc). Nothing outside DIR but what they always create: /run/docker/plugins and
# /run/containerd/s (the shims' sockets), both removed again at stop when this script made them.
# Needs root.
#
#   docker-engine.sh start DIR [--watch PID]   starts dockerd; prints KEY=VALUE lines for the
#                                             client (DOCKER_HOST, DOCKER_CONFIG, DOCKER, and
#                                             the storage driver in use). With --watch, a watchdog
#                                             runs `stop DIR --remove` once process PID is gone
#                                             (a test killed before its teardown).
#   docker-engine.sh stop DIR [--remove]       removes every container, stops dockerd (SIGTERM,
#                                             then SIGKILL), kills what is left (shims, clients
#                                             of this engine), unmounts what is mounted under
#                                             DIR, removes the cgroups; --remove deletes DIR.
#
# No bridge, no iptables: containers use `--network host` (and builds `docker build --network
# host`). Storage: dockerd's own choice (overlay2 where the file system under DIR supports it,
# else vfs), or env DOCKER_ENGINE_STORAGE_DRIVER. Cgroups: the cgroupfs driver (no systemd
# needed), under a parent named after DIR. The system's /etc/docker/daemon.json and ~/.docker
# are not read.
set -euo pipefail

DOCKERD=${DOCKERD:-$(command -v dockerd || echo /usr/sbin/dockerd)}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker}   # Debian's client, the engine's own API version
START_TIMEOUT_S=60
STOP_TIMEOUT_S=30
WATCH_MAX_S=7200

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

die () { echo "docker-engine: $*" >&2; exit 1; }

client () { DOCKER_HOST="unix://$dir/docker.sock" DOCKER_CONFIG="$dir/client" "$DOCKER_CLI" "$@"; }

dockerd_pid () {
  local pid
  [ -s "$dir/dockerd.pid" ] || return 1
  pid=$(cat "$dir/dockerd.pid")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

# Processes whose command line or environment names DIR: dockerd, its containerd and the shims
# (container processes are the shims' children and die with them), and what a caller started
# against this engine and left running when it died: docker clients (DOCKER_HOST), a bootstrap
# with TMPDIR in DIR. Not this script.
our_pids () {
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" != "$$" ] || continue
    grep -qF -- "docker-engine.sh" "$p/cmdline" 2>/dev/null && continue
    if grep -qF -- "$dir/" "$p/cmdline" 2>/dev/null || grep -qF -- "$dir/" "$p/environ" 2>/dev/null; then
      echo "${p#/proc/}"
    fi
  done
}

# Containers' cgroups go under this parent, not dockerd's default "docker", so that stop can
# remove exactly what this engine made.
cgroup_parent () { echo "docker-engine-$(basename "$dir")"; }

unmount_all () {
  local m
  # Deepest first; the mount table escapes spaces as \040, which DIR (from mktemp) has none of.
  for m in $(awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

stop_engine () {
  local pid i
  if pid=$(dockerd_pid); then
    # Containers first, while the engine can still stop them (none should outlive a test).
    local ids
    ids=$(timeout 20 bash -c 'DOCKER_HOST="unix://$1/docker.sock" DOCKER_CONFIG="$1/client" "$2" ps -aq' _ "$dir" "$DOCKER_CLI" 2>/dev/null || true)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      timeout 30 bash -c 'DOCKER_HOST="unix://$1/docker.sock" DOCKER_CONFIG="$1/client" "$2" rm -f "${@:3}"' _ "$dir" "$DOCKER_CLI" $ids >/dev/null 2>&1 || true
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT_S * 5; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -0 "$pid" 2>/dev/null && { echo "docker-engine: dockerd did not stop in ${STOP_TIMEOUT_S} s; killing it" >&2; kill -KILL "$pid" 2>/dev/null || true; }
  fi
  # containerd and shims that outlived dockerd (it was killed, or never got to stop them).
  for ((i = 0; i < 3; i++)); do
    local left
    left=$(our_pids)
    [ -n "$left" ] || break
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    sleep 0.5
  done
  unmount_all
  if [ -e "$dir/made-run-docker" ]; then
    rmdir /run/docker/plugins /run/docker 2>/dev/null || true
  fi
  if [ -e "$dir/made-run-containerd" ]; then
    rmdir /run/containerd/s /run/containerd 2>/dev/null || true
  fi
  # The containers' parent cgroup (one per hierarchy; empty once the containers are gone).
  find /sys/fs/cgroup -maxdepth 2 -type d -name "$(cgroup_parent)" -exec rmdir {} + 2>/dev/null || true
}

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start DIR [--watch PID] | stop DIR [--remove]"
[ "$(id -u)" -eq 0 ] || die "needs root (dockerd)"
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac

case "$cmd" in
  start)
    watch=
    if [ "${3:-}" = "--watch" ]; then watch=${4:?--watch needs a PID}; fi
    [ -x "$DOCKERD" ] || die "dockerd not found: install Debian package docker.io (bash scripts/install-test-deps.sh does it)"
    [ -x "$DOCKER_CLI" ] || die "$DOCKER_CLI not found: install Debian package docker.io"
    ! dockerd_pid >/dev/null || die "an engine already runs in $dir"
    mkdir -p "$dir/data" "$dir/exec" "$dir/client"
    # A UNIX socket path holds at most 107 bytes; containerd's lives deepest.
    [ ${#dir} -le 60 ] || die "DIR too long for the engine's sockets (${#dir} > 60 bytes): $dir"
    [ -d /run/docker ] || : >"$dir/made-run-docker"
    [ -d /run/containerd ] || : >"$dir/made-run-containerd"
    # deprecated-key-path: else dockerd 20.10 writes /etc/docker/key.json.
    printf '{ "deprecated-key-path": "%s/key.json" }\n' "$dir" >"$dir/daemon.json"
    storage=()
    [ -z "${DOCKER_ENGINE_STORAGE_DRIVER:-}" ] || storage=(--storage-driver "$DOCKER_ENGINE_STORAGE_DRIVER")
    setsid "$DOCKERD" --config-file "$dir/daemon.json" --data-root "$dir/data" --exec-root "$dir/exec" \
      --pidfile "$dir/dockerd.pid" -H "unix://$dir/docker.sock" "${storage[@]}" \
      --iptables=false --ip6tables=false --ip-masq=false --bridge=none --log-level warn \
      --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "/$(cgroup_parent)" \
      </dev/null >"$dir/dockerd.log" 2>&1 &
    child=$!
    ready=
    for ((i = 0; i < START_TIMEOUT_S * 5; i++)); do
      if client version --format '{{.Server.Version}}' >/dev/null 2>&1; then ready=1; break; fi
      kill -0 "$child" 2>/dev/null || break
      sleep 0.2
    done
    if [ -z "$ready" ]; then
      if kill -0 "$child" 2>/dev/null; then
        why="did not answer on $dir/docker.sock within ${START_TIMEOUT_S} s"
      else
        rc=0; wait "$child" || rc=$?
        why="exited with status $rc before answering on $dir/docker.sock"
      fi
      echo "docker-engine: dockerd ($DOCKERD) $why; its log:" >&2
      tail -n 30 "$dir/dockerd.log" >&2 || true
      [ -s "$dir/dockerd.pid" ] || echo "$child" >"$dir/dockerd.pid"
      stop_engine
      exit 1
    fi
    if [ -n "$watch" ]; then
      # Bounded: gives up after WATCH_MAX_S; then the engine is stopped anyway.
      setsid bash -c 'for ((i = 0; i < $3; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 1; done; exec bash "$2" stop "$4" --remove' \
        _ "$watch" "$self" "$WATCH_MAX_S" "$dir" </dev/null >/dev/null 2>&1 &
      echo $! >"$dir/watchdog.pid"
    fi
    echo "DOCKER_HOST=unix://$dir/docker.sock"
    echo "DOCKER_CONFIG=$dir/client"
    echo "DOCKER=$DOCKER_CLI"
    echo "STORAGE_DRIVER=$(client info --format '{{.Driver}}')"
    ;;
  stop)
    [ -d "$dir" ] || exit 0
    # The watchdog has nothing left to do (unless it is who called us).
    if [ -s "$dir/watchdog.pid" ]; then
      w=$(cat "$dir/watchdog.pid")
      [ "$w" = "$PPID" ] || [ "$w" = "$$" ] || kill "$w" 2>/dev/null || true
    fi
    stop_engine
    if [ "${3:-}" = "--remove" ]; then
      rm -rf --one-file-system "$dir"
    fi
    ;;
  *) die "unknown command $cmd" ;;
esac
