#!/usr/bin/env python3
"""The chrony-nts lab: real NTS servers and real systemd hosts in podman, made and torn down per lab.

    labctl.py up      [--name NAME] [--clients N] [--tier M] [--ssh-wait SECONDS]
                      [--release R[,R...]] [--server-release R[,R...]]
                                                    build what is missing, start what is stopped (idempotent)
    labctl.py down    [--name NAME] [--force]       remove every container, the network, keys and SSH masters
    labctl.py status  [--name NAME] [--json]
    labctl.py inventory [--name NAME]               print the path of the lab's Ansible inventory
    labctl.py fault   [--name NAME] ACTION SERVER [PROTO]
                      ACTION: stop | start | block | unblock     PROTO (block): ke | ntp | all
    labctl.py image   [--release R[,R...]|all]       build the images if their recipe changed (default: 12's)

What a lab holds (NAME defaults to $LAB_NAME or "chrony-nts-lab"):
  * one internal podman network NAME-net (no route out; a /24 chosen free in 10.89.0.0/16) with DNS names *.lab.test
  * NTS servers, each chronyd -x (never any clock control) or NTPsec, key and certificate from a CA made for this lab:
        nts1, nts2      chrony, trusted certificate                      (the servers clients should use)
        nts3            chrony, trusted certificate, used by no client   (for faults on a never-seen server)
        nts-badca       chrony, certificate from another CA nobody trusts
        nts-expired     chrony, certificate that expired yesterday
        ntpsec1         NTPsec 1.2 (a second, independent implementation)
    Servers get CAP_NET_ADMIN (not CAP_SYS_TIME) so faults can be injected with nftables inside them.
  * N client hosts NAME-client1..N: systemd as PID 1, python3, sshd with a key made for this lab, CAP_SYS_TIME dropped,
    chrony not installed (its packages are cached in the image, so installing it is offline and deterministic).
  * with --tier M: M more systemd hosts NAME-tier1..M in the group `chrony_nts_servers`, for the fleet's own NTS
    server tier (the chrony_nts_server role makes them servers); each has a key and certificate from the lab CA
    (tier1.lab.test + its address) under .lab/NAME/tier/, named in the inventory.
  * Debian releases (R: 12 bookworm, 13 trixie, testing forky; each image from its release's own packages, built
    with debootstrap, tagged with the hash of its recipe): --release R[,R...] for the hosts (clientN takes the
    releases in turn, tier hosts the first; default 12), --server-release R[,R...] for the servers (the first runs
    the set above; each further release R adds nts-R (chrony) and ntpsec-R (NTPsec), both with trusted
    certificates). The inventory gives each host its lab_release and each server its release. A lab keeps the
    releases it was made with (a later `up` without them reuses them); asking an existing container for another
    release is refused.
  * an Ansible inventory (inventories/lab/hosts.yml for the default lab, else .lab/NAME/inventory/hosts.yml) and
    .lab/NAME/ssh_config.

Waiting for the hosts: `up` waits until every host accepts SSH. By default it waits 90 s on an idle machine,
stretched by the machine's load: 90 s x max(1, load average / cores, running containers / (8 x cores)), at most
900 s, reviewed every 10 s while it waits. --ssh-wait SECONDS (or LAB_SSH_WAIT) sets a fixed wait instead. When a
host is not ready in time, `up` says why for each one: container state, `systemctl is-system-running`, the ssh unit,
systemd's pending jobs, the last SSH error and a journal tail.

One checkout per lab: each container is labelled with the checkout that made it (its SSH key and certificates live
in that checkout's .lab/NAME/). `up` and `down` refuse a lab NAME made by another checkout and say which one: use
another --name (LAB_NAME), or take that lab down from its own checkout (`down --force` removes it from here).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parent.parent
LAB = Path(__file__).resolve().parent
DEFAULT_NAME = os.environ.get("LAB_NAME", "chrony-nts-lab")
DOMAIN = "lab.test"
LABEL = "io.chrony-nts.lab"
CHECKOUT_LABEL = f"{LABEL}.checkout"  # the checkout (ROOT) whose labctl made the container
SSH_WAIT_BASE = 90.0  # seconds, on an idle machine
SSH_WAIT_CAP = 900.0
CONTAINERS_PER_CPU = 8  # running containers per core that the base wait allows for
IMAGE_RECIPE = [LAB / "image" / "build.sh"]
CHRONY_GID_IN_IMAGE = 103  # _chrony in the Debian 12 image (newer images say theirs in a label)
# Debian releases the lab's images are made of (release -> debootstrap suite), each with its own chrony and NTPsec:
# 12 bookworm (chrony 4.3, NTPsec 1.2.2), 13 trixie (4.6.1, 1.2.3), testing (forky when this was written: 4.9,
# 1.2.5; its image is fixed when built, and rebuilt only when its recipe changes).
RELEASES = {"12": "bookworm", "13": "trixie", "testing": "forky"}
RELEASE_ALIASES = {"bookworm": "12", "trixie": "13", "forky": "testing", "14": "testing"}
DEFAULT_RELEASE = "12"
IMAGE_LOCK = Path("/run/chrony-nts-lab-images.lock")  # one image build at a time on the machine (root only)


class LabError(Exception):
    """A problem the user can act on: printed as one line, no traceback."""


# --------------------------------------------------------------------------------------------------------------- basics
def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(LAB / "containers.conf"))
    return env


def podman(*args: str, check: bool = True, capture: bool = True, input_text: str | None = None, timeout: float = 600):
    cmd = ["podman", *args]
    res = subprocess.run(
        cmd, env=podman_env(), text=True, input=input_text, capture_output=capture, check=False, timeout=timeout
    )
    if check and res.returncode != 0:
        raise LabError(f"`{' '.join(cmd)}` failed (rc {res.returncode}): {(res.stderr or '').strip()[-800:]}")
    return res


def preflight() -> None:
    """One clear message per missing piece of the environment, before anything is created."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the lab needs root (podman networks with static addresses, debootstrap)")
    for tool, pkg in (("podman", "podman"), ("runc", "runc"), ("ssh", "openssh-client"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            problems.append(f"`{tool}` is not installed (apt-get install {pkg}, or run `make setup`)")
    free = shutil.disk_usage("/var/lib").free / 2**30
    if free < 2:
        problems.append(f"only {free:.1f} GiB free under /var/lib; the lab images need about 2 GiB")
    if problems:
        raise LabError("; ".join(problems))


def parse_releases(text: str | None) -> list[str] | None:
    """`12,13,testing` (or names: bookworm, trixie, forky; `all`) -> ["12", "13", "testing"]; None stays None."""
    if text is None:
        return None
    if text.strip() == "all":
        return list(RELEASES)
    out = []
    for word in (w.strip().lower() for w in text.split(",")):
        release = RELEASE_ALIASES.get(word, word)
        if release not in RELEASES:
            known = ", ".join(f"{r} ({s})" for r, s in RELEASES.items())
            raise LabError(f"unknown Debian release {word!r}: the lab knows {known} and `all`")
        if release not in out:
            out.append(release)
    if not out:
        raise LabError("no Debian release given")
    return out


def recipe_tag(release: str = DEFAULT_RELEASE) -> str:
    """The images' tag: a hash of their recipe (build.sh) and the release's suite."""
    digest = hashlib.sha256()
    for path in IMAGE_RECIPE:
        digest.update(path.read_bytes())
    digest.update(RELEASES[release].encode())
    return digest.hexdigest()[:12]


def image_refs(release: str = DEFAULT_RELEASE) -> tuple[str, str]:
    """(host image, server image) of a release: the default release's under the names the lab always used (Molecule's
    scenarios use them), the others' with the release in the name."""
    tag = recipe_tag(release)
    suffix = "" if release == DEFAULT_RELEASE else f"-{release}"
    return f"localhost/chrony-nts-lab-host{suffix}:{tag}", f"localhost/chrony-nts-lab-server{suffix}:{tag}"


@contextlib.contextmanager
def image_lock():
    """Image builds wait for each other (two labs coming up at once must not build the same image twice)."""
    with open(IMAGE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_images(release: str = DEFAULT_RELEASE) -> tuple[str, str]:
    """The release's images, built with debootstrap when missing (a changed recipe means new tags)."""
    host_ref, server_ref = image_refs(release)

    def missing() -> list[str]:
        return [r for r in (host_ref, server_ref) if podman("image", "exists", r, check=False).returncode != 0]

    if missing():
        if shutil.which("debootstrap") is None:
            raise LabError("`debootstrap` is not installed (apt-get install debootstrap, or run `make setup`)")
        with image_lock():
            if missing():
                suite = RELEASES[release]
                print(f"lab: building Debian {release} ({suite}) images {host_ref} and {server_ref}", flush=True)
                start = time.monotonic()
                res = subprocess.run(
                    ["bash", str(LAB / "image" / "build.sh"), host_ref, server_ref, suite],
                    env=podman_env(),
                    check=False,
                )
                if res.returncode != 0:
                    raise LabError(f"Debian {release} ({suite}) image build failed (see the lines above)")
                print(f"lab: built the Debian {release} ({suite}) images in {time.monotonic() - start:.0f} s")
    # Stable names for tools that cannot compute the recipe hash (Molecule scenarios use the default release's).
    for ref in (host_ref, server_ref):
        podman("tag", ref, ref.rsplit(":", 1)[0] + ":latest")
    return host_ref, server_ref


_LABELS: dict[str, dict[str, str]] = {}


def image_labels(ref: str) -> dict[str, str]:
    """An image's labels (build.sh records the suite, chrony, NTPsec and systemd versions, _chrony's gid, the init)."""
    if ref not in _LABELS:
        res = podman("image", "inspect", "--format", "{{json .Labels}}", ref)
        _LABELS[ref] = json.loads(res.stdout.strip() or "null") or {}
    return _LABELS[ref]


def chrony_gid(server_ref: str) -> int:
    """_chrony's gid in a server image (server keys are readable by that group only)."""
    gid = image_labels(server_ref).get("io.chrony-nts.chrony-gid")
    if not gid:  # an image built before the label existed
        gid = podman("run", "--rm", server_ref, "id", "-g", "_chrony").stdout.strip()
    return int(gid)


_CGROUPS: list[str] = []


def machine_cgroups() -> str:
    """The cgroup version podman sees on this machine: v1 or v2."""
    if not _CGROUPS:
        res = podman("info", "--format", "{{.Host.CgroupsVersion}}", check=False)
        _CGROUPS.append(res.stdout.strip() or "v2")
    return _CGROUPS[0]


def host_start(image: str) -> tuple[list[str], list[str]]:
    """(extra podman run options, command) for a systemd host of this image. An image whose systemd needs cgroup v2
    (build.sh writes its lab-init) gets, on a cgroup v1 machine only, a private cgroup namespace and CAP_SYS_ADMIN for
    lab-init to mount its own cgroup v2 subtree; lab-init drops CAP_SYS_ADMIN from the bounding set before systemd."""
    init = image_labels(image).get("io.chrony-nts.init")
    if init and machine_cgroups() == "v1":
        return ["--cgroupns", "private", "--cap-add", "SYS_ADMIN"], [init]
    return [], ["/sbin/init"]


# ------------------------------------------------------------------------------------- waiting for hosts, and why not
def ssh_wait_budget(load1: float, cpus: int, running: int, base: float = SSH_WAIT_BASE) -> float:
    """Seconds to wait for the lab's hosts to accept SSH: `base` on an idle machine, stretched as much as the machine
    is loaded (load average per core, or running containers per core beyond CONTAINERS_PER_CPU), at most the cap."""
    cpus = max(cpus, 1)
    factor = max(1.0, load1 / cpus, running / (CONTAINERS_PER_CPU * cpus))
    return min(base * factor, SSH_WAIT_CAP)


def machine_load() -> tuple[float, int, int]:
    """(1-minute load average, usable cores, running containers on the machine, any lab or none)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    res = podman("ps", "-q", check=False, timeout=60)
    return os.getloadavg()[0], cpus, len(res.stdout.split()) if res.returncode == 0 else 0


def _first_line(text: str) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def diagnose_host(
    short: str,
    container: str,
    container_state: str | None,
    system: tuple[int, str, str] | None,
    sshd: tuple[int, str, str] | None,
    jobs: tuple[int, str, str] | None,
    journal: tuple[int, str, str] | None,
    ssh_error: str,
) -> list[str]:
    """Why one host does not accept SSH, from what was read of it: the container's state, and (rc, stdout, stderr) of
    `systemctl is-system-running`, `systemctl is-active ssh.service`, `systemctl list-jobs` and `journalctl -n`, each
    run with `podman exec` (None: not run). Returns the lines to print: a summary, the likely cause, then details."""
    if container_state is None:
        return [f"{short}: container {container} does not exist", "    cause: it was removed; run `up` again"]
    if container_state != "running":
        return [
            f"{short}: container {container} is {container_state}",
            f"    cause: the container is not running: see `podman logs {container}`; `up` starts it again",
        ]

    def state(res: tuple[int, str, str] | None) -> str:
        if res is None:
            return "not read"
        return _first_line(res[1]) or f"unknown ({_first_line(res[2]) or f'rc {res[0]}'})"

    system_state, sshd_state = state(system), state(sshd)
    lines = [
        f"{short}: container {container} running, systemd {system_state}, ssh.service {sshd_state}; "
        f"last SSH attempt: {ssh_error or 'none'}"
    ]
    if "Permission denied" in ssh_error:
        cause = (
            "sshd answers but refuses this lab's key: the container was made with another key "
            "(another checkout, or .lab/NAME removed while the lab was up): take the lab down and up again"
        )
    elif system_state in ("initializing", "starting"):
        cause = "systemd is still booting (see the pending jobs): on a loaded machine, give it longer with --ssh-wait"
    elif sshd_state in ("inactive", "failed", "activating", "deactivating"):
        cause = f"ssh.service is {sshd_state} although the boot finished ({system_state}): see the journal"
    elif system_state in ("running", "degraded") and sshd_state == "active":
        cause = "sshd runs but did not complete an SSH login in time: the machine may be overloaded"
    else:
        cause = "unknown: see the journal"
    lines.append(f"    cause: {cause}")
    pending = [ln.split()[1:] for ln in (jobs[1] if jobs else "").splitlines() if len(ln.split()) >= 3]
    pending.sort(key=lambda job: job[-1] != "running")  # what systemd is busy with first, then what waits for it
    if pending:
        lines.append("    pending systemd jobs: " + "; ".join(" ".join(job) for job in pending[:8]))
    tail = [ln for ln in (journal[1] if journal else "").splitlines() if ln.strip()]
    if tail:
        lines.append("    journal:")
        lines += [f"      {ln[:200]}" for ln in tail]
    elif journal is not None:
        lines.append(f"    journal: not read ({_first_line(journal[2]) or f'rc {journal[0]}'})")
    return lines


def wait_failure_message(
    waited: float, fixed: bool, load: tuple[float, int, int], diagnoses: dict[str, list[str]]
) -> str:
    """The error for hosts that did not accept SSH in time: how long, under what load, how to wait longer, and each
    host's diagnosis (from diagnose_host)."""
    load1, cpus, running = load
    how = "as set" if fixed else "stretched by load"
    head = (
        f"lab hosts did not accept SSH within {waited:.0f} s ({how}): {', '.join(sorted(diagnoses))}; "
        f"machine load {load1:.1f} on {cpus} cores, {running} containers running; "
        "wait longer with --ssh-wait SECONDS or LAB_SSH_WAIT=SECONDS"
    )
    return "\n".join([head, *(line for host in sorted(diagnoses) for line in diagnoses[host])])


# ------------------------------------------------------------------------------------------ which checkout owns a lab
def checkout_of(inspected: dict, lab_name: str) -> str | None:
    """The checkout that made a lab container, from one entry of `podman container inspect`: its checkout label, or,
    for a container made before that label existed, the checkout whose .lab/NAME/ its mounts come from."""
    labels = (inspected.get("Config") or {}).get("Labels") or {}
    if labels.get(CHECKOUT_LABEL):
        return labels[CHECKOUT_LABEL]
    marker = f"/.lab/{lab_name}/"
    for mount in inspected.get("Mounts") or []:
        source = mount.get("Source") or ""
        if marker in source:
            return source.split(marker, 1)[0]
    return None


def foreign_checkouts(inspected: list[dict], lab_name: str, root: Path) -> dict[str, list[str]]:
    """Containers of lab `lab_name` that another checkout than `root` made: {that checkout: [container names]}."""
    found: dict[str, list[str]] = {}
    for entry in inspected:
        owner = checkout_of(entry, lab_name)
        if owner is not None and Path(owner) != root:
            found.setdefault(owner, []).append(entry.get("Name", "?").lstrip("/"))
    return found


def foreign_lab_message(lab_name: str, found: dict[str, list[str]], default_name: str = "chrony-nts-lab") -> str:
    owners = sorted(found)
    names = sorted(n for ns in found.values() for n in ns)
    make_down = "make lab-down" + ("" if lab_name == default_name else f" LAB_NAME={lab_name}")
    gone = [o for o in owners if not Path(o).is_dir()]
    msg = (
        f"lab {lab_name} is already up from another checkout, {' and '.join(owners)} ({len(names)} containers, "
        f"e.g. {names[0]}): its hosts take that checkout's SSH key, not this one's. Use another lab name here "
        f"(make demo LAB_NAME={lab_name}-2, or labctl.py --name), or take that lab down in its checkout: "
        f"cd {owners[0]} && {make_down}"
    )
    if gone:
        msg += f". {' and '.join(gone)} no longer exists: remove the lab from here with "
        msg += f"labctl.py down --name {lab_name} --force"
    return msg


# ----------------------------------------------------------------------------------------------------------- the state
class Lab:
    def __init__(
        self,
        name: str,
        clients: int = 4,
        tier: int = 0,
        attach: str | None = None,
        ssh_wait: float | None = None,
        releases: list[str] | None = None,
        server_releases: list[str] | None = None,
    ):
        if not name.replace("-", "").isalnum() or len(name) > 40:
            raise LabError(f"lab name {name!r} must be letters, digits and dashes, at most 40 characters")
        self.name = name
        self.clients = clients
        self.tier = tier
        self.ssh_wait = ssh_wait  # None: stretched by the machine's load (ssh_wait_budget)
        self.dir = ROOT / ".lab" / name
        # Debian releases: of the hosts (clients take them in turn, tier hosts the first) and of the servers (the first
        # for the standard set, nts-R and ntpsec-R for each further one). Not given: as the lab was made, else 12.
        saved = self.saved_releases()
        self.releases = releases or saved.get("clients") or [DEFAULT_RELEASE]
        self.server_releases = server_releases or saved.get("servers") or [DEFAULT_RELEASE]
        self.servers = self.server_table(self.server_releases)
        # --attach: join a network someone else made (a Molecule scenario's); addresses are then dynamic, so
        # certificates name the servers by DNS only and `down` removes only this lab's containers.
        self.attach = attach
        self.net = attach or f"{name}-net"
        default = name == "chrony-nts-lab"
        # Any lab's inventory sits beside the lab group_vars (the default lab's in inventories/lab/, others' in a
        # directory of their own that links to the same group_vars), so every lab is configured alike.
        self.inventory = (
            (ROOT / "inventories" / "lab" / "hosts.yml") if default else (self.dir / "inventory" / "hosts.yml")
        )

    # names and addresses ---------------------------------------------------------------------------------------------
    SERVERS: ClassVar[dict[str, tuple[str, int, str]]] = {
        # name: (kind, last octet, certificate)
        "nts1": ("chrony", 2, "good"),
        "nts2": ("chrony", 3, "good"),
        "nts-badca": ("chrony", 4, "rogue"),
        "nts-expired": ("chrony", 5, "expired"),
        "ntpsec1": ("ntpsec", 6, "good"),
        # A good server that the lab's clients are not configured with: no cookies of it are saved anywhere, so a
        # fault on it (e.g. TCP 4460 blocked) shows what a host meets with a server it never talked to.
        "nts3": ("chrony", 7, "good"),
    }

    @classmethod
    def server_table(cls, server_releases: list[str]) -> dict[str, tuple[str, int, str, str]]:
        """Every NTS server: name -> (kind, last octet, certificate, Debian release). The standard set (SERVERS) runs
        the first release; each further release R adds nts-R (chrony) and ntpsec-R (NTPsec), trusted certificates."""
        base = server_releases[0]
        table = {short: (*spec, base) for short, spec in cls.SERVERS.items()}
        for release in server_releases[1:]:
            octet = 200 + 2 * list(RELEASES).index(release)
            table[f"nts-{release}"] = ("chrony", octet, "good", release)
            table[f"ntpsec-{release}"] = ("ntpsec", octet + 1, "good", release)
        return table

    def saved_releases(self) -> dict[str, list[str]]:
        try:
            return json.loads((self.dir / "releases.json").read_text())
        except (OSError, ValueError):
            return {}

    def container(self, short: str) -> str:
        return f"{self.name}-{short}"

    def hosts(self) -> list[tuple[str, int, str]]:
        """Every Ansible-managed host of the lab: (short name, last octet, inventory group)."""
        clients = [(f"client{i}", 10 + i, "chrony_nts_clients") for i in range(1, self.clients + 1)]
        tier = [(f"tier{i}", 100 + i, "chrony_nts_servers") for i in range(1, self.tier + 1)]
        return clients + tier

    def host_release(self, short: str) -> str:
        """clientN takes the host releases in turn (client1 the first); tier hosts the first."""
        if short.startswith("client"):
            return self.releases[(int(short[len("client") :]) - 1) % len(self.releases)]
        return self.releases[0]

    def address(self, subnet: ipaddress.IPv4Network, octet: int) -> str:
        return str(subnet.network_address + octet)

    def fixed_address(self, subnet: ipaddress.IPv4Network | None, octet: int) -> list[str]:
        if subnet is None:
            return []
        return ["--ip", self.address(subnet, octet), "--mac-address", self.mac(subnet, octet)]

    def current_address(self, short: str) -> str:
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
        return podman("container", "inspect", "--format", fmt, self.container(short)).stdout.split()[0]

    def mac(self, subnet: ipaddress.IPv4Network, octet: int) -> str:
        """A fixed, locally administered MAC per address: a restarted server keeps it, so no stale ARP entry on the
        host blackholes it."""
        third = subnet.network_address.packed[2]
        return f"02:c7:6e:74:{third:02x}:{octet:02x}"

    # network ---------------------------------------------------------------------------------------------------------
    def subnet(self) -> ipaddress.IPv4Network | None:
        res = podman("network", "inspect", self.net, check=False)
        if res.returncode != 0:
            return None
        data = json.loads(res.stdout)[0]
        return ipaddress.ip_network(data["subnets"][0]["subnet"])

    def free_subnet(self) -> ipaddress.IPv4Network:
        used = set()
        for net in json.loads(podman("network", "ls", "--format", "json").stdout or "[]"):
            for sub in net.get("subnets") or []:
                used.add(ipaddress.ip_network(sub["subnet"]))
        start = int(hashlib.sha256(self.name.encode()).hexdigest(), 16) % 200 + 20
        for i in range(236):
            candidate = ipaddress.ip_network(f"10.89.{(start + i) % 236 + 20}.0/24")
            if not any(candidate.overlaps(u) for u in used):
                return candidate
        raise LabError("no free /24 left in 10.89.0.0/16 for a lab network")

    def ensure_network(self) -> ipaddress.IPv4Network | None:
        if self.attach:
            if podman("network", "exists", self.net, check=False).returncode != 0:
                raise LabError(f"network {self.net!r} to attach to does not exist")
            return None
        subnet = self.subnet()
        if subnet is None:
            subnet = self.free_subnet()
            podman(
                "network", "create", "--internal", "--subnet", str(subnet),
                "--label", f"{LABEL}={self.name}", self.net,
            )  # fmt: skip
        return subnet

    # pki -------------------------------------------------------------------------------------------------------------
    def ensure_pki(self, subnet: ipaddress.IPv4Network | None, gids: dict[str, int] | None = None) -> None:
        """The lab's CA and a CA nobody trusts, made once per lab; certificates issued for whatever lacks one (so a
        server or tier host added to an existing lab gets its own). CA keys stay in the 0700 lab directory. A server's
        key is readable by root and the _chrony group of its release's image (gids: release -> gid)."""
        sys.path.insert(0, str(LAB))
        import pki  # needs the venv's cryptography: imported only when used

        pdir = self.dir / "pki"

        def authority(stem: str, common_name: str):
            if (pdir / f"{stem}.pem").exists():
                return pki.Authority.load((pdir / f"{stem}.key").read_bytes(), (pdir / f"{stem}.pem").read_bytes())
            made = pki.Authority.create(common_name)
            pki.write(pdir / f"{stem}.key", made.key_pem, 0o600)
            pki.write(pdir / f"{stem}.pem", made.cert_pem, 0o644)
            return made

        ca = authority("ca", f"chrony-nts lab CA ({self.name})")
        rogue = authority("rogue-ca", "an authority nobody trusts")
        for short, (_kind, octet, flavour, release) in self.servers.items():
            sdir = self.dir / "servers" / short
            if (sdir / "server.crt").exists():
                continue
            dns = [f"{short}.{DOMAIN}"]
            ips = [self.address(subnet, octet)] if subnet else []
            if flavour == "rogue":
                key, cert = rogue.issue(dns, ips)
            elif flavour == "expired":
                key, cert = ca.issue(dns, ips, *pki.expired_window())
            else:
                key, cert = ca.issue(dns, ips)
            pki.write(sdir / "server.crt", cert + ca.cert_pem if flavour != "rogue" else cert, 0o644)
            # the key: root and the chrony group only (gid as inside the image)
            pki.write(sdir / "server.key", key, 0o640, 0, (gids or {}).get(release, CHRONY_GID_IN_IMAGE))
        self._issue_tier(ca, subnet)

    def _issue_tier(self, ca, subnet: ipaddress.IPv4Network) -> None:
        import pki  # on sys.path since ensure_pki

        for short, octet, group in self.hosts():
            if group != "chrony_nts_servers" or (self.dir / "tier" / f"{short}.crt").exists():
                continue
            key, cert = ca.issue([f"{short}.{DOMAIN}"], [self.address(subnet, octet)])
            pki.write(self.dir / "tier" / f"{short}.key", key, 0o600)
            pki.write(self.dir / "tier" / f"{short}.crt", cert + ca.cert_pem, 0o644)

    # ssh -------------------------------------------------------------------------------------------------------------
    def ensure_ssh(self) -> None:
        sdir = self.dir / "ssh"
        key = sdir / "id_ed25519"
        if key.exists():
            return
        sdir.mkdir(parents=True, exist_ok=True)
        os.chmod(sdir, 0o700)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.name} lab key", "-f", str(key)], check=True
        )
        shutil.copy(sdir / "id_ed25519.pub", sdir / "authorized_keys")
        os.chmod(sdir / "authorized_keys", 0o644)

    def ssh_common_args(self) -> str:
        return (
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
            f"-o ControlMaster=auto -o ControlPersist=300s -o ControlPath={self.dir}/cp-%C"
        )

    # containers ------------------------------------------------------------------------------------------------------
    def labels(self, role: str) -> list[str]:
        """podman arguments labelling a container of this lab: lab name, role, and the checkout that made it."""
        labels = [f"{LABEL}={self.name}", f"{LABEL}.role={role}", f"{CHECKOUT_LABEL}={ROOT}"]
        return [arg for label in labels for arg in ("--label", label)]

    def foreign_checkouts(self) -> dict[str, list[str]]:
        """This lab's containers that another checkout made: {checkout: [containers]} (empty: none, or all ours)."""
        names = self.containers()
        if not names:
            return {}
        res = podman("container", "inspect", *names, check=False)
        try:
            inspected = json.loads(res.stdout or "[]")
        except json.JSONDecodeError:
            return {}
        return foreign_checkouts(inspected, self.name, ROOT)

    def refuse_foreign(self) -> None:
        found = self.foreign_checkouts()
        if found:
            raise LabError(foreign_lab_message(self.name, found))

    def state(self, container: str) -> str | None:
        res = podman("container", "inspect", "--format", "{{.State.Status}}", container, check=False)
        return res.stdout.strip() if res.returncode == 0 else None

    def check_release(self, short: str, release: str) -> None:
        """An existing container must be of the release asked for (containers made before releases existed: 12)."""
        made = self.release_of(self.container(short))
        if made != release:
            raise LabError(
                f"{self.container(short)} runs Debian {made}, not {release} as asked: take lab {self.name} down first "
                f"(labctl.py down --name {self.name})"
            )

    def _server_conf(self, short: str, kind: str) -> str:
        if kind == "ntpsec":
            return "\n".join(
                [
                    "# NTPsec NTS server of the chrony-nts lab: serves its own clock in orphan mode, never steers it",
                    "tos orphan 5 orphanwait 1",
                    "disable kernel",
                    "driftfile /var/lib/ntpsec/ntp.drift",
                    "nts key /etc/lab/server.key",
                    "nts cert /etc/lab/server.crt",
                    "nts enable",
                    "restrict default kod limited nomodify noquery",
                    "",
                ]
            )
        return "\n".join(
            [
                f"# chrony NTS server {short} of the chrony-nts lab (run with -x: it never steers a clock)",
                "local stratum 1",
                "allow all",
                "ntsserverkey /etc/lab/server.key",
                "ntsservercert /etc/lab/server.crt",
                "ntsdumpdir /var/lib/chrony",
                "driftfile /var/lib/chrony/chrony.drift",
                "bindcmdaddress /run/chrony/chronyd.sock",
                "cmdport 0",
                "",
            ]
        )

    def ensure_server(self, short: str, image: str, subnet: ipaddress.IPv4Network) -> None:
        kind, octet, _, release = self.servers[short]
        name = self.container(short)
        st = self.state(name)
        if st is not None:
            self.check_release(short, release)
        if st == "running":
            return
        if st is not None:
            podman("start", name)
            return
        sdir = self.dir / "servers" / short
        (sdir / "server.conf").write_text(self._server_conf(short, kind))
        if kind == "ntpsec":
            start = (
                "install -d -m 0755 /var/lib/ntpsec /var/log/ntpsec && "
                "exec /opt/ntpsec/usr/sbin/ntpd -n -c /etc/lab/server.conf"
            )
        else:
            start = (
                "install -d -o _chrony -g _chrony -m 0750 /run/chrony && rm -f /run/chrony/chronyd.pid && "
                "exec chronyd -x -d -4 -f /etc/lab/server.conf"
            )
        podman(
            "run", "-d", "--name", name, "--hostname", short, *self.labels("server"),
            "--label", f"{LABEL}.release={release}",
            "--network", self.net, *self.fixed_address(subnet, octet),
            "--network-alias", f"{short}.{DOMAIN}", "--network-alias", short,
            "--cap-drop", "SYS_TIME", "--cap-add", "NET_ADMIN",
            "-v", f"{sdir}:/etc/lab:ro",
            image, "sh", "-c", start,
        )  # fmt: skip

    def ensure_host(self, short: str, octet: int, group: str, image: str, subnet: ipaddress.IPv4Network) -> None:
        name = self.container(short)
        release = self.host_release(short)
        st = self.state(name)
        if st is not None:
            self.check_release(short, release)
        if st == "running":
            return
        if st is not None:
            podman("start", name)
            return
        options, command = host_start(image)
        podman(
            "run", "-d", "--name", name, "--hostname", short, *self.labels(group),
            "--label", f"{LABEL}.release={release}",
            "--network", self.net, *self.fixed_address(subnet, octet),
            "--network-alias", f"{short}.{DOMAIN}",
            "--systemd", "always", "--cap-drop", "SYS_TIME", *options,
            "-v", f"{self.dir / 'ssh' / 'authorized_keys'}:/root/.ssh/authorized_keys:ro",
            image, *command,
        )  # fmt: skip

    def wait_clients(self, subnet: ipaddress.IPv4Network) -> None:
        """Wait until every host accepts SSH with the lab key (--ssh-wait, else a wait stretched by the machine's load,
        reviewed every 10 s); if one does not, say why for each."""
        fixed = self.ssh_wait is not None
        start = time.monotonic()
        load = machine_load()
        budget = float(self.ssh_wait) if fixed else ssh_wait_budget(*load)
        review = start + 10
        pending = {self.address(subnet, octet): short for short, octet, _group in self.hosts()}
        last_error: dict[str, str] = {}
        key = self.dir / "ssh" / "id_ed25519"
        while pending:
            # sshd on a busy machine can take seconds to send its banner: allow more per attempt when the wait is long
            connect_timeout = max(2, min(10, round(budget / 30)))
            for ip in list(pending):
                try:
                    res = subprocess.run(
                        ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
                         *self.ssh_common_args().split(), f"root@{ip}", "true"],
                        capture_output=True, text=True, check=False, timeout=30,
                    )  # fmt: skip
                except subprocess.TimeoutExpired:
                    last_error[pending[ip]] = "no answer within 30 s"
                    continue
                if res.returncode == 0:
                    del pending[ip]
                else:
                    err = [ln for ln in res.stderr.splitlines() if ln.strip()]
                    last_error[pending[ip]] = err[-1].strip() if err else f"ssh rc {res.returncode}"
            now = time.monotonic()
            if pending and not fixed and now >= review:
                load = machine_load()
                budget = max(budget, ssh_wait_budget(*load))
                review = now + 10
            if not pending or now - start >= budget:
                break
            time.sleep(0.5)
        if pending:
            diagnoses = {short: self.diagnose(short, last_error.get(short, "")) for short in pending.values()}
            raise LabError(wait_failure_message(time.monotonic() - start, fixed, machine_load(), diagnoses))

    def diagnose(self, short: str, ssh_error: str) -> list[str]:
        """Read why a host is not ready (see diagnose_host) with podman exec; nothing here changes the host."""
        name = self.container(short)
        state = self.state(name)

        def run(*cmd: str) -> tuple[int, str, str] | None:
            if state != "running":
                return None
            try:
                res = podman("exec", name, *cmd, check=False, timeout=30)
            except subprocess.TimeoutExpired:
                return (124, "", "podman exec took longer than 30 s")
            return (res.returncode, res.stdout, res.stderr)

        return diagnose_host(
            short,
            name,
            state,
            run("systemctl", "is-system-running"),
            run("systemctl", "is-active", "ssh.service"),
            run("systemctl", "list-jobs", "--no-legend", "--plain"),
            run("journalctl", "-n", "12", "--no-pager", "-q"),
            ssh_error,
        )

    def wait_servers(self, only: list[str] | None = None, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for short, (kind, _octet, _, _release) in self.servers.items():
            if only is not None and short not in only:
                continue
            probe = "ss -Hltn 'sport = :4460' | grep -q LISTEN"
            while True:
                res = podman("exec", self.container(short), "sh", "-c", probe, check=False)
                if res.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    logs = podman("logs", "--tail", "20", self.container(short), check=False)
                    raise LabError(f"NTS server {short} ({kind}) is not listening on 4460: {logs.stderr.strip()}")
                time.sleep(0.2)

    # inventory -------------------------------------------------------------------------------------------------------
    def write_inventory(self, subnet: ipaddress.IPv4Network) -> None:
        servers = {
            short: {
                "name": f"{short}.{DOMAIN}",
                "address": self.address(subnet, octet) if subnet else self.current_address(short),
                "kind": kind,
                "cert": cert,
                "release": release,
            }
            for short, (kind, octet, cert, release) in self.servers.items()
        }
        inv = {
            "all": {
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(self.dir / "ssh" / "id_ed25519"),
                    "ansible_ssh_common_args": self.ssh_common_args(),
                    "lab_name": self.name,
                    "lab_dir": str(self.dir),
                    "lab_domain": DOMAIN,
                    "lab_ca_file": str(self.dir / "pki" / "ca.pem"),
                    "lab_rogue_ca_file": str(self.dir / "pki" / "rogue-ca.pem"),
                    "lab_servers": servers,
                },
                "children": {"chrony_nts_clients": {"hosts": {}}, "chrony_nts_servers": {"hosts": {}}},
            }
        }
        for short, octet, group in self.hosts():
            host = {
                "ansible_host": self.address(subnet, octet),
                "lab_container": self.container(short),
                "lab_release": self.host_release(short),
            }
            if group == "chrony_nts_servers":
                host["lab_tier_name"] = f"{short}.{DOMAIN}"
                host["lab_tier_key_file"] = str(self.dir / "tier" / f"{short}.key")
                host["lab_tier_cert_file"] = str(self.dir / "tier" / f"{short}.crt")
            inv["all"]["children"][group]["hosts"][short] = host
        self.inventory.parent.mkdir(parents=True, exist_ok=True)
        group_vars = self.inventory.parent / "group_vars"
        if not group_vars.exists():
            group_vars.symlink_to(ROOT / "inventories" / "lab" / "group_vars")
        header = f"# Written by lab/labctl.py up for the lab {self.name!r}: do not edit, it is rewritten.\n"
        # JSON is YAML: no dependency on PyYAML here.
        self.inventory.write_text(header + json.dumps(inv, indent=2) + "\n")
        lines = []
        for short, octet, _group in self.hosts():
            lines += [
                f"Host {short}",
                f"  HostName {self.address(subnet, octet)}",
                "  User root",
                f"  IdentityFile {self.dir / 'ssh' / 'id_ed25519'}",
                *[f"  {o.split('=', 1)[0]} {o.split('=', 1)[1]}" for o in self.ssh_common_args().split() if "=" in o],
                "",
            ]
        (self.dir / "ssh_config").write_text("\n".join(lines))

    # verbs -----------------------------------------------------------------------------------------------------------
    def up(self) -> None:
        if self.attach and (self.clients or self.tier):
            raise LabError("--attach starts NTS servers only: use it with --clients 0 (the network's owner adds hosts)")
        preflight()
        self.refuse_foreign()
        needed = dict.fromkeys(
            [*self.server_releases, *(self.host_release(short) for short, _octet, _group in self.hosts())]
        )
        images = {release: ensure_images(release) for release in needed}  # release -> (host image, server image)
        gids = {release: chrony_gid(images[release][1]) for release in self.server_releases}
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        subnet = self.ensure_network()
        self.ensure_pki(subnet, gids)
        self.ensure_ssh()
        for short, (_kind, _octet, _cert, release) in self.servers.items():
            self.ensure_server(short, images[release][1], subnet)
        for short, octet, group in self.hosts():
            self.ensure_host(short, octet, group, images[self.host_release(short)][0], subnet)
        (self.dir / "releases.json").write_text(
            json.dumps({"clients": self.releases, "servers": self.server_releases}) + "\n"
        )
        self.write_inventory(subnet)
        self.wait_servers()
        self.wait_clients(subnet)
        print(
            f"lab {self.name}: up on {self.net} ({subnet or 'dynamic addresses'}) with {len(self.servers)} NTS servers"
            f" (Debian {', '.join(self.server_releases)}), {self.clients} clients"
            f" (Debian {', '.join(self.releases[: max(self.clients, 1)])})"
            f" and {self.tier} tier hosts"
        )
        shown = self.inventory.relative_to(ROOT) if self.inventory.is_relative_to(ROOT) else self.inventory
        print(f"lab {self.name}: inventory {shown}")

    def release_of(self, container: str) -> str:
        fmt = '{{index .Config.Labels "' + f"{LABEL}.release" + '"}}'
        res = podman("container", "inspect", "--format", fmt, container, check=False)
        return (res.stdout.strip() if res.returncode == 0 else "").replace("<no value>", "") or DEFAULT_RELEASE

    def containers(self) -> list[str]:
        res = podman("ps", "-a", "--filter", f"label={LABEL}={self.name}", "--format", "{{.Names}}", check=False)
        return [n for n in res.stdout.split() if n]

    def down(self, force: bool = False) -> None:
        if not force:
            found = self.foreign_checkouts()
            if found:
                raise LabError(foreign_lab_message(self.name, found) + " (nothing was removed)")
        for sock in self.dir.glob("cp-*"):
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab"], capture_output=True, check=False)
        names = self.containers()
        if names:
            podman("rm", "-f", "-t", "0", *names)
        if not self.attach and podman("network", "exists", self.net, check=False).returncode == 0:
            podman("network", "rm", "-f", self.net)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        with contextlib.suppress(FileNotFoundError):
            self.inventory.unlink()
        print(f"lab {self.name}: down ({len(names)} containers removed)")

    def status(self, as_json: bool) -> int:
        subnet = self.subnet()
        rows = [{"container": n, "state": self.state(n), "release": self.release_of(n)} for n in self.containers()]
        foreign = self.foreign_checkouts()
        if as_json:
            print(
                json.dumps(
                    {
                        "name": self.name,
                        "subnet": str(subnet) if subnet else None,
                        "containers": rows,
                        "other_checkouts": foreign,
                    }
                )
            )
        else:
            print(f"lab {self.name}: network {self.net} {subnet or '(absent)'}")
            for owner, names in sorted(foreign.items()):
                print(f"  made by another checkout, {owner}: {', '.join(sorted(names))}")
            for row in rows:
                print(f"  {row['container']:<40} {row['state']:<10} Debian {row['release']}")
        return 0 if subnet else 1

    def fault(self, action: str, server: str, proto: str) -> None:
        if server not in self.servers:
            raise LabError(f"unknown lab server {server!r}; known: {', '.join(self.servers)}")
        name = self.container(server)
        if action == "stop":
            podman("stop", "-t", "2", name)
        elif action == "start":
            podman("start", name)
            self.wait_servers(only=[server])
        elif action == "block":
            rules = {"ke": ["tcp dport 4460"], "ntp": ["udp dport 123"], "all": ["tcp dport 4460", "udp dport 123"]}
            script = "nft add table inet labfault; "
            script += "nft 'add chain inet labfault in { type filter hook input priority 0; }'"
            for rule in rules[proto]:
                script += f"; nft add rule inet labfault in {rule} drop"
            podman("exec", name, "sh", "-c", script)
        elif action == "unblock":
            podman("exec", name, "sh", "-c", "nft delete table inet labfault 2>/dev/null || true")
        print(f"lab {self.name}: {action} {server} {proto if action == 'block' else ''}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("verb", choices=["up", "down", "status", "fault", "image", "inventory"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--name", default=DEFAULT_NAME)
    parser.add_argument("--clients", type=int, default=int(os.environ.get("LAB_CLIENTS", "4")))
    parser.add_argument("--tier", type=int, default=int(os.environ.get("LAB_TIER", "0")))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--attach", metavar="NETWORK", help="join this existing podman network (dynamic addresses)")
    parser.add_argument(
        "--ssh-wait",
        metavar="SECONDS",
        type=float,
        default=os.environ.get("LAB_SSH_WAIT") or None,  # a string default goes through `type` too
        help="up: how long to wait for the hosts to accept SSH (default $LAB_SSH_WAIT, else 90 s stretched by the "
        "machine's load, at most 900 s)",
    )
    parser.add_argument("--force", action="store_true", help="down: remove the lab even if another checkout made it")
    parser.add_argument(
        "--release",
        metavar="R[,R...]",
        default=os.environ.get("LAB_RELEASE") or None,
        help="up: Debian release of the client (and tier) hosts: 12 (default), 13, testing (or bookworm, trixie, "
        "forky); several: clientN takes them in turn. image: the releases to build (`all`: every one)",
    )
    parser.add_argument(
        "--server-release",
        metavar="R[,R...]",
        default=os.environ.get("LAB_SERVER_RELEASE") or None,
        help="up: Debian release of the NTS servers (default 12); each further release adds nts-R and ntpsec-R",
    )
    opts = parser.parse_intermixed_args(argv)
    try:
        releases, server_releases = parse_releases(opts.release), parse_releases(opts.server_release)
        lab = Lab(opts.name, opts.clients, opts.tier, opts.attach, opts.ssh_wait, releases, server_releases)
        if opts.verb == "up":
            lab.up()
        elif opts.verb == "down":
            lab.down(force=opts.force)
        elif opts.verb == "inventory":
            shown = lab.inventory.relative_to(ROOT) if lab.inventory.is_relative_to(ROOT) else lab.inventory
            print(shown)
        elif opts.verb == "status":
            return lab.status(opts.json)
        elif opts.verb == "image":
            preflight()
            for release in releases or [DEFAULT_RELEASE]:
                print("\n".join(ensure_images(release)))
        elif opts.verb == "fault":
            if len(opts.args) < 2 or opts.args[0] not in ("stop", "start", "block", "unblock"):
                raise LabError("usage: labctl.py fault stop|start|block|unblock SERVER [ke|ntp|all]")
            proto = opts.args[2] if len(opts.args) > 2 else "all"
            if proto not in ("ke", "ntp", "all"):
                raise LabError(f"fault protocol {proto!r} must be ke, ntp or all")
            lab.fault(opts.args[0], opts.args[1], proto)
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
