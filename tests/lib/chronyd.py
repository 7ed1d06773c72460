"""Run real chronyd processes on loopback for tests, never touching the machine's clock.

Safety rules enforced here (root on the test machine has CAP_SYS_TIME):

* every chronyd command line contains ``-x`` (``build_command`` refuses to return one without it and tests can
  assert it through :attr:`Chronyd.command`);
* each daemon lives in its own temp dir: config ``root:_chrony 0640``, a state dir owned by ``_chrony`` mode 0750
  (command socket, pid file, drift file, ``ntsdumpdir``), so chronyd accepts its Unix command socket after dropping
  privileges to ``_chrony``;
* it listens only on a random unique ``127.x.y.z`` address (never 127.0.0.1) and random free ports; ``cmdport 0``
  closes the UDP command port so nothing clashes with a system chronyd;
* teardown kills the whole process group (chronyd forks NTS-KE helpers) and verifies that no process is left.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .pki import CHRONY_GROUP, ServerCertificate, chrony_gid, make_shared_dir

CHRONY_USER = "_chrony"
CHRONYD = os.environ.get("CHRONYD", "chronyd")
CHRONYC = os.environ.get("CHRONYC", "chronyc")

_used_addresses: set[str] = set()


def chrony_uid() -> int:
    try:
        return pwd.getpwnam(CHRONY_USER).pw_uid
    except KeyError:
        raise RuntimeError(f"user {CHRONY_USER!r} not found: is the chrony package installed?") from None


def _bindable(addr: str, port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((addr, port))
        except OSError:
            return False
    return True


def unique_loopback_address(rng: random.Random | None = None) -> str:
    """A random ``127.a.b.c`` address (a >= 2, so never 127.0.0.1 or 127.1.x.x) not yet handed out by this process."""
    rng = rng or random.SystemRandom()
    for _ in range(1000):
        addr = f"127.{rng.randint(2, 254)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
        if addr not in _used_addresses and _bindable(addr, 0, socket.SOCK_STREAM):
            _used_addresses.add(addr)
            return addr
    raise RuntimeError("could not find a free 127.x.y.z address")


def free_port(addr: str, exclude: Sequence[int] = ()) -> int:
    """A port free on ``addr`` for both TCP and UDP (chronyd's NTP port is UDP, NTS-KE is TCP)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((addr, 0))
            port = s.getsockname()[1]
        if port not in exclude and _bindable(addr, port, socket.SOCK_DGRAM) and port >= 1024:
            return port
    raise RuntimeError(f"no free TCP+UDP port on {addr}")


def build_command(conf_path: Path, extra_args: Sequence[str] = (), chronyd: str = CHRONYD) -> list[str]:
    """chronyd command line: ``chronyd -x -d -4 -f CONF``. Refuses to return a command line without ``-x``."""
    conf_path = Path(conf_path)
    if not conf_path.is_absolute():
        raise ValueError(f"chronyd config path must be absolute, got {str(conf_path)!r}")
    for arg in extra_args:
        if arg in ("-s", "-r", "-R") or arg.startswith("-P"):
            raise ValueError(f"chronyd option {arg!r} is not allowed in tests")
    cmd = [chronyd, "-x", "-d", "-4", "-f", str(conf_path), *extra_args]
    if "-x" not in cmd:  # explicit check, not an assert: must survive python -O
        raise RuntimeError(f"refusing to run chronyd without -x (would steer the system clock): {cmd}")
    return cmd


@dataclass
class Chronyd:
    """One chronyd process with its own directory, config, socket and log.

    ``conf_lines`` are the role-specific directives; the runner adds ``bindcmdaddress``, ``cmdport 0``, ``pidfile``,
    ``driftfile`` and (if ``nts_dump``) ``ntsdumpdir`` pointing into its state directory.
    """

    name: str
    conf_lines: list[str]
    base_dir: Path = field(default_factory=lambda: make_shared_dir(prefix="chronyd-test-"))
    nts_dump: bool = True
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    starts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir)
        self.state_dir = self.base_dir / "state"
        self.state_dir.mkdir(mode=0o750, exist_ok=True)
        os.chown(self.state_dir, chrony_uid(), chrony_gid())
        os.chmod(self.state_dir, 0o750)  # noqa: S103 - chronyd (group _chrony) needs x on its socket dir
        self.socket_path = self.state_dir / "chronyd.sock"
        self.dump_dir = self.state_dir / "nts"
        if self.nts_dump:
            self.dump_dir.mkdir(mode=0o700, exist_ok=True)
            os.chown(self.dump_dir, chrony_uid(), chrony_gid())
        self.conf_path = self.base_dir / f"{self.name}.conf"
        self.log_path = self.base_dir / f"{self.name}.log"
        self.write_config()

    # -- configuration -------------------------------------------------------------------------------------------
    def config_text(self) -> str:
        lines = [
            f"# {self.name}: generated by tests/lib/chronyd.py",
            f"bindcmdaddress {self.socket_path}",
            "cmdport 0",
            f"pidfile {self.state_dir / 'chronyd.pid'}",
            f"driftfile {self.state_dir / 'drift'}",
        ]
        if self.nts_dump:
            lines.append(f"ntsdumpdir {self.dump_dir}")
        lines.extend(self.conf_lines)
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        fd = os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, self.config_text().encode())
            os.fchown(fd, 0, chrony_gid())
            os.fchmod(fd, 0o640)
        finally:
            os.close(fd)

    @property
    def command(self) -> list[str]:
        return build_command(self.conf_path, self.extra_args)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> Chronyd:
        if self.running:
            raise RuntimeError(f"{self.name}: already running (pid {self.process.pid})")
        cmd = self.command
        if "-x" not in cmd:
            raise RuntimeError(f"refusing to run chronyd without -x: {cmd}")
        self.write_config()
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts + 1}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until chronyc answers over the command socket; fail with the log if chronyd died or hung."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.name}: chronyd exited with rc {self.process.returncode}:\n{self.log()}")
            if self.socket_path.exists():
                last = self.chronyc("-c", "tracking", timeout=2)
                if last.returncode == 0:
                    return
            time.sleep(0.02)
        detail = f"last chronyc: rc={last.returncode} {last.stdout}{last.stderr}" if last else "socket never appeared"
        raise TimeoutError(f"{self.name}: not ready after {timeout}s ({detail}):\n{self.log()}")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the process group, escalate to SIGKILL, and verify that no process of the group remains."""
        if self.process is None:
            return
        pgid = self.process.pid
        if self.process.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                self.process.wait(timeout)
        deadline = time.monotonic() + timeout
        while _group_members(pgid):
            if time.monotonic() > deadline:
                _signal_group(pgid, signal.SIGKILL)
                time.sleep(0.1)
                left = _group_members(pgid)
                if left:
                    raise RuntimeError(f"{self.name}: processes {left} of group {pgid} survived SIGKILL")
                break
            time.sleep(0.02)
        if Path(f"/proc/{pgid}").exists() and _group_members(pgid):
            raise RuntimeError(f"{self.name}: chronyd pid {pgid} still exists after stop")

    def restart(self, keep_cookies: bool = True, timeout: float = 10.0) -> Chronyd:
        self.stop()
        if not keep_cookies:
            self.remove_cookies()
        return self.start(timeout)

    def remove_cookies(self) -> list[Path]:
        """Delete saved NTS cookies (``*.nts``) so the next start does a fresh key exchange."""
        removed = sorted(self.dump_dir.glob("*.nts")) if self.nts_dump else []
        for p in removed:
            p.unlink()
        return removed

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- inspection ------------------------------------------------------------------------------------------------
    def chronyc(self, *args: str, timeout: float = 5.0, check: bool = False) -> subprocess.CompletedProcess:
        """Run ``chronyc -h <this daemon's socket> ARGS`` and return the completed process (text mode)."""
        cmd = [CHRONYC, "-h", str(self.socket_path), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed rc={res.returncode}: {res.stdout}{res.stderr}")
        return res

    def csv(self, report: str, *args: str) -> list[list[str]]:
        """``chronyc -c -N REPORT`` split into fields."""
        out = self.chronyc("-c", "-N", report, *args, check=True).stdout
        return [line.split(",") for line in out.splitlines() if line]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
        """Poll ``predicate(self)`` until it returns a truthy value (returned) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {what} not reached within {timeout}s:\n{self.log()[-3000:]}")
            time.sleep(interval)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_members(pgid: int) -> list[int]:
    """PIDs (not zombies) whose process group is ``pgid``, read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(entry))
    return members


