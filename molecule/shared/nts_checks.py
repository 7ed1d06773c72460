"""Checks of a host's NTS state read straight from chronyc and the files, independent of the project's modules."""

from __future__ import annotations


def chronyc(host, *args: str) -> list[list[str]]:
    out = host.check_output("chronyc -c -N " + " ".join(args))
    return [line.split(",") for line in out.splitlines() if line.strip()]


def assert_nts_healthy(host, min_sources: int = 1) -> None:
    auth = {row[0]: row for row in chronyc(host, "authdata")}
    assert auth, "chronyd has no sources"
    healthy = [
        name
        for name, row in auth.items()
        # name,mode,keyid,type,klen,last,attempts,nak,cookies,cookie_len
        if row[1] == "NTS" and int(row[2]) > 0 and row[3] == "15" and int(row[7]) == 0 and int(row[8]) > 0
    ]
    assert len(healthy) >= min_sources, auth
    sources = {row[2]: row for row in chronyc(host, "sources")}
    assert any(row[1] == "*" and name in healthy for name, row in sources.items()), sources
    for name in healthy:
        assert int(sources[name][5], 8) != 0, f"{name} is unreachable"
        ntpdata = host.check_output(f"chronyc ntpdata {name}")
        assert "Authenticated   : Yes" in ntpdata, ntpdata
    tracking = chronyc(host, "tracking")[0]
    assert tracking[13] != "Not synchronised", tracking
