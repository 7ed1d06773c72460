"""Render the chrony_nts role's files for Debian, Ubuntu and RHEL hosts and check them with the real chronyd.

Runs ansible-playbook on localhost (connection: local) with the role's own tasks files for the steps that only read or
compute (set_vars.yml, whose chrony_nts_host call only reads this machine; preflight.yml; render.yml), then writes what
render.yml produced, exactly what chrony_nts_apply would receive, into a temp dir. Nothing is written outside the temp
dir, no service is touched, and ``chronyd -p`` only parses (it never starts a daemon or steers the clock).
The platform is simulated by setting the facts the role reads (os_family, distribution, ...); what chrony_nts_host
reads about the host (FIPS mode, chronyd's version) can be overridden the same way (``fake_host``).

This machine's chronyd is 4.3 (Debian 12): it validates every directive and daemon flag the role writes for any
platform, except options newer than 4.3 (a site server's per-source ``ipv4``/``ipv6``, chrony 4.6), which are checked
by the role's input check against the host's own chronyd version and, on the host, by its own ``chronyd -p``. No
Ubuntu, Debian 13 or RHEL host runs here: those renders are checked against the layout the vars files describe.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
ROLE = REPO / "roles" / "chrony_nts"
CHRONYD = shutil.which("chronyd") or "/usr/sbin/chronyd"

pytestmark = pytest.mark.skipif(not Path(CHRONYD).exists(), reason="chronyd is not installed on this machine")

PLATFORMS = {
    "debian12": {
        "facts": {
            "os_family": "Debian",
            "distribution": "Debian",
            "distribution_major_version": "12",
            "distribution_version": "12.7",
        },
        # /etc/default/chrony as shipped by Debian 12's chrony 4.3 package.
        "options_file": (
            "# This is a configuration file for /etc/init.d/chrony and\n"
            "# /lib/systemd/system/chrony.service; it allows you to pass various options to\n"
            "# the chrony daemon without editing the init script or service file.\n\n"
            "# Options to pass to chrony.\n"
            'DAEMON_OPTS="-F 1"\n'
        ),
    },
    "debian13": {
        "facts": {
            "os_family": "Debian",
            "distribution": "Debian",
            "distribution_major_version": "13",
            "distribution_version": "13.1",
        },
        # trixie's chrony 4.6.1 ships the same /etc/default/chrony (checked in the lab)
        "options_file": '# Options to pass to chrony.\nDAEMON_OPTS="-F 1"\n',
    },
    "forky": {
        # Debian testing, as Ansible's setup and chrony_nts_host report it (no VERSION_ID)
        "facts": {
            "os_family": "Debian",
            "distribution": "Debian",
            "distribution_major_version": "forky/sid",
            "distribution_version": "forky/sid",
        },
        "options_file": '# Options to pass to chrony.\nDAEMON_OPTS="-F 1"\n',
    },
    "ubuntu2204": {
        "facts": {
            "os_family": "Debian",
            "distribution": "Ubuntu",
            "distribution_major_version": "22",
            "distribution_version": "22.04",
        },
        "options_file": '# Options to pass to chrony.\nDAEMON_OPTS="-F 1"\n',
    },
    "ubuntu2404": {
        "facts": {
            "os_family": "Debian",
            "distribution": "Ubuntu",
            "distribution_major_version": "24",
            "distribution_version": "24.04",
        },
        "options_file": '# Options to pass to chrony.\nDAEMON_OPTS="-F 1"\n',
    },
    "ubuntu2604": {
        # chrony 4.8, NTS by default (vars/Ubuntu.yml: no file of its own)
        "facts": {
            "os_family": "Debian",
            "distribution": "Ubuntu",
            "distribution_major_version": "26",
            "distribution_version": "26.04",
        },
        "options_file": '# Options to pass to chrony.\nDAEMON_OPTS="-F 1"\n',
    },
    "rhel9": {
        "facts": {
            "os_family": "RedHat",
            "distribution": "RedHat",
            "distribution_major_version": "9",
            "distribution_version": "9.4",
        },
        # /etc/sysconfig/chronyd as shipped by EL9's chrony package.
        "options_file": '# Command-line options for chronyd\nOPTIONS="-F 2"\n',
    },
}

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [vars.yml]
  tasks:
    - name: Pretend to be the platform under test (only the facts the role reads)
      ansible.builtin.set_fact:
        ansible_os_family: "{{ fake.os_family }}"
        ansible_distribution: "{{ fake.distribution }}"
        ansible_distribution_major_version: "{{ fake.distribution_major_version }}"
        ansible_distribution_version: "{{ fake.distribution_version }}"
        cacheable: true

    - name: Role platform variables (chrony_nts_host reads this machine, read-only)
      ansible.builtin.include_role:
        name: chrony_nts
        tasks_from: set_vars.yml
        public: true

    - name: Pretend chrony_nts_host read something else (FIPS mode, chronyd's version), when the test says so
      ansible.builtin.set_fact:
        __chrony_nts_host: "{{ __chrony_nts_host | combine(fake_host, recursive=true) }}"
      when: fake_host is defined

    - name: Role input checks and source selection
      ansible.builtin.include_role:
        name: chrony_nts
        tasks_from: preflight.yml

    - name: Keep the platform's real paths, then point the CA directory into the temp dir and feed the options file
      ansible.builtin.set_fact:
        real: {config_path: "{{ __chrony_nts_config_path }}", options_file: "{{ __chrony_nts_options_file }}",
               dropin_path: "{{ __chrony_nts_dropin_path }}"}
        __chrony_nts_cert_dir: "{{ out }}/certs"
        host_read: {fips_enabled: "{{ __chrony_nts_host.fips_enabled }}", chronyd: "{{ __chrony_nts_host.chronyd }}"}
        __chrony_nts_host: "{{ {'files': {__chrony_nts_options_file: options_content}} }}"

    - name: Role rendering step (exactly what chrony_nts_apply would receive)
      ansible.builtin.include_role:
        name: chrony_nts
        tasks_from: render.yml

    - name: Write each rendered file under the temp dir (its absolute path mirrored below out/files)
      ansible.builtin.copy:
        content: "{{ item.content }}"
        dest: "{{ out }}/files/{{ item.path | basename }}"
        mode: "0644"
      loop: "{{ __chrony_nts_rendered | selectattr('content', 'defined') | list }}"
      loop_control:
        label: "{{ item.path }}"

    - name: Hand the computed values to the test
      ansible.builtin.copy:
        dest: "{{ out }}/result.json"
        mode: "0644"
        content: "{{ {'opts': __chrony_nts_daemon_opts, 'sources': __chrony_nts_sources,
                      'config_path': real.config_path, 'service': __chrony_nts_service,
                      'options_var': __chrony_nts_options_var, 'user': __chrony_nts_user,
                      'options_file': real.options_file, 'dropin_path': real.dropin_path,
                      'files': __chrony_nts_rendered | map('dict2items') | map('rejectattr', 'key', 'eq', 'content')
                               | map('items2dict') | list,
                      'certs': __chrony_nts_trusted_certs, 'host_read': host_read,
                      'reserved_certsets': __chrony_nts_reserved_certsets} | to_json }}"
"""


