#!/usr/bin/env bash
# One-time, idempotent set-up of a Debian 12 machine for chrony-nts: system packages, the Python venv, the lab images.
# Each step is skipped when already done; a missing prerequisite stops with one clear line, not a traceback.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "setup: error: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "run as root: the lab needs podman networks with fixed addresses and debootstrap"
command -v apt-get >/dev/null || die "this set-up expects a Debian-family machine (apt-get not found)"
command -v python3 >/dev/null || die "python3 is not installed"
free_gb=$(df -Pk /var/lib | awk 'NR==2 {printf "%d", $4/1048576}')
[ "$free_gb" -ge 3 ] || die "only ${free_gb} GiB free under /var/lib; the venv and lab images need about 3 GiB"

# --- system packages ---------------------------------------------------------------------------------------------
# chrony is needed on the controller for `chronyd -p` (config validation) and the loopback tests; iptables for
# netavark's firewall rules; openssl/openssh-client for the lab's keys; prometheus for promtool (alert rule tests);
# time (GNU time) for peak-memory figures in benchmarks.
packages=(podman runc netavark aardvark-dns iptables debootstrap chrony openssl openssh-client nftables iproute2 make
  prometheus time)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  # Never let a package start a daemon here: a chronyd without -x would steer this machine's real clock.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1
  fi
  trap '[ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq || die "apt-get update failed (no route to the Debian mirror?)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi
# A chronyd started by the package (on a machine whose init runs services) would run without -x: stop it.
if command -v systemctl >/dev/null && systemctl is-active --quiet chrony 2>/dev/null; then
  systemctl disable --now chrony >/dev/null 2>&1 || true
  echo "setup: stopped and disabled the machine's own chrony.service (tests run their own chronyd -x)"
fi

# --- Python venv ---------------------------------------------------------------------------------------------------
stamp=".venv/.requirements-$(sha256sum requirements.txt | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  echo "setup: creating the Python venv from requirements.txt"
  python3 -m venv .venv || die "python3 -m venv failed (apt-get install python3-venv)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -r requirements.txt || die "pip install -r requirements.txt failed"
  rm -f .venv/.requirements-*; touch "$stamp"
fi

# --- lab images (rebuilt only when lab/image/build.sh changes) ------------------------------------------------------
.venv/bin/python lab/labctl.py image
echo "setup: ready"
