"""Checks of a host's NTS state read straight from chronyc, independent of the project's own modules and parsers.

`run` is any callable that runs a shell command as root on the host and returns its stdout (testinfra's
``host.check_output``, ``podman exec``, ...).
"""

from __future__ import annotations

from typing import Callable

Run = Callable[[str], str]


def chronyc(run: Run, report: str) -> list[list[str]]:
    return [line.split(",") for line in run(f"chronyc -c -N {report}").splitlines() if line.strip()]


def authenticated(run: Run) -> dict[str, bool]:
    """{configured name: whether its last reply was authenticated}. `ntpdata` without an argument walks the same
    source table as authdata, in the same order (both skip reference clocks), so rows pair by position; asking
    `ntpdata NAME` instead would make chronyc look the name up on the host, and the lab's DNS can miss while
    containers join its network. Field 28 of `ntpdata -c` is the authenticated flag."""
    names = [row[0] for row in chronyc(run, "authdata")]
    rows = chronyc(run, "ntpdata")
    if len(rows) != len(names):
        return {}
    return {name: row[27] == "Yes" for name, row in zip(names, rows)}


def nts_state(run: Run) -> dict:
    """authdata, sources, per-source 'Authenticated' and tracking, keyed by configured source name."""
    auth = {row[0]: row for row in chronyc(run, "authdata")}
    sources = {row[2]: row for row in chronyc(run, "sources")}
    authenticated_now = authenticated(run)
    authenticated_now = {name: authenticated_now.get(name, False) for name in sources}
    tracking = chronyc(run, "tracking")
    return {"authdata": auth, "sources": sources, "authenticated": authenticated_now, "tracking": tracking[0]}


def healthy_sources(state: dict) -> list[str]:
    """NTS mode, a key exchange done, AEAD 15 or 30 (AES-128-GCM-SIV, chrony >= 4.4), no NAK, cookies held,
    reachable and an authenticated sample."""
    healthy = []
    for name, row in state["authdata"].items():
        # name,mode,keyid,type,klen,last,attempts,nak,cookies,cookie_len
        nts_ok = row[1] == "NTS" and int(row[2]) > 0 and row[3] in ("15", "30") and int(row[7]) == 0 and int(row[8]) > 0
        src = state["sources"].get(name)
        if nts_ok and src and int(src[5], 8) != 0 and state["authenticated"].get(name):
            healthy.append(name)
    return healthy


def assert_nts_healthy(run: Run, min_sources: int = 1) -> dict:
    state = nts_state(run)
    healthy = healthy_sources(state)
    assert len(healthy) >= min_sources, state
    selected = [name for name, row in state["sources"].items() if row[1] == "*"]
    assert selected and selected[0] in healthy, state
    assert state["tracking"][13] != "Not synchronised", state["tracking"]
    return state


def wait_nts_healthy(run: Run, min_sources: int = 1, timeout: float = 30.0) -> dict:
    """assert_nts_healthy, retried for up to `timeout` seconds (a restarted chronyd needs a few polls)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return assert_nts_healthy(run, min_sources)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