@dataclass
class NtsServer(Chronyd):
    """chronyd acting as NTS server on a unique loopback address."""

    cert: ServerCertificate | None = None
    address: str = ""
    port: int = 0
    ntsport: int = 0
    stratum: int = 1
    ntsntpserver: str | None = None
    ntsrotate: int | None = None
    extra: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        cert: ServerCertificate,
        address: str | None = None,
        name: str = "server",
        stratum: int = 1,
        ntsntpserver: str | None = None,
        ntsrotate: int | None = None,
        extra: Sequence[str] = (),
        nts_dump: bool = True,
    ) -> NtsServer:
        address = address or unique_loopback_address()
        port = free_port(address)
        ntsport = free_port(address, exclude=(port,))
        return cls(
            name=name,
            conf_lines=[],
            nts_dump=nts_dump,
            cert=cert,
            address=address,
            port=port,
            ntsport=ntsport,
            stratum=stratum,
            ntsntpserver=ntsntpserver,
            ntsrotate=ntsrotate,
            extra=tuple(extra),
        )

    def config_text(self) -> str:
        if self.cert is None:
            raise ValueError("NtsServer needs a certificate")
        self.conf_lines = [
            f"bindaddress {self.address}",
            f"port {self.port}",
            f"ntsport {self.ntsport}",
            f"ntsserverkey {self.cert.key_path}",
            f"ntsservercert {self.cert.cert_path}",
            f"local stratum {self.stratum}",
            "allow 127.0.0.0/8",
        ]
        if self.ntsntpserver:
            self.conf_lines.append(f"ntsntpserver {self.ntsntpserver}")
        if self.ntsrotate is not None:
            self.conf_lines.append(f"ntsrotate {self.ntsrotate}")
        self.conf_lines.extend(self.extra)
        return super().config_text()

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        super().wait_ready(timeout)
        while True:
            try:
                with socket.create_connection((self.address, self.ntsport), timeout=0.5):
                    return
            except OSError as exc:
                if time.monotonic() > deadline or not self.running:
                    raise TimeoutError(
                        f"{self.name}: NTS-KE port {self.address}:{self.ntsport} not accepting: {exc}\n{self.log()}"
                    ) from exc
                time.sleep(0.02)


