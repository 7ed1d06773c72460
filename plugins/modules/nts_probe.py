#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: chrony-nts project contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: nts_probe
short_description: Prove that NTS (RFC 8915) servers work, without chrony
description:
  - Performs, for each server, one NTS key exchange (TLS 1.3, ALPN C(ntske/1), certificate chain and name
    verification, NTPv4 and AEAD negotiation, cookies) followed by one NTS-authenticated NTPv4 request to the
    negotiated NTP server and port.
  - Offers AEAD_AES_128_GCM_SIV (id 30) and AEAD_AES_SIV_CMAC_256 (id 15, which every NTS server implements) in
    that order by default, AEAD 30 only where the local C(cryptography) has a working C(AESGCMSIV) (see O(aeads)),
    and reports the negotiated one in RV(results[].aead) and RV(results[].aead_name).
  - "chrony's AES-128-GCM-SIV keys: RFC 8915 exports the keys with the negotiated AEAD id in the exporter context,
    but chrony 4.4 to 4.6 use id 15 for AEAD 30 too, and chrony >= 4.6.1 does so unless both sides send NTS-KE
    record 1024 (Compliant AES-128-GCM-SIV Exporter Context). The probe sends record 1024 whenever it offers
    AEAD 30 and uses id 30 when the server echoes it, id 15 (with the 16-byte key of AEAD 30) when it does not;
    RV(results[].compliant_exporter) and RV(results[].exporter_context) say which. If such a server answers the
    first NTP request with an NTS NAK, the probe sends a second request with the next cookie and the keys of the
    other derivation (RV(results[].exporter_retry)), as chrony >= 4.6.1 clients do, and RV(results[].aead_note)
    names the derivation the server uses; if both get a NAK the failure says so."
  - Reports per server the negotiated parameters, certificate details, clock offset and delay, or the stage
    (V(dns), V(tcp), V(tls), V(certificate), V(nts-ke), V(ntp), V(authentication)) and reason of the failure.
  - Servers are probed in parallel threads. O(timeout) is one deadline for the whole probe of each server (DNS, TCP,
    TLS, NTS-KE and NTP together), so a server that stalls at every step still costs at most one timeout, and
    unreachable servers cost about one timeout in total when O(concurrency) is at least their number.
  - Network faults never crash the task, whatever the server does (refuses, resets the connection, stalls, sends
    garbage), and neither does a socket that cannot be created on the probing host (no IPv6, no free descriptor).
    Each is that server's result with a stage and a plain reason (for example V(tls) with "connection reset by peer
    during the TLS handshake"), the other servers' results are kept, and O(fail_on_error) and O(min_ok) decide
    whether the task fails.
  - Intended as a pre-flight check before hosts are configured to depend on the servers. It runs where the module
    runs; usually that is the controller (task keywords C(delegate_to) set to C(localhost) and C(run_once)), but
    any host with Python >= 3.9, pyOpenSSL >= 17.5 and cryptography >= 37 works, which also tests that host's
    network path.
  - Read-only. Never reports a change; check mode runs the same probes.
version_added: "1.0.0"
author:
  - chrony-nts project (@chrony-nts)