def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            # The role calls its modules and filters by FQCN (nts.chrony.*): the checkout is the collection there.
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".collections"),
            "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
            "ANSIBLE_LOCAL_TEMP": str(tmp / ".ansible-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(tmp / ".ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_CONFIG": str(tmp / "none.cfg"),  # the repo's ansible.cfg (lead's) must not change the test
            "ANSIBLE_PYTHON_INTERPRETER": str(VENV_BIN / "python"),
        }
    )
    return env


def _run(tmp: Path, playbook: str, variables: dict, extra_args: tuple = ()) -> subprocess.CompletedProcess:
    (tmp / "play.yml").write_text(playbook)
    # Rendering is offline: the pre-flight probe of the selected servers (a network check, tested on the lab) is off.
    # chrony_nts_host reads this machine's packages and files, never its units (systemd may not run here).
    variables = {"chrony_nts_probe_gate": False, "chrony_nts_disable_conflicting": False, **variables}
    (tmp / "vars.yml").write_text(yaml.safe_dump(variables))
    (tmp / "none.cfg").write_text("[defaults]\n")
    return subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(tmp / "play.yml"), *extra_args],
        cwd=tmp,
        env=_env(tmp),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _pem(tmp: Path, name: str) -> str:
    """A real self-signed CA certificate (EC P-256) made with openssl."""
    key, crt = tmp / f"{name}.key", tmp / f"{name}.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        check=True,
        capture_output=True,
    )
    return crt.read_text()