@dataclass
class ServerSpec:
    """One ``server`` line of a client config."""

    name: str
    port: int | None = None
    nts: bool = True
    ntsport: int | None = None
    options: str = "iburst minpoll 0 maxpoll 4"

    @classmethod
    def for_server(cls, server: NtsServer, nts: bool = True, options: str = "iburst minpoll 0 maxpoll 4"):
        return cls(server.address, server.port, nts, server.ntsport if nts else None, options)

    def line(self) -> str:
        parts = ["server", self.name]
        if self.port is not None:
            parts += ["port", str(self.port)]
        if self.nts:
            parts.append("nts")
            if self.ntsport is not None:
                parts += ["ntsport", str(self.ntsport)]
        if self.options:
            parts.append(self.options)
        return " ".join(parts)


@dataclass
class NtsClient(Chronyd):
    """chronyd acting as (NTS) client of loopback servers."""

    servers: list[ServerSpec] = field(default_factory=list)
    trusted_certs: list[Path] = field(default_factory=list)
    extra: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        servers: Sequence[ServerSpec | NtsServer],
        trusted_certs: Sequence[Path | str] = (),
        name: str = "client",
        extra: Sequence[str] = (),
        nts_dump: bool = True,
    ) -> NtsClient:
        specs = [s if isinstance(s, ServerSpec) else ServerSpec.for_server(s) for s in servers]
        return cls(
            name=name,
            conf_lines=[],
            nts_dump=nts_dump,
            servers=specs,
            trusted_certs=[Path(p) for p in trusted_certs],
            extra=tuple(extra),
        )

    def config_text(self) -> str:
        # port 0: the client serves no NTP, so it cannot collide with anything on the machine.
        self.conf_lines = ["port 0"]
        self.conf_lines += [f"ntstrustedcerts {p}" for p in self.trusted_certs]
        self.conf_lines += [s.line() for s in self.servers]
        self.conf_lines.extend(self.extra)
        return super().config_text()


__all__ = [
    "CHRONYC",
    "CHRONYD",
    "CHRONY_GROUP",
    "Chronyd",
    "NtsClient",
    "NtsServer",
    "ServerSpec",
    "build_command",
    "free_port",
    "unique_loopback_address",
]
