#!/usr/bin/env bash
# Install the Debian Prometheus stack binaries used by the observability tests and the
# local stack: prometheus, promtool, prometheus-alertmanager, amtool.
#
# Idempotent: does nothing when all four binaries are already on PATH. Non-interactive
# (DEBIAN_FRONTEND=noninteractive); needs root (CI and the dev machines run as root).
# The Debian packages would normally start their systemd services from postinst; we do not
# want daemons here (tests start their own processes on free loopback ports), so a
# temporary policy-rc.d denies service starts during the install, and we never call
# systemctl. In containers without systemd the postinst start is a no-op anyway.
set -euo pipefail

need=(prometheus promtool prometheus-alertmanager amtool)
missing=()
for b in "${need[@]}"; do
  command -v "$b" >/dev/null 2>&1 || missing+=("$b")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-prometheus: all present: ${need[*]}"
  exit 0
fi
echo "install-prometheus: missing: ${missing[*]}"

if [ "$(id -u)" -ne 0 ]; then
  echo "install-prometheus: must run as root (apt-get install)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Deny service starts from maintainer scripts for the duration of the install
# (only if no policy-rc.d exists already; restore the previous state afterwards).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  created_policy=1
fi
cleanup() {
  if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi
}
trap cleanup EXIT

apt_install() {
  apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    prometheus prometheus-alertmanager
}

# `apt-get update` once, only when the package lists do not know the packages yet
# (or when a first install attempt fails because the lists are stale).
if ! apt-cache show prometheus prometheus-alertmanager >/dev/null 2>&1; then
  apt-get update -q
  apt_install
elif ! apt_install; then
  apt-get update -q
  apt_install
fi

for b in "${need[@]}"; do
  if ! command -v "$b" >/dev/null 2>&1; then
    echo "install-prometheus: $b still missing after install" >&2
    exit 1
  fi
done
echo "install-prometheus: ok: $(prometheus --version 2>&1 | head -n1)"