def _render(tmp: Path, platform: str, role_vars: dict) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp / "out"
    (out / "files").mkdir(parents=True, exist_ok=True)
    variables = {"fake": PLATFORMS[platform]["facts"], "out": str(out), "role_dir": str(ROLE),
                 "options_content": PLATFORMS[platform]["options_file"], **role_vars}  # fmt: skip
    return _run(tmp, PLAYBOOK, variables), out


SITE_VARS = {
    "chrony_nts_use_catalog": False,
    "chrony_nts_policy": {"count": 2, "min_sources": 2},
    "chrony_nts_clock_control": False,
}


def _site_servers(tmp: Path) -> list:
    lab_ca = _pem(tmp, "lab-ca")
    return [
        {"host": "nts1.lab.test", "ca": lab_ca, "options": ["minpoll 0", "maxpoll 4"]},
        {"host": "nts2.lab.test", "ca": lab_ca, "port": 1123, "ntsport": 14460},
        {"host": "10.0.0.9", "ca_file": "/etc/ssl/local/other-ca.pem", "operator": "Other dept"},
    ]


def _chronyd_parse(path: Path, flags: tuple = ()) -> str:
    """``chronyd [FLAGS] -x -p -f PATH``: chronyd parses its command line (the daemon options the role wrote) and the
    file, prints the configuration and exits; it never starts (and -x is there anyway)."""
    proc = subprocess.run([CHRONYD, *flags, "-x", "-p", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _directives(conf: str) -> list[str]:
    return [line for line in conf.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("platform", ["debian12", "rhel9"])
def test_site_servers_render_and_chronyd_accepts(tmp_path, platform):
    site = _site_servers(tmp_path)
    proc, out = _render(
        tmp_path,
        platform,
        {**SITE_VARS, "chrony_nts_site_servers": site, "chrony_nts_policy": {"count": 3, "min_sources": 3}},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "result.json").read_text())
    conf = (out / "files" / "chrony.conf").read_text()
    lines = _directives(conf)

    assert conf.startswith("#"), "ansible_managed header must be a comment"
    assert "# Ansible managed" in conf.splitlines()[:3]
    # Each site server in order; both lab servers share one CA, so they share one certset.
    servers = [line for line in lines if line.startswith("server ")]
    assert servers == [
        "server nts1.lab.test iburst nts certset 1 minpoll 0 maxpoll 4",
        "server nts2.lab.test port 1123 iburst nts ntsport 14460 certset 1",
        "server 10.0.0.9 iburst nts certset 2",
    ]
    certset_of = {s["host"]: s["certset"] for s in result["sources"]}
    trusted = [line for line in lines if line.startswith("ntstrustedcerts ")]
    cert_dir = out / "certs"
    expected_trusted = {f"ntstrustedcerts {certset_of['10.0.0.9']} /etc/ssl/local/other-ca.pem"}
    for host in ("nts1.lab.test", "nts2.lab.test"):
        expected_trusted.add(f"ntstrustedcerts {certset_of[host]} {cert_dir}/certset-{certset_of[host]}.pem")
    assert set(trusted) == expected_trusted
    for cert in result["certs"]:
        if cert["content"] is not None:
            assert (out / "files" / Path(cert["path"]).name).read_text().count("BEGIN CERTIFICATE") == 1

    assert "authselectmode require" in lines
    assert "cmdport 0" in lines and "port 0" in lines
    assert not any(line.startswith(("pool ", "sourcedir ", "allow ")) for line in lines)
    assert "ntsdumpdir /var/lib/chrony" in lines
    assert "minsources 1" in lines and "makestep 1.0 3" in lines and "rtcsync" in lines

    # chronyd itself accepts the file and sees the same sources.
    parsed = _chronyd_parse(out / "files" / "chrony.conf")
    assert parsed.count("server ") == 3

    if platform == "debian12":
        assert result["config_path"] == "/etc/chrony/chrony.conf"
        assert result["service"] == "chrony" and result["user"] == "_chrony"
        assert result["options_var"] == "DAEMON_OPTS"
        # Debian's seccomp filter survives; -x is added for clock_control false.
        assert result["opts"]["line"] == 'DAEMON_OPTS="-F 1 -x"'
        assert "driftfile /var/lib/chrony/chrony.drift" in lines
        assert "confdir /etc/chrony/conf.d" in lines
        assert "keyfile /etc/chrony/chrony.keys" in lines
        assert result["dropin_path"] == "/etc/systemd/system/chrony.service.d/50-chrony-nts.conf"
    else:
        assert result["config_path"] == "/etc/chrony.conf"
        assert result["service"] == "chronyd" and result["user"] == "chrony"
        assert result["options_var"] == "OPTIONS"
        assert result["opts"]["line"] == 'OPTIONS="-F 2 -x"'
        assert "driftfile /var/lib/chrony/drift" in lines
        assert "keyfile /etc/chrony.keys" in lines
        assert not any(line.startswith("confdir") for line in lines)
        assert result["dropin_path"] == "/etc/systemd/system/chronyd.service.d/50-chrony-nts.conf"
    dropin = (out / "files" / "50-chrony-nts.conf").read_text()
    assert "[Unit]\nConditionCapability=\n" in dropin
    # What chrony_nts_apply receives: chrony.conf validated by chronyd -p, the drop-in flagged as a unit file, and the
    # options file as the host's own file with only the options line changed.
    files = {f["path"]: f for f in result["files"]}
    assert files[result["config_path"]]["validate"] == "/usr/sbin/chronyd -p -f %s"
    assert files[result["dropin_path"]]["unit"] is True
    options = (out / "files" / Path(result["options_file"]).name).read_text()
    assert options == PLATFORMS[platform]["options_file"].replace(
        result["opts"]["line"].replace(" -x", ""), result["opts"]["line"]
    )


@pytest.mark.parametrize("platform", ["debian12", "rhel9"])
def test_catalog_selection_with_clock_control_keeps_distro_flags(tmp_path, platform):
    proc, out = _render(tmp_path, platform, {"chrony_nts_policy": {"count": 4, "min_operators": 3}})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "result.json").read_text())
    lines = _directives((out / "files" / "chrony.conf").read_text())
    servers = [line for line in lines if line.startswith("server ")]
    assert len(servers) == 4
    assert len({s["provider"] for s in result["sources"]}) >= 3
    assert all(" nts" in s and "certset" not in s for s in servers)
    assert not any(line.startswith("ntstrustedcerts") for line in lines)
    # clock_control true: -x is not added and the distribution's flag stays exactly as it was.
    expected = 'DAEMON_OPTS="-F 1"' if platform == "debian12" else 'OPTIONS="-F 2"'
    assert result["opts"]["line"] == expected
    assert result["opts"]["found"] is True
    _chronyd_parse(out / "files" / "chrony.conf")


