# -*- coding: utf-8 -*-
"""Role filter: compute chronyd's daemon options line while keeping the distribution's own flags.

Debian passes ``DAEMON_OPTS`` from /etc/default/chrony (``-F 1``: seccomp filter), the RHEL family
``OPTIONS`` from /etc/sysconfig/chronyd (``-F 2`` on EL9). The role manages three flags and nothing else:
``-4``/``-6`` (one IP family, chrony_nts_ip_family), ``-r`` (reload the measurement history saved in
``dumpdir``, chrony_nts_keep_measurements) and ``-x`` (do not control the system clock, chrony_nts_clock_control).
Every other flag the host already has is kept in its order; the managed ones follow it in that order.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import shlex

from ansible.errors import AnsibleFilterError

_UNSAFE = re.compile(r"[\s\"'`$\\]")


def parse_daemon_opts(content, var):
    """Return the tokens of the last uncommented ``var=...`` assignment in ``content``, or None."""
    pattern = re.compile(r"^[ \t]*(?:export[ \t]+)?%s=(.*)$" % re.escape(var), re.MULTILINE)
    matches = pattern.findall(content or "")
    if not matches:
        return None
    raw = matches[-1].strip()
    try:
        # The right-hand side is one shell word ("-F 1"); systemd/the init script split its value on whitespace.
        value = " ".join(shlex.split(raw, comments=True))
    except ValueError as exc:
        raise AnsibleFilterError("%s=%s cannot be parsed: %s" % (var, raw, exc)) from exc
    return value.split()


def _with_line(content, var, line):
    """``content`` with its last ``var=`` assignment replaced by ``line`` (appended when there is none)."""
    pattern = re.compile(r"^[ \t]*(?:export[ \t]+)?%s=.*$" % re.escape(var), re.MULTILINE)
    content = content or ""
    matches = list(pattern.finditer(content))
    if matches:
        last = matches[-1]
        return content[: last.start()] + line + content[last.end() :]
    if content and not content.endswith("\n"):
        content += "\n"
    return content + line + "\n"


_FAMILY_FLAGS = {"any": [], "ipv4": ["-4"], "ipv6": ["-6"]}
_MANAGED = ("-4", "-6", "-r", "-x")


def chrony_nts_daemon_opts(content, var, clock_control, default, ip_family="any", keep_measurements=False):
    """Compute the options for ``var``: the host's current flags (or ``default``) without the managed ones, then
    ``-4``/``-6`` per ``ip_family``, ``-r`` per ``keep_measurements`` and ``-x`` per ``clock_control``.

    Returns ``{"found": bool, "options": [tokens], "line": 'VAR="..."', "content": the whole new file}``: the file
    as it is, with only the last ``VAR=`` line replaced (or the line appended when the file has none).
    """
    for name, value in (("clock_control", clock_control), ("keep_measurements", keep_measurements)):
        if not isinstance(value, bool):
            raise AnsibleFilterError("%s must be a boolean, got %r" % (name, value))
    if ip_family not in _FAMILY_FLAGS:
        raise AnsibleFilterError("ip_family must be one of any, ipv4, ipv6, got %r" % (ip_family,))
    tokens = parse_daemon_opts(content, var)
    found = tokens is not None
    if tokens is None:
        tokens = shlex.split(default or "")
    tokens = [t for t in tokens if t not in _MANAGED] + _FAMILY_FLAGS[ip_family]
    if keep_measurements:
        tokens.append("-r")
    if not clock_control:
        tokens.append("-x")
    for token in tokens:
        if _UNSAFE.search(token):
            raise AnsibleFilterError(
                "%s holds the option %r with spaces, quotes, '$', '`' or '\\'; the role cannot rewrite it "
                "safely, edit the file by hand" % (var, token)
            )
    line = '%s="%s"' % (var, " ".join(tokens))
    return {"found": found, "options": tokens, "line": line, "content": _with_line(content, var, line)}


class FilterModule(object):
    """chrony_nts role filters."""

    def filters(self):
        return {"chrony_nts_daemon_opts": chrony_nts_daemon_opts}
