#!/usr/bin/env bash
# Builds the lab's two Debian 12 systemd images without any container registry:
#   HOST image   : systemd, python3, sshd; chrony NOT installed, but its .debs and apt lists are cached so that
#                  the role really installs it, offline and deterministically. Debian's prometheus-node-exporter
#                  installed and enabled (:9100, textfile directory /var/lib/prometheus/node-exporter, where the
#                  role's host check writes its metrics).
#   SERVER image : the same plus chrony installed, and NTPsec's binaries unpacked under /opt/ntpsec (a second,
#                  independent NTS server implementation; installing the ntpsec package would remove chrony).
# Usage: build.sh HOST_TAG SERVER_TAG   (tags carry the recipe hash, so a changed recipe means a new image)
set -euo pipefail
host_ref=$1 server_ref=$2
mirror=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${LAB_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
work=$(mktemp -d /var/tmp/chrony-nts-image.XXXXXX)
trap 'umount -R "$work/rootfs/proc" "$work/hostfs/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
root=$work/rootfs

echo ">> debootstrap bookworm (minbase) into $root"
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,procps,openssh-server,nftables,ca-certificates,libcap2-bin,sudo \
  bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }

cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SRC
# Nothing may start daemons inside the chroot while we install.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
mount -t proc proc "$root/proc"
chroot "$root" apt-get update -qq
# Cache chrony and its dependencies (apt lists stay, so `apt-get install chrony` works with no network).
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only chrony >/dev/null
# sshd for Ansible: root login by key only; host keys are made per container at first boot.
rm -f "$root"/etc/ssh/ssh_host_*
cat >"$root/etc/ssh/sshd_config.d/lab.conf" <<SSHD
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
SSHD
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cat >"$root/etc/systemd/system/ssh.service.d/lab-hostkeys.conf" <<UNIT
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
# Quiet, fast boots: no getty, no timesyncd fights (it is not installed in minbase anyway).
chroot "$root" systemctl mask getty@tty1.service serial-getty@console.service console-getty.service \
  systemd-logind.service >/dev/null 2>&1 || true
rm -f "$root/etc/machine-id"; touch "$root/etc/machine-id"
umount "$root/proc"
rm -f "$root/usr/sbin/policy-rc.d"

# node_exporter on the hosts only, in a copy of the tree: the server layer below stays as it was (its prometheus user
# would otherwise take the gid _chrony gets there). Its .debs go to a cache of their own, removed after, so the
# image's apt cache still holds chrony's packages and nothing else.
echo ">> host layer: Debian's prometheus-node-exporter"
ne_start=$SECONDS
hostfs=$work/hostfs
cp -a "$root" "$hostfs"
printf '#!/bin/sh\nexit 101\n' >"$hostfs/usr/sbin/policy-rc.d"; chmod 755 "$hostfs/usr/sbin/policy-rc.d"
mount -t proc proc "$hostfs/proc"
mkdir -p "$hostfs/var/cache/apt/node-exporter/partial"
chroot "$hostfs" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  -o Dir::Cache::Archives=/var/cache/apt/node-exporter/ prometheus-node-exporter >"$work/node-exporter.log" 2>&1 \
  || { tail -20 "$work/node-exporter.log"; exit 1; }
rm -rf "$hostfs/var/cache/apt/node-exporter"
# Debian builds it with --collector.textfile.directory=/var/lib/prometheus/node-exporter as the default (ARGS="";
# 12's --help shows it quoted, 13's and testing's not); a release whose binary does not gets the flag in ARGS.
textfile_dir=/var/lib/prometheus/node-exporter
ne_help=$(chroot "$hostfs" prometheus-node-exporter --help 2>&1 || true)
if ! grep -Eq -- "--collector\.textfile\.directory=\"?$textfile_dir(\"| |$)" <<<"$ne_help"; then
  echo "ARGS=\"--collector.textfile.directory=$textfile_dir\"" >>"$hostfs/etc/default/prometheus-node-exporter"
fi
chroot "$hostfs" systemctl enable prometheus-node-exporter.service >/dev/null 2>&1
chroot "$hostfs" systemctl is-enabled --quiet prometheus-node-exporter.service
[ -d "$hostfs$textfile_dir" ] || { echo "prometheus-node-exporter did not make $textfile_dir" >&2; exit 1; }
ne_version=$(chroot "$hostfs" dpkg-query -W -f '${Version}' prometheus-node-exporter)
umount "$hostfs/proc"
rm -f "$hostfs/usr/sbin/policy-rc.d"
echo ">> host layer: prometheus-node-exporter $ne_version enabled ($((SECONDS - ne_start)) s)"

echo ">> import $host_ref"
tar -C "$hostfs" -c . | podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$host_ref" >/dev/null
rm -rf "$hostfs"

echo ">> server layer: chrony installed, NTPsec unpacked"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
mount -t proc proc "$root/proc"
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-download chrony libbsd0 libssl3 >/dev/null 2>&1 \
  || chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chrony libbsd0 libssl3 >/dev/null
( cd "$root/tmp" && chroot "$root" sh -c 'cd /tmp && apt-get download -qq ntpsec' ) || true
if ls "$root"/tmp/ntpsec_*.deb >/dev/null 2>&1; then
  mkdir -p "$root/opt/ntpsec" && dpkg -x "$root"/tmp/ntpsec_*.deb "$root/opt/ntpsec" && rm -f "$root"/tmp/ntpsec_*.deb
fi
# The server runs chronyd by hand with -x; the packaged unit stays off.
chroot "$root" systemctl disable chrony.service >/dev/null 2>&1 || true
umount "$root/proc"
rm -f "$root/usr/sbin/policy-rc.d"
chroot "$root" apt-get clean
echo ">> import $server_ref"
tar -C "$root" -c . | podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$server_ref" >/dev/null
echo ">> images ready"