def test_keep_distro_sources_extra_config_and_serving(tmp_path):
    proc, out = _render(
        tmp_path,
        "debian12",
        {
            "chrony_nts_keep_distro_sources": True,
            "chrony_nts_keep_confdir": False,
            "chrony_nts_allow": ["192.0.2.0/24"],
            "chrony_nts_extra_config": ["log measurements statistics tracking", "ntsrefresh 86400"],
            "chrony_nts_authselectmode": "prefer",
            "chrony_nts_nocerttimecheck": 1,
            "chrony_nts_nosystemcert": True,
            "chrony_nts_cmdport": 323,
            "chrony_nts_leapsectz": "",
        },
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING chrony_nts_authselectmode is 'prefer'" in proc.stdout
    lines = _directives((out / "files" / "chrony.conf").read_text())
    assert "pool 2.debian.pool.ntp.org iburst" in lines and "sourcedir /etc/chrony/sources.d" in lines
    assert not any(line.startswith("confdir") for line in lines)
    assert "allow 192.0.2.0/24" in lines and "port 0" not in lines
    assert lines[-2:] == ["log measurements statistics tracking", "ntsrefresh 86400"]
    assert "authselectmode prefer" in lines and "nocerttimecheck 1" in lines and "nosystemcert" in lines
    assert "cmdport 323" in lines
    assert not any(line.startswith("leapsectz") for line in lines)
    _chronyd_parse(out / "files" / "chrony.conf")


@pytest.mark.parametrize("platform", ["debian13", "forky", "ubuntu2204", "ubuntu2404", "ubuntu2604"])
def test_current_releases_render_and_chronyd_accepts(tmp_path, platform):
    proc, out = _render(tmp_path, platform, {"chrony_nts_policy": {"count": 4, "min_operators": 3}})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "result.json").read_text())
    conf = (out / "files" / "chrony.conf").read_text()
    lines = _directives(conf)
    # The Debian layout on every one of them; Debian 13 and testing have no vars file of their own.
    assert result["config_path"] == "/etc/chrony/chrony.conf" and result["service"] == "chrony"
    assert result["opts"]["line"] == 'DAEMON_OPTS="-F 1"'
    assert "confdir /etc/chrony/conf.d" in lines and "ntsdumpdir /var/lib/chrony" in lines
    assert len([line for line in lines if line.startswith("server ")]) == 4
    assert not any(line.startswith(("pool ", "dumpdir ")) for line in lines)
    # What chrony_nts_host read on this machine reached the role: its chronyd, and FIPS mode (the file exists here).
    assert result["host_read"]["chronyd"]["version"] == "4.3"
    assert result["host_read"]["fips_enabled"] in (True, False, None)
    if platform == "ubuntu2604":
        # NTS by default: Ubuntu's pools in sources.d are kept (their certificate set comes through confdir)
        assert "sourcedir /etc/chrony/sources.d" in lines
        assert "# The distribution's own NTS sources, kept (chrony_nts_distro_nts_sources: keep):\n# Ubuntu's" in conf
        assert "/etc/chrony/conf.d/ubuntu-nts.conf (confdir below)" in conf
        assert not any(line.startswith("ntstrustedcerts") for line in lines)
        assert result["reserved_certsets"] == [1]
    else:
        # no NTS source of the distribution: nothing of its sources stays
        assert not any(line.startswith("sourcedir") for line in lines)
        assert "chrony_nts_distro_nts_sources" not in conf
        assert result["reserved_certsets"] == []
    _chronyd_parse(out / "files" / "chrony.conf", tuple(result["opts"]["options"]))


