#!/usr/bin/env bash
# Builds the lab's two Debian 12 systemd images without any container registry:
#   HOST image   : systemd, python3, sshd; chrony NOT installed, but its .debs and apt lists are cached so that
#                  the role really installs it, offline and deterministically.
#   SERVER image : the same plus chrony installed, and NTPsec's binaries unpacked under /opt/ntpsec (a second,
#                  independent NTS server implementation; installing the ntpsec package would remove chrony).
# Usage: build.sh HOST_TAG SERVER_TAG   (tags carry the recipe hash, so a changed recipe means a new image)
set -euo pipefail
host_ref=$1 server_ref=$2
mirror=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${LAB_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
work=$(mktemp -d /var/tmp/chrony-nts-image.XXXXXX)
trap 'umount -R "$work/rootfs/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
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

echo ">> import $host_ref"
tar -C "$root" -c . | podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$host_ref" >/dev/null

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