requirements:
  - python >= 3.9
  - pyOpenSSL >= 17.5 (TLS exporter)
  - cryptography >= 37 (AES-SIV); AES-128-GCM-SIV (AEAD 30) also needs C(AESGCMSIV) (cryptography >= 42 built with
    OpenSSL >= 3.2, as the PyPI wheels are; not Debian 12's python3-cryptography 38)
options:
  servers:
    description:
      - NTS-KE servers to probe. A string is C(host), C(host:ntsport) or C([ipv6]:ntsport).
      - A dictionary has O(servers[].host) and optional keys below.
    type: list
    elements: raw
    required: true
    suboptions:
      host:
        description: Host name or IP address of the NTS-KE server.
        type: str
        required: true
      port:
        description: NTS-KE TCP port.
        type: int
        default: 4460
        aliases: [ntsport]
      address:
        description:
          - IP address to connect to instead of resolving O(servers[].host); the certificate is still verified
            for O(servers[].server_name) (default O(servers[].host)). Useful when the controller cannot resolve a
            name that the managed hosts can.
        type: str
      ca_file:
        description:
          - PEM CA bundle for this server, overriding the top-level O(ca_file).
          - A file that cannot be read or loaded fails this server at stage V(certificate) with a message naming
            the path and the server.
        type: path
      ca_pem:
        description:
          - The CA certificate(s) for this server as PEM text (as inventories hold a private CA), instead of
            O(servers[].ca_file) and the top-level O(ca_file). Loaded in memory; nothing is written to disk.
          - Every PEM block must be a C(CERTIFICATE). Text that cannot be loaded fails this server at stage
            V(certificate) with a message naming C(ca_pem) and the server, before any packet is sent.
          - Mutually exclusive with O(servers[].ca_file).
        type: str
      server_name:
        description: Name (or IP) the certificate must be valid for and the TLS SNI; defaults to O(servers[].host).
        type: str
  ca_file:
    description:
      - PEM file with the CA certificates to trust (for a private CA). When given, the system trust store is not
        used; when omitted, the system's default CA store is used.
    type: path
  no_cert_time_check:
    description:
      - Do not check the certificates' notBefore/notAfter dates (for a controller whose clock is known to be
        wrong). Chain and name are still verified. The C(cert_days_left) result is still computed from the local
        clock.
    type: bool
    default: false
  timeout:
    description:
      - Seconds allowed for the whole probe of one server, all steps together (DNS, TCP connect, TLS handshake,
        NTS-KE exchange, NTP exchange); not a per-step limit. A server that has not finished by then fails at the
        step it was in, with a reason such as "timed out after 5.0s during the TLS handshake".
    type: float
    default: 5
  concurrency:
    description: Maximum number of servers probed at the same time.
    type: int
    default: 16
  fail_on_error:
    description: Fail the task if any server fails its probe.
    type: bool
    default: true
  min_ok:
    description:
      - Fail the task if fewer than this many servers pass. Applies even when O(fail_on_error=false), which lets a
        play tolerate some broken servers while still requiring a quorum.
    type: int
    default: 1
  aeads:
    description:
      - AEAD algorithm ids to offer in the key exchange, in order of preference. V(30) is AEAD_AES_128_GCM_SIV,
        V(15) is AEAD_AES_SIV_CMAC_256 (the one every NTS server must implement). Each may appear once.
      - When omitted, V([30, 15]) where the probing host's C(cryptography) has a working C(AESGCMSIV), else V([15]);
        each result's RV(results[].aead_note) then says why AEAD 30 was not offered.
      - When given, AEAD 30 is dropped with a warning where it cannot be used; the task fails if nothing is left
        to offer. A server that supports none of the offered AEADs fails at stage V(nts-ke).
      - Offering only V([15]) gives the packets every NTS server answers alike; V([30]) tests a server's
        AES-128-GCM-SIV (chrony >= 4.4 built with Nettle >= 3.9 or, from 4.5, GnuTLS) and its key derivation.
    type: list
    elements: int
notes:
  - The NTP request uses a random transmit timestamp (the real send time stays local) and one cookie; the answer
    must echo the unique identifier and carry a valid authenticator. An NTS NAK is reported as a failure in stage
    V(authentication) with RV(results[].nak=true) (after the one retry described above for AEAD 30 keys the server
    did not confirm with record 1024).
  - The module sends a handful of packets per server and never sets any clock.
seealso:
  - name: RFC 8915
    description: Network Time Security for the Network Time Protocol.
    link: https://www.rfc-editor.org/rfc/rfc8915
attributes:
  check_mode:
    support: full
    description: The module only probes; check mode runs the same probes.
  diff_mode:
    support: none
    description: The module changes nothing, so there is nothing to show.
"""

EXAMPLES = r"""
- name: Pre-flight - every NTS server must complete a key exchange and an authenticated NTP query
  nts_probe:
    servers: "{{ chrony_nts_servers | map(attribute='host') | list }}"
    timeout: 5
  delegate_to: localhost
  run_once: true

- name: Lab servers with a private CA, reached by IP because the controller cannot resolve the lab names
  nts_probe:
    servers:
      - host: nts1.lab.test
        address: 10.89.0.11
      - host: nts2.lab.test
        port: 4461
        address: 10.89.0.12
    ca_file: "{{ playbook_dir }}/../.lab/pki/ca.pem"
  delegate_to: localhost
  run_once: true
  register: nts_preflight

- name: Only AES-SIV-CMAC-256 (what every NTS server implements), e.g. to compare with a GCM-SIV probe
  nts_probe:
    servers: [nts1.example.net]
    aeads: [15]
  delegate_to: localhost
  run_once: true

