#!/usr/bin/env bash
# Builds the lab's two systemd images of one Debian release without any container registry:
#   HOST image   : systemd, python3, sshd; chrony NOT installed, but its .debs and apt lists are cached so that
#                  the role really installs it, offline and deterministically. Debian's prometheus-node-exporter
#                  installed and enabled (:9100, textfile directory /var/lib/prometheus/node-exporter, where the
#                  role's host check writes its metrics).
#   SERVER image : the same plus chrony installed, and NTPsec's binaries unpacked under /opt/ntpsec (a second,
#                  independent NTS server implementation; installing the ntpsec package would remove chrony).
# Both come from the release's own packages: chrony and NTPsec are the release's versions (recorded as image labels).
# Usage: build.sh HOST_REF SERVER_REF [SUITE]
#   SUITE: bookworm (default), trixie, forky (testing), ...; refs carry the recipe hash (build.sh + suite), so a
#   changed recipe means a new image. A suite this machine's debootstrap does not know is made with its sid script.
set -euo pipefail
host_ref=$1 server_ref=$2 suite=${3:-bookworm}
mirror=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${LAB_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
script=/usr/share/debootstrap/scripts/$suite
[ -e "$script" ] || script=/usr/share/debootstrap/scripts/sid
work=$(mktemp -d /var/tmp/chrony-nts-image.XXXXXX)
trap 'umount -R "$work/rootfs/proc" "$work/hostfs/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
root=$work/rootfs

echo ">> debootstrap $suite (minbase, script $(basename "$script")) into $root"
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,procps,openssh-server,nftables,ca-certificates,libcap2-bin,sudo \
  "$suite" "$root" "$mirror" "$script" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }

rm -f "$root/etc/apt/sources.list.d/debian.sources"
cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
SRC
# The mirror's testing suites may be served past their Release file's Valid-Until (a frozen snapshot): accept them.
echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99chrony-nts-lab"
# Nothing may start daemons inside the chroot while we install.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
mount -t proc proc "$root/proc"
chroot "$root" apt-get update -qq
# Cache chrony and its dependencies (apt lists stay, so `apt-get install chrony` works with no network).
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only chrony >/dev/null
chrony_version=$(chroot "$root" dpkg-deb -f "$(ls "$root"/var/cache/apt/archives/chrony_*.deb | sed "s|^$root||")" Version)
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

labels=(--change "LABEL io.chrony-nts.suite=$suite" --change "LABEL io.chrony-nts.chrony=$chrony_version")
# systemd >= 258 runs only on cgroup v2. On a machine with cgroup v1 only, labctl starts such a host with a private
# cgroup namespace, CAP_SYS_ADMIN and this PID 1: it mounts the container's own cgroup v2 subtree, drops
# CAP_SYS_ADMIN from the bounding set for good, and hands over to systemd (no process of the host keeps it).
systemd_version=$(chroot "$root" dpkg-query -W -f '${Version}' systemd)
labels+=(--change "LABEL io.chrony-nts.systemd=$systemd_version")
if [ "${systemd_version%%[!0-9]*}" -ge 258 ]; then
  cat >"$root/usr/local/sbin/lab-init" <<'INIT'
#!/bin/sh
# PID 1 of a chrony-nts lab host whose systemd needs cgroup v2 (written by lab/image/build.sh).
set -e
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || mount -t cgroup2 cgroup2 /sys/fs/cgroup
exec capsh --drop=cap_sys_admin -- -c 'exec /sbin/init'
INIT
  chmod 755 "$root/usr/local/sbin/lab-init"
  labels+=(--change "LABEL io.chrony-nts.init=/usr/local/sbin/lab-init")
fi

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

echo ">> import $host_ref (chrony $chrony_version cached)"
tar -C "$hostfs" -c . | podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' "${labels[@]}" \
  - "$host_ref" >/dev/null
rm -rf "$hostfs"

echo ">> server layer: chrony installed, NTPsec unpacked"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
mount -t proc proc "$root/proc"
# NTPsec's shared libraries (its lib* dependencies, e.g. libssl3 or libssl3t64) come with chrony.
ntpsec_libs=$(chroot "$root" apt-cache depends ntpsec | awk '$1 == "Depends:" && $2 ~ /^lib/ {print $2}' | sort -u)
# shellcheck disable=SC2086
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chrony $ntpsec_libs >"$work/install.log" 2>&1 \
  || { tail -20 "$work/install.log"; exit 1; }
chroot "$root" sh -c 'cd /tmp && apt-get download -qq ntpsec'
mkdir -p "$root/opt/ntpsec" && dpkg -x "$root"/tmp/ntpsec_*.deb "$root/opt/ntpsec"
ntpsec_version=$(dpkg-deb -f "$root"/tmp/ntpsec_*.deb Version)
rm -f "$root"/tmp/ntpsec_*.deb
if chroot "$root" ldd /opt/ntpsec/usr/sbin/ntpd | grep 'not found'; then echo "ntpd lacks libraries" >&2; exit 1; fi
# The server runs chronyd by hand with -x; the packaged unit stays off.
chroot "$root" systemctl disable chrony.service >/dev/null 2>&1 || true
chrony_gid=$(chroot "$root" getent group _chrony | cut -d: -f3)
umount "$root/proc"
rm -f "$root/usr/sbin/policy-rc.d"
chroot "$root" apt-get clean
labels+=(--change "LABEL io.chrony-nts.ntpsec=$ntpsec_version" --change "LABEL io.chrony-nts.chrony-gid=$chrony_gid")
echo ">> import $server_ref (NTPsec $ntpsec_version, _chrony gid $chrony_gid)"
tar -C "$root" -c . | podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' "${labels[@]}" \
  - "$server_ref" >/dev/null
echo ">> images ready"
