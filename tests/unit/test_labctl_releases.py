"""labctl's Debian releases: names, image names and tags, which servers and hosts a lab gets, how a host whose systemd
needs cgroup v2 is started, and what a lab remembers (no podman is run: its answers are stubbed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("labctl", REPO / "lab" / "labctl.py")
labctl = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(labctl)


@pytest.fixture
def lab_root(tmp_path, monkeypatch):
    """labctl with its checkout moved to a temporary directory (labs keep their state under ROOT/.lab/NAME)."""
    monkeypatch.setattr(labctl, "ROOT", tmp_path)
    return tmp_path


def test_release_names_aliases_and_all():
    assert labctl.parse_releases(None) is None
    assert labctl.parse_releases("13") == ["13"]
    assert labctl.parse_releases("bookworm, trixie,forky") == ["12", "13", "testing"]
    assert labctl.parse_releases("14,testing,12") == ["testing", "12"]  # forky is Debian 14-to-be: one release
    assert labctl.parse_releases("all") == ["12", "13", "testing"]
    with pytest.raises(labctl.LabError, match=r"unknown Debian release '11': the lab knows 12 \(bookworm\), 13"):
        labctl.parse_releases("12,11")


def test_a_bad_release_is_one_line_and_nothing_runs(monkeypatch, capsys):
    monkeypatch.setattr(labctl.Lab, "up", lambda self: pytest.fail("must not start"))
    assert labctl.main(["up", "--name", "unit-test-lab", "--server-release", "sid"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lab: error: unknown Debian release 'sid'") and len(err.strip().splitlines()) == 1


def test_the_default_release_keeps_its_image_names_and_each_release_has_its_own_tag():
    host, server = labctl.image_refs()
    assert host.startswith("localhost/chrony-nts-lab-host:") and server.startswith("localhost/chrony-nts-lab-server:")
    assert labctl.image_refs("12") == (host, server)
    host13, server13 = labctl.image_refs("13")
    assert host13.startswith("localhost/chrony-nts-lab-host-13:")
    assert server13.startswith("localhost/chrony-nts-lab-server-13:")
    tags = {labctl.recipe_tag(r) for r in labctl.RELEASES}
    assert len(tags) == 3 and all(len(t) == 12 for t in tags)
    assert labctl.recipe_tag("13") == labctl.recipe_tag("13")  # the same recipe, the same tag: no rebuild


def test_a_changed_recipe_changes_every_tag(tmp_path, monkeypatch):
    before = {r: labctl.recipe_tag(r) for r in labctl.RELEASES}
    recipe = tmp_path / "build.sh"
    recipe.write_bytes((REPO / "lab" / "image" / "build.sh").read_bytes() + b"\n# changed\n")
    monkeypatch.setattr(labctl, "IMAGE_RECIPE", [recipe])
    assert all(labctl.recipe_tag(r) != before[r] for r in labctl.RELEASES)


def test_ensure_images_builds_only_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(labctl, "IMAGE_LOCK", tmp_path / "lock")
    existing = set(labctl.image_refs("12"))
    calls, builds = [], []

    class Res:
        def __init__(self, rc=0):
            self.returncode, self.stdout, self.stderr = rc, "", ""

    def fake_podman(*args, **kw):
        calls.append(args)
        if args[:2] == ("image", "exists"):
            return Res(0 if args[2] in existing else 1)
        return Res()

    def fake_run(cmd, **kw):
        builds.append(cmd[2:])
        existing.update(cmd[2:4])
        return Res()

    monkeypatch.setattr(labctl, "podman", fake_podman)
    monkeypatch.setattr(labctl.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(labctl.subprocess, "run", fake_run)
    labctl.ensure_images("12")
    assert builds == []
    labctl.ensure_images("testing")
    assert builds == [[*labctl.image_refs("testing"), "forky"]]
    labctl.ensure_images("testing")
    assert len(builds) == 1
    assert ("tag", labctl.image_refs("testing")[0], "localhost/chrony-nts-lab-host-testing:latest") in calls


def test_servers_of_further_releases_get_their_own_names_and_addresses(lab_root):
    lab = labctl.Lab("unit-rel", clients=3, releases=["12", "13", "testing"], server_releases=["13", "12", "testing"])
    servers = lab.servers
    # the standard set runs the first server release
    assert {servers[s][3] for s in labctl.Lab.SERVERS} == {"13"}
    assert servers["nts-12"] == ("chrony", 200, "good", "12")
    assert servers["ntpsec-12"] == ("ntpsec", 201, "good", "12")
    assert servers["nts-testing"] == ("chrony", 204, "good", "testing")
    assert "nts-13" not in servers
    octets = [spec[1] for spec in servers.values()] + [octet for _s, octet, _g in lab.hosts()]
    assert len(octets) == len(set(octets))
    assert [lab.host_release(s) for s, _o, _g in lab.hosts()] == ["12", "13", "testing"]


def test_clients_take_the_releases_in_turn_and_tier_hosts_the_first(lab_root):
    lab = labctl.Lab("unit-rel", clients=5, tier=2, releases=["13", "testing"])
    assert [lab.host_release(f"client{i}") for i in range(1, 6)] == ["13", "testing", "13", "testing", "13"]
    assert lab.host_release("tier2") == "13"
    assert labctl.Lab("unit-default", clients=2).servers == labctl.Lab.server_table(["12"])


def test_a_lab_remembers_its_releases(lab_root):
    (lab_root / ".lab" / "unit-rel").mkdir(parents=True)
    (lab_root / ".lab" / "unit-rel" / "releases.json").write_text(json.dumps({"clients": ["13"], "servers": ["13"]}))
    lab = labctl.Lab("unit-rel")
    assert (lab.releases, lab.server_releases) == (["13"], ["13"])
    assert "nts1" in lab.servers and "nts-13" not in lab.servers
    assert labctl.Lab("unit-rel", releases=["testing"]).releases == ["testing"]


def test_fault_knows_the_servers_of_further_releases(lab_root, monkeypatch, capsys):
    (lab_root / ".lab" / "unit-rel").mkdir(parents=True)
    (lab_root / ".lab" / "unit-rel" / "releases.json").write_text(
        json.dumps({"clients": ["12"], "servers": ["12", "13"]})
    )
    seen = []
    monkeypatch.setattr(labctl, "podman", lambda *args, **kw: seen.append(args))
    assert labctl.main(["fault", "--name", "unit-rel", "stop", "ntpsec-13"]) == 0
    assert seen == [("stop", "-t", "2", "unit-rel-ntpsec-13")]
    assert labctl.main(["fault", "--name", "unit-rel", "stop", "ntpsec-testing"]) == 2
    assert "unknown lab server 'ntpsec-testing'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("labels", "cgroups", "expected"),
    [
        ({}, "v1", ([], ["/sbin/init"])),
        ({"io.chrony-nts.init": "/usr/local/sbin/lab-init"}, "v2", ([], ["/sbin/init"])),
        (
            {"io.chrony-nts.init": "/usr/local/sbin/lab-init"},
            "v1",
            (["--cgroupns", "private", "--cap-add", "SYS_ADMIN"], ["/usr/local/sbin/lab-init"]),
        ),
    ],
    ids=["systemd-252-on-v1", "systemd-262-on-v2", "systemd-262-on-v1"],
)
def test_a_host_needing_cgroup_v2_gets_it_only_on_a_cgroup_v1_machine(monkeypatch, labels, cgroups, expected):
    monkeypatch.setattr(labctl, "image_labels", lambda ref: labels)
    monkeypatch.setattr(labctl, "machine_cgroups", lambda: cgroups)
    assert labctl.host_start("localhost/x:1") == expected


def test_the_lab_init_drops_cap_sys_admin_before_systemd():
    recipe = (REPO / "lab" / "image" / "build.sh").read_text()
    init = recipe.split("<<'INIT'\n", 1)[1].split("\nINIT\n", 1)[0]
    assert "mount -t cgroup2 cgroup2 /sys/fs/cgroup" in init
    assert init.rstrip().splitlines()[-1] == "exec capsh --drop=cap_sys_admin -- -c 'exec /sbin/init'"
    assert "SYS_TIME" not in init.upper().replace("CAP_SYS_ADMIN", "")


def test_an_existing_container_of_another_release_is_refused(lab_root, monkeypatch):
    class Res:
        returncode, stderr = 0, ""

        def __init__(self, out):
            self.stdout = out

    monkeypatch.setattr(labctl, "podman", lambda *args, **kw: Res("12\n"))
    lab = labctl.Lab("unit-rel", releases=["13"])
    with pytest.raises(labctl.LabError, match=r"unit-rel-client1 runs Debian 12, not 13 as asked: take lab unit-rel"):
        lab.check_release("client1", "13")
    lab.check_release("client1", "12")
    monkeypatch.setattr(labctl, "podman", lambda *args, **kw: Res("<no value>\n"))  # made before releases existed
    assert lab.release_of("unit-rel-client1") == "12"


def test_server_keys_belong_to_the_chrony_group_of_their_release(monkeypatch):
    monkeypatch.setattr(labctl, "image_labels", lambda ref: {"io.chrony-nts.chrony-gid": "994"})
    assert labctl.chrony_gid("localhost/chrony-nts-lab-server-testing:x") == 994