- name: Tolerate one broken public server out of four, but require three
  nts_probe:
    servers: [time.cloudflare.com, nts.netnod.se, ptbtime1.ptb.de, ntppool1.time.nl]
    fail_on_error: false
    min_ok: 3
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
results:
  description: One entry per server, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    host:
      description: Server as given.
      type: str
      returned: always
      sample: nts1.lab.test
    port:
      description: NTS-KE port.
      type: int
      returned: always
      sample: 4460
    address:
      description: IP address connected to.
      type: str
      returned: when TCP connected
      sample: 10.89.0.11
    ok:
      description: Key exchange and authenticated NTP exchange both succeeded.
      type: bool
      returned: always
    stage:
      description: Failed step, one of dns, tcp, tls, certificate, nts-ke, ntp, authentication; null when ok.
      type: str
      returned: always
      sample: certificate
    error:
      description: Human-readable reason of the failure; null when ok.
      type: str
      returned: always
      sample: "certificate verification failed for 'nts1.lab.test': certificate has expired (depth 0, ...)"
    nak:
      description: The server answered with an NTS NAK (cookie rejected).
      type: bool
      returned: always
    aead:
      description: Negotiated AEAD algorithm id (15 = AEAD_AES_SIV_CMAC_256, 30 = AEAD_AES_128_GCM_SIV).
      type: int
      returned: after NTS-KE
      sample: 30
    aead_name:
      description: Name of the negotiated AEAD algorithm.
      type: str
      returned: after NTS-KE
      sample: AEAD_AES_128_GCM_SIV
    aeads_offered:
      description: AEAD ids offered to the server, in order of preference.
      type: list
      elements: int
      returned: always
      sample: [30, 15]
    aead_note:
      description:
        - Why an AEAD was not offered (for example this host's C(cryptography) has no C(AESGCMSIV)), and how the
          AEAD_AES_128_GCM_SIV keys were derived when not as RFC 8915 says (a server without record 1024, a retry
          after an NTS NAK); null when there is nothing to say.
      type: str
      returned: always
    compliant_exporter:
      description:
        - The server echoed NTS-KE record 1024, so AEAD_AES_128_GCM_SIV keys are exported with AEAD id 30 in the
          context (RFC 8915); false means a server that does not know the record (chrony < 4.6.1, NTPsec, ...).
      type: bool
      returned: after NTS-KE
    exporter_context:
      description:
        - AEAD id put into the TLS exporter context for the keys of the (last) NTP request; differs from
          RV(results[].aead) only for AEAD 30 with a server that uses the pre-4.6.1 chrony derivation (15).
      type: int
      returned: after NTS-KE
      sample: 30
    exporter_retry:
      description:
        - The first NTP request got an NTS NAK and a second one was sent with the keys of the other AEAD 30 key
          derivation.
      type: bool
      returned: always
    cookies:
      description: Number of cookies received in the key exchange.
      type: int
      returned: after NTS-KE
      sample: 8
    cookie_length:
      description: Length of the first cookie in bytes.
      type: int
      returned: after NTS-KE
      sample: 100
    ntp_server:
      description: NTP server negotiated by the NTS-KE server (record 6), null when the KE server itself serves NTP.
      type: str
      returned: after NTS-KE
    ntp_port:
      description: NTP port (negotiated by record 7, else 123).
      type: int
      returned: after NTS-KE
      sample: 123
    ntp_address:
      description: IP address the NTP request went to.
      type: str
      returned: after NTS-KE
    ntp_cookies:
      description: Fresh cookies received in the authenticated NTP response.
      type: int
      returned: when ok
    cert_subject:
      description: Server certificate subject (RFC 4514).
      type: str
      returned: after TLS
      sample: CN=nts1.lab.test
    cert_issuer:
      description: Server certificate issuer (RFC 4514).
      type: str
      returned: after TLS
    cert_not_before:
      description: Certificate notBefore, UTC ISO 8601.
      type: str
      returned: after TLS
    cert_not_after:
      description: Certificate notAfter, UTC ISO 8601.
      type: str
      returned: after TLS
      sample: "2026-03-01T12:00:00Z"
    cert_days_left:
      description: Whole days until notAfter (negative when expired).
      type: int
      returned: after TLS
      sample: 89
    offset:
      description: Clock offset of the server relative to this host in seconds (positive = server ahead).
      type: float
      returned: when ok
    delay:
      description: Round-trip delay in seconds.
      type: float
      returned: when ok
    stratum:
      description: Server stratum.
      type: int
      returned: when ok
      sample: 1
    leap:
      description: Leap indicator (3 = unsynchronised).
      type: int
      returned: when ok
      sample: 0
    refid:
      description: Reference ID as text.
      type: str
      returned: when ok
    synchronised:
      description: False when the server says it is unsynchronised (stratum 0 or 16, or leap 3).
      type: bool
      returned: when ok
    timings:
      description: Seconds spent per step (dns, tcp, tls, nts_ke, ntp, total).
      type: dict
      returned: always
ok_servers:
  description: Hosts whose probe succeeded.
  returned: always
  type: list
  elements: str
failed_servers:
  description: Hosts whose probe failed.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.nts.chrony.plugins.module_utils.nts_prober import (  # noqa: E402
    PROBE_ARGUMENT_SPEC,
    run_probe_task,
)


def main():
    module = AnsibleModule(argument_spec=PROBE_ARGUMENT_SPEC, supports_check_mode=True)
    out, failure, warnings = run_probe_task(module.params)
    for warning in warnings:
        module.warn(warning)
    if failure:
        module.fail_json(msg=failure, **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
