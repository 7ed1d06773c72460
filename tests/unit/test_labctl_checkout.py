"""Which checkout owns a lab: read from real `podman container inspect` output of lab containers (a client and a
server), one made with the checkout label and one made before it existed (its mounts name the checkout)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("labctl", REPO / "lab" / "labctl.py")
labctl = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(labctl)

FIXTURES = REPO / "tests" / "fixtures" / "labctl"
LABELLED = json.loads((FIXTURES / "inspect_labelled.json").read_text())  # lab emptyt made in /work/main
UNLABELLED = json.loads((FIXTURES / "inspect_unlabelled.json").read_text())  # the same, before the checkout label
MAKER = "/work/main"


def test_the_checkout_comes_from_the_label_or_else_from_the_mounts():
    assert [c["Config"]["Labels"].get(labctl.CHECKOUT_LABEL) for c in LABELLED] == [MAKER, MAKER]
    assert [labctl.checkout_of(c, "emptyt") for c in LABELLED] == [MAKER, MAKER]
    assert [labctl.CHECKOUT_LABEL in c["Config"]["Labels"] for c in UNLABELLED] == [False, False]
    assert [labctl.checkout_of(c, "emptyt") for c in UNLABELLED] == [MAKER, MAKER]
    # mounts of another lab's directory say nothing about this one
    assert [labctl.checkout_of(c, "other-lab") for c in UNLABELLED] == [None, None]


def test_containers_of_another_checkout_are_found():
    second = Path("/srv/second-clone")
    for inspected in (LABELLED, UNLABELLED):
        assert labctl.foreign_checkouts(inspected, "emptyt", second) == {MAKER: ["emptyt-client1", "emptyt-nts1"]}
        assert labctl.foreign_checkouts(inspected, "emptyt", Path(MAKER)) == {}


def test_the_message_names_the_checkout_and_what_to_do(tmp_path):
    other = tmp_path / "first-clone"
    other.mkdir()
    msg = labctl.foreign_lab_message("emptyt", {str(other): ["emptyt-nts1", "emptyt-client1"]})
    assert f"lab emptyt is already up from another checkout, {other} (2 containers, e.g. emptyt-client1)" in msg
    assert "Use another lab name here (make demo LAB_NAME=emptyt-2" in msg
    assert msg.endswith(f"cd {other} && make lab-down LAB_NAME=emptyt")
    # the default lab needs no LAB_NAME
    msg = labctl.foreign_lab_message("chrony-nts-lab", {str(other): ["chrony-nts-lab-nts1"]})
    assert msg.endswith(f"cd {other} && make lab-down")
    # a checkout that was deleted: only a forced down from here can remove its lab
    gone = tmp_path / "deleted-clone"
    msg = labctl.foreign_lab_message("emptyt", {str(gone): ["emptyt-nts1"]})
    assert f"{gone} no longer exists: remove the lab from here with labctl.py down --name emptyt --force" in msg


def test_containers_carry_the_checkout_label():
    args = labctl.Lab("unit-test-lab").labels("chrony_nts_clients")
    assert args == [
        "--label", "io.chrony-nts.lab=unit-test-lab",
        "--label", "io.chrony-nts.lab.role=chrony_nts_clients",
        "--label", f"io.chrony-nts.lab.checkout={REPO}",
    ]  # fmt: skip


def test_the_inventory_path_is_the_one_the_docstring_and_makefile_use(capsys):
    for name, path in (("chrony-nts-lab", "inventories/lab/hosts.yml"), ("x", ".lab/x/inventory/hosts.yml")):
        assert labctl.Lab(name).inventory == REPO / path
        assert labctl.main(["inventory", "--name", name]) == 0
        assert capsys.readouterr().out.strip() == path
    doc = " ".join(labctl.__doc__.split())
    assert "(inventories/lab/hosts.yml for the default lab, else .lab/NAME/inventory/hosts.yml)" in doc