def test_ubuntu_2604_replace_and_keep_without_confdir(tmp_path):
    proc, out = _render(tmp_path, "ubuntu2604", {"chrony_nts_distro_nts_sources": "replace"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    conf = (out / "files" / "chrony.conf").read_text()
    lines = _directives(conf)
    assert not any(line.startswith(("sourcedir", "ntstrustedcerts", "pool ")) for line in lines)
    assert "are replaced by the sources above" in conf
    assert "/etc/chrony/conf.d/ubuntu-nts.conf still fills certificate set 1" in conf
    _chronyd_parse(out / "files" / "chrony.conf")

    # keep without confdir: the role writes the bootstrap server's set itself (chrony_nts_apply then checks the file)
    proc, out = _render(
        tmp_path / "run2", "ubuntu2604", {"chrony_nts_keep_confdir": False, "chrony_nts_keep_distro_sources": True}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = _directives((out / "files" / "chrony.conf").read_text())
    assert "ntstrustedcerts 1 /etc/chrony/nts-bootstrap-ubuntu.crt" in lines
    assert "sourcedir /etc/chrony/sources.d" in lines
    assert not any(line.startswith("confdir") for line in lines)
    # the distribution's unauthenticated sources on 26.04: DHCP only (its pools are the NTS ones above)
    assert "sourcedir /run/chrony-dhcp" in lines and lines.count("sourcedir /etc/chrony/sources.d") == 1
    _chronyd_parse(out / "files" / "chrony.conf")

    # Ubuntu's kept pools carry prefer: a proof that requires the role's sources to be selected could never pass
    proc, out = _render(tmp_path / "run4", "ubuntu2604", {"chrony_nts_verify_require_selected": True})
    assert proc.returncode != 0
    assert "chrony_nts_verify_require_selected is true but the distribution's NTS sources are kept" in proc.stdout
    variables = {"chrony_nts_verify_require_selected": True, "chrony_nts_distro_nts_sources": "replace"}
    proc, out = _render(tmp_path / "run5", "ubuntu2604", variables)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # replace without confdir: Ubuntu's set is not loaded at all, so nothing is reserved
    proc, out = _render(
        tmp_path / "run3", "ubuntu2604", {"chrony_nts_keep_confdir": False, "chrony_nts_distro_nts_sources": "replace"}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((out / "result.json").read_text())["reserved_certsets"] == []


def test_ubuntu_2604_site_ca_gets_a_certificate_set_of_its_own(tmp_path):
    site = _site_servers(tmp_path)
    variables = {**SITE_VARS, "chrony_nts_site_servers": site, "chrony_nts_policy": {"count": 3, "min_sources": 3}}
    proc, out = _render(tmp_path, "ubuntu2604", variables)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = _directives((out / "files" / "chrony.conf").read_text())
    # nts_select assigned sets 1 and 2; set 1 is Ubuntu's bootstrap CA (conf.d/ubuntu-nts.conf), so they move
    assert [line for line in lines if line.startswith("server ")] == [
        "server nts1.lab.test iburst nts certset 2 minpoll 0 maxpoll 4",
        "server nts2.lab.test port 1123 iburst nts ntsport 14460 certset 2",
        "server 10.0.0.9 iburst nts certset 3",
    ]
    trusted = sorted(line for line in lines if line.startswith("ntstrustedcerts "))
    assert trusted == [f"ntstrustedcerts 2 {out}/certs/certset-2.pem", "ntstrustedcerts 3 /etc/ssl/local/other-ca.pem"]
    _chronyd_parse(out / "files" / "chrony.conf")

    # a set named by the user that Ubuntu fills, with a CA of its own: refused before any change
    site[0]["certset"] = 1
    proc, out = _render(tmp_path / "run2", "ubuntu2604", {**variables, "chrony_nts_site_servers": site})
    assert proc.returncode != 0
    assert (
        "chrony_nts_site_servers[0] (nts1.lab.test): certset 1 is filled by the distribution (Ubuntu's" in proc.stdout
    )
    assert not (out / "files" / "chrony.conf").exists()


@pytest.mark.parametrize("platform", ["debian12", "rhel9", "ubuntu2604"])
def test_ip_family_and_kept_measurements_of_a_server(tmp_path, platform):
    # The NTS server tier's shape: chrony_nts_server sets chrony_nts_keep_measurements and appends its server lines.
    server_lines = [
        "ntsserverkey /etc/chrony/nts-server/server.key",
        "ntsservercert /etc/chrony/nts-server/server.crt",
        "ntsport 4460",
        "ntsprocesses 1",
    ]
    variables = {
        "chrony_nts_ip_family": "ipv6",
        "chrony_nts_keep_measurements": True,
        "chrony_nts_allow": ["2001:db8::/32"],
        "chrony_nts_extra_config": server_lines,
    }
    proc, out = _render(tmp_path, platform, variables)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "result.json").read_text())
    lines = _directives((out / "files" / "chrony.conf").read_text())
    assert "dumpdir /run/chrony" in lines and "ntsdumpdir /var/lib/chrony" in lines
    assert lines[-4:] == server_lines and "allow 2001:db8::/32" in lines
    expected = {"rhel9": 'OPTIONS="-F 2 -6 -r"'}.get(platform, 'DAEMON_OPTS="-F 1 -6 -r"')
    assert result["opts"]["line"] == expected
    # the per-source option is not written by the role (the daemon flag covers every source, any chronyd version)
    assert not any(" ipv6" in line for line in lines if line.startswith("server "))
    # chronyd accepts the flags and the file together
    _chronyd_parse(out / "files" / "chrony.conf", tuple(result["opts"]["options"]))

    # and a second run on what the first wrote changes nothing; switching both off removes the flags and the line
    options = (out / "files" / Path(result["options_file"]).name).read_text()
    proc, out = _render(tmp_path / "run2", platform, {"options_content": options})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["opts"]["line"] == expected.replace(" -6 -r", "")
    assert not any(line.startswith("dumpdir") for line in _directives((out / "files" / "chrony.conf").read_text()))


def test_per_source_ip_family_needs_chronyd_4_6(tmp_path):
    site = [{"host": "nts1.lab.test", "ca": _pem(tmp_path, "lab-ca"), "options": ["ipv6"]}]
    variables = {**SITE_VARS, "chrony_nts_site_servers": site, "chrony_nts_policy": {"count": 1, "min_sources": 1}}
    # this machine's chronyd (4.3) is too old: the input check names the version before anything changes
    proc, out = _render(tmp_path, "debian12", variables)
    assert proc.returncode != 0
    assert (
        "chrony_nts_site_servers: nts1.lab.test has the server option 'ipv6', which needs chronyd >= 4.6; this "
        "host's chronyd is 4.3." in proc.stdout
    )
    assert not (out / "files" / "chrony.conf").exists()

    # a Debian 13 host's chronyd (4.6.1): the option is written as given
    proc, out = _render(tmp_path / "run2", "debian13", {**variables, "fake_host": {"chronyd": {"version": "4.6.1"}}})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    conf = (out / "files" / "chrony.conf").read_text()
    assert "server nts1.lab.test iburst nts certset 1 ipv6" in _directives(conf)
    # This chronyd (4.3) cannot parse the 4.6 option: everything else of the file is validated, the option alone not.
    (out / "files" / "chrony-4.3.conf").write_text(conf.replace(" certset 1 ipv6", " certset 1"))
    _chronyd_parse(out / "files" / "chrony-4.3.conf")

    # the option against the daemon's family: refused whatever the version
    proc, out = _render(
        tmp_path / "run3",
        "debian13",
        {**variables, "chrony_nts_ip_family": "ipv4", "fake_host": {"chronyd": {"version": "4.8"}}},
    )
    assert proc.returncode != 0
    assert "has the server option 'ipv6' but chrony_nts_ip_family is 'ipv4'" in proc.stdout


def test_rhel_in_fips_mode_stops_before_any_change_unless_allowed(tmp_path):
    proc, out = _render(tmp_path, "rhel9", {"fake_host": {"fips_enabled": True}})
    assert proc.returncode != 0
    assert "this host runs in FIPS mode (/proc/sys/crypto/fips_enabled is 1) and is of the RedHat family" in proc.stdout
    assert "chrony_nts_fips_allow: true" in proc.stdout
    assert not (out / "files" / "chrony.conf").exists()

    proc, out = _render(
        tmp_path / "run2", "rhel9", {"fake_host": {"fips_enabled": True}, "chrony_nts_fips_allow": True}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _chronyd_parse(out / "files" / "chrony.conf")
    # a Debian-family host in FIPS mode is not stopped (the check is about RHEL's chronyd)
    proc, out = _render(tmp_path / "run3", "ubuntu2404", {"fake_host": {"fips_enabled": True}})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ubuntu_override_and_missing_options_file(tmp_path):
    out = tmp_path / "out"
    (out / "files").mkdir(parents=True)
    variables = {
        "fake": {
            "os_family": "Debian",
            "distribution": "Ubuntu",
            "distribution_major_version": "24",
            "distribution_version": "24.04",
        },
        "out": str(out),
        "role_dir": str(ROLE),
        "options_content": None,
        "chrony_nts_keep_distro_sources": True,
        "chrony_nts_clock_control": False,
    }
    proc = _run(tmp_path, PLAYBOOK, variables)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = _directives((out / "files" / "chrony.conf").read_text())
    assert "pool ntp.ubuntu.com iburst maxsources 4" in lines
    assert "pool 2.debian.pool.ntp.org iburst" not in lines
    result = json.loads((out / "result.json").read_text())
    # No options file on the host: the family default is the base, -x is added.
    assert result["opts"] == {
        "found": False,
        "options": ["-F", "1", "-x"],
        "line": 'DAEMON_OPTS="-F 1 -x"',
        "content": 'DAEMON_OPTS="-F 1 -x"\n',
    }


def test_the_role_validation_command_rejects_a_bad_extra_line(tmp_path):
    # Rendering does not judge chrony's syntax; the validate command handed to chrony_nts_apply does (that module's
    # refusal to write such a file is tested in test_apply_local.py).
    proc, out = _render(tmp_path, "debian12", {"chrony_nts_extra_config": ["ntsrefresh notanumber"]})
    assert proc.returncode == 0, proc.stdout
    result = json.loads((out / "result.json").read_text())
    command = {f["path"]: f for f in result["files"]}[result["config_path"]]["validate"]
    argv = command.replace("%s", str(out / "files" / "chrony.conf")).split()
    check = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert check.returncode != 0
    assert "ntsrefresh" in check.stderr + check.stdout


# --- bad input stops the play before any change --------------------------------------------------------------------

ARGSPEC_PLAYBOOK = """
- hosts: target
  gather_facts: false
  vars_files: [vars.yml]
  roles:
    - chrony_nts
"""


def _unreachable_inventory(tmp: Path) -> Path:
    # If validation ever let bad input through, the next task would need this host: it cannot be reached
    # (loopback port 9), so the role still changes nothing anywhere.
    inv = tmp / "inventory.yml"
    inv.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "target": {
                            "ansible_host": "127.0.0.1",
                            "ansible_port": 9,
                            "ansible_connection": "ssh",
                            "ansible_ssh_common_args": "-o ConnectTimeout=2",
                        }
                    }
                }
            }
        )
    )
    return inv


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"chrony_nts_authselectmode": "requrie"}, r"chrony_nts_authselectmode.*requrie"),
        ({"chrony_nts_clock_control": "maybe"}, r"chrony_nts_clock_control"),
        ({"chrony_nts_site_servers": "nts1.lab.test"}, r"chrony_nts_site_servers"),
        ({"chrony_nts_verify_timeout": "soon"}, r"chrony_nts_verify_timeout"),
        ({"chrony_nts_distro_nts_sources": "drop"}, r"chrony_nts_distro_nts_sources.*drop"),
        ({"chrony_nts_ip_family": "inet6"}, r"chrony_nts_ip_family.*inet6"),
        ({"chrony_nts_fips_allow": "perhaps"}, r"chrony_nts_fips_allow"),
        ({"chrony_nts_keep_measurements": "often"}, r"chrony_nts_keep_measurements"),
    ],
)
def test_argument_specs_reject_bad_input_before_any_task(tmp_path, variables, expected):
    (tmp_path / "none.cfg").write_text("[defaults]\n")
    proc = _run(tmp_path, ARGSPEC_PLAYBOOK, variables, ("-i", str(_unreachable_inventory(tmp_path))))
    assert proc.returncode != 0
    assert "Validating arguments against arg spec" in proc.stdout
    assert re.search(expected, proc.stdout), proc.stdout
    assert "UNREACHABLE" not in proc.stdout, "validation must fail before the role contacts the host"
    assert "Gather the facts" not in proc.stdout


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"chrony_nts_policy": {"cuont": 4}}, r"policy: unknown key 'cuont' \(did you mean 'count'\?\)"),
        (
            {"chrony_nts_use_catalog": False, "chrony_nts_site_servers": [{"host": "bad host"}]},
            r"site_servers\[0\].*host 'bad host'",
        ),
        ({"chrony_nts_extra_config": ["server a\nserver b"]}, r"chrony_nts_extra_config\[0\] must be a single"),
        ({"chrony_nts_serve_ntp": True}, r"chrony_nts_serve_ntp is true but chrony_nts_allow is empty"),
        ({"chrony_nts_minsources": 0}, r"minsources=0 \(>= 1\)"),
        ({"chrony_nts_verify_min_sources": 9}, r"chrony_nts_verify_min_sources is 9 but only 4 NTS source"),
    ],
)
def test_preflight_names_field_and_value(tmp_path, variables, expected):
    proc, out = _render(tmp_path, "debian12", variables)
    assert proc.returncode != 0
    assert re.search(expected, proc.stdout), proc.stdout
    assert not (out / "files" / "chrony.conf").exists()


def test_unsupported_family_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    variables = {
        "fake": {
            "os_family": "Suse",
            "distribution": "openSUSE Leap",
            "distribution_major_version": "15",
            "distribution_version": "15.5",
        },
        "out": str(out),
        "role_dir": str(ROLE),
    }
    proc = _run(tmp_path, PLAYBOOK, variables)
    assert proc.returncode != 0
    assert "this host is os_family 'Suse'" in proc.stdout
