"""chrony_host (behind chrony_nts_host and chrony_nts_apply): platform facts, units, packages, journal causes."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

from ansible_collections.nts.chrony.plugins.module_utils import chrony_host as ch  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"

# /etc/os-release as the distributions ship it (the keys the role reads; comments and quoting as found there).
OS_RELEASE = {
    "debian12": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
    'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n',
    "ubuntu2404": 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nID_LIKE=debian\n',
    "ubuntu2204": 'PRETTY_NAME="Ubuntu 22.04.5 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nID_LIKE=debian\n',
    "ubuntu2604": 'PRETTY_NAME="Ubuntu 26.04 LTS"\nNAME="Ubuntu"\nVERSION_ID="26.04"\nVERSION_CODENAME=resolute\n'
    "ID=ubuntu\nID_LIKE=debian\n",
    "debian13": 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\nVERSION_ID="13"\n'
    'VERSION="13 (trixie)"\nVERSION_CODENAME=trixie\nID=debian\n',
    "rhel9": 'NAME="Red Hat Enterprise Linux"\nVERSION="9.4 (Plow)"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.4"\n',
    "rocky9": 'NAME="Rocky Linux"\nVERSION="9.4 (Blue Onyx)"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
    'VERSION_ID="9.4"\n',
    "alma9": 'NAME="AlmaLinux"\nVERSION="9.4 (Seafoam Ocelot)"\nID="almalinux"\nID_LIKE="rhel centos fedora"\n'
    'VERSION_ID="9.4"\n',
    "fedora40": 'NAME="Fedora Linux"\nVERSION="40 (Server Edition)"\nID=fedora\nVERSION_ID=40\n',
    # Debian testing (forky), as debootstrap installs it: no VERSION_ID
    "forky": 'PRETTY_NAME="Debian GNU/Linux forky/sid"\nNAME="Debian GNU/Linux"\nVERSION_CODENAME=forky\nID=debian\n',
    "arch": 'NAME="Arch Linux"\nPRETTY_NAME="Arch Linux"\nID=arch\nBUILD_ID=rolling\n',
    "mint": 'NAME="Linux Mint"\nVERSION="21.3 (Virginia)"\nID=linuxmint\nID_LIKE="ubuntu debian"\nVERSION_ID="21.3"\n',
}


@pytest.mark.parametrize(
    ("name", "debian_version", "expected"),
    [
        ("debian12", "12.7\n", ("Debian", "12.7", "12", "Debian")),
        ("debian12", "trixie/sid\n", ("Debian", "12", "12", "Debian")),  # testing: no point release
        ("ubuntu2204", None, ("Ubuntu", "22.04", "22", "Debian")),
        ("ubuntu2404", None, ("Ubuntu", "24.04", "24", "Debian")),
        ("ubuntu2604", None, ("Ubuntu", "26.04", "26", "Debian")),  # vars/Ubuntu.yml (no Ubuntu_26.yml)
        ("debian13", "13.1\n", ("Debian", "13.1", "13", "Debian")),
        ("rhel9", None, ("RedHat", "9.4", "9", "RedHat")),
        ("rocky9", None, ("Rocky", "9.4", "9", "RedHat")),
        ("alma9", None, ("AlmaLinux", "9.4", "9", "RedHat")),
        ("fedora40", None, ("Fedora", "40", "40", "RedHat")),
        ("mint", None, ("Linux", "21.3", "21", "Debian")),  # unknown ID: family from ID_LIKE
        ("arch", None, ("Arch", "", "", "Arch")),  # unsupported: the role's preflight names it
        ("forky", "forky/sid\n", ("Debian", "forky/sid", "forky/sid", "Debian")),  # testing, as Ansible reports it
    ],
)
def test_os_facts_match_what_setup_reports(name, debian_version, expected):
    facts = ch.os_facts(OS_RELEASE[name], debian_version)
    keys = ("distribution", "distribution_version", "distribution_major_version", "os_family")
    assert tuple(facts[k] for k in keys) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("1\n", True), ("0\n", False), ("1", True), (None, None), ("", None), ("2\n", None)]
)
def test_fips_enabled_reads_the_kernel_switch(text, expected):
    assert ch.fips_enabled(text) is expected
    assert ch.FIPS_ENABLED == "/proc/sys/crypto/fips_enabled"


def test_fips_enabled_of_this_machine():
    path = Path(ch.FIPS_ENABLED)
    assert ch.fips_enabled(path.read_text() if path.exists() else None) in ((True, False) if path.exists() else (None,))


def test_os_facts_of_this_machine_agree_with_its_files():
    facts = ch.os_facts(Path("/etc/os-release").read_text(), Path("/etc/debian_version").read_text())
    assert facts["os_family"] == "Debian" and facts["distribution"] == "Debian"
    assert facts["distribution_major_version"] == Path("/etc/debian_version").read_text().split(".")[0].strip()


# `systemctl show --property=Id,LoadState,ActiveState,UnitFileState -- ...` on a Debian 12 lab host with ntp
# installed and running, ntpsec absent and timesyncd masked.
SHOW = (
    "Id=systemd-timesyncd.service\nLoadState=masked\nActiveState=inactive\nUnitFileState=masked\n\n"
    "Id=ntp.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n\n"
    "Id=ntpsec.service\nLoadState=not-found\nActiveState=inactive\nUnitFileState=\n\n"
    "Id=openntpd.service\nLoadState=loaded\nActiveState=inactive\nUnitFileState=enabled\n"
)


def test_units_to_stop_are_loaded_and_running_or_enabled():
    units = ch.parse_systemctl_show(SHOW)
    ids = ["systemd-timesyncd.service", "ntp.service", "ntpsec.service", "openntpd.service"]
    assert [u["Id"] for u in units] == ids
    assert ch.units_to_stop(units) == ["ntp.service", "openntpd.service"]
    assert ch.units_to_stop(ch.parse_systemctl_show("")) == []


def test_missing_packages_from_dpkg_and_rpm():
    # dpkg-query -W -f '${Package} ${db:Status-Abbrev}\n' chrony ntp libfoo (ntp removed, libfoo unknown: no line)
    dpkg = "chrony ii \nntp rc \n"
    assert ch.missing_dpkg_packages(["chrony", "ntp", "libfoo"], dpkg) == ["ntp", "libfoo"]
    assert ch.missing_dpkg_packages(["chrony"], "chrony:amd64 ii \n") == []
    # rpm -q --qf '%{NAME}\n' chrony gnutls
    rpm = "chrony\npackage gnutls is not installed\n"
    assert ch.missing_rpm_packages(["chrony", "gnutls"], rpm) == ["gnutls"]


def test_journal_causes_come_from_the_latest_chronyd_start():
    # Captured on a lab client: chronyd started on a configuration naming a server whose certificate the host does
    # not trust, then was stopped and started on the restored configuration.
    lines = (FIXTURES / "journal" / "chrony-badca-then-rollback.txt").read_text().splitlines()
    exiting = max(i for i, line in enumerate(lines) if line == "chronyd exiting")  # the stop for the rollback
    causes = ch.journal_causes(lines[:exiting], ["nts-badca.lab.test", "nts1.lab.test"])
    assert list(causes) == ["nts-badca.lab.test"]
    assert "The certificate issuer is unknown" in causes["nts-badca.lab.test"]
    # after the restart on the old configuration the failure is history: nothing is blamed on it
    assert ch.journal_causes(lines, ["nts-badca.lab.test"]) == {}
    # "Selected source ... (nts1.lab.test)" names the source but explains no failure
    assert ch.journal_causes(lines, ["nts1.lab.test"]) == {}


def test_cause_kinds_tell_certificate_refused_timeout_and_dns_apart():
    lines = (FIXTURES / "journal" / "chrony-badca-then-rollback.txt").read_text().splitlines()
    badca = next(line for line in lines if "TLS handshake" in line)
    assert ch.cause_kind(badca) == "certificate not trusted: wrong or missing CA"
    # chronyd 4.3 and GnuTLS 3.7 wording (the refused and certificate-time lines were seen on loopback)
    samples = {
        "TLS handshake with 127.0.0.3:24460 (127.0.0.3) failed : Error in the certificate verification. The "
        "certificate chain uses expired certificate.": "certificate expired",
        "TLS handshake with 127.0.0.3:24460 (127.0.0.3) failed : Error in the certificate verification. The "
        "certificate chain uses not yet valid certificate.": "certificate not yet valid (is the host's clock behind?)",
        "TLS handshake with 10.89.0.5:4460 (nts.other.test) failed : Error in the certificate verification. The "
        "name in the certificate does not match the expected.": "certificate name does not match the server name",
        "Could not connect to 127.0.0.3:24999 (127.0.0.3) : Connection refused": (
            "NTS-KE refused: nothing listens on the NTS-KE port"
        ),
        "Could not connect to 10.89.0.5:4460 (nts1.lab.test) : Connection timed out": (
            "NTS-KE timed out (TCP 4460 filtered, or the server is down)"
        ),
        "Selected source 10.89.0.5 (nts1.lab.test)": None,
    }
    for line, kind in samples.items():
        assert ch.cause_kind(line) == kind, line
    labelled = ch.explain_causes({"nts-badca.lab.test": badca})
    assert labelled["nts-badca.lab.test"].startswith("certificate not trusted: wrong or missing CA: TLS handshake")
