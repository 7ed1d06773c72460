"""Issue a tier host's key and certificate with a lab's CA: issue_tier_cert.py LAB_DIR NAME ADDRESS.

Writes LAB_DIR/tier/NAME.key (0600) and LAB_DIR/tier/NAME.crt (certificate + CA, 0644), as labctl.py does for
`--tier` hosts, for a host whose address is only known after Molecule created it.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))
import pki


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.exit("usage: issue_tier_cert.py LAB_DIR NAME ADDRESS")
    lab_dir, name, address = Path(argv[0]), argv[1], argv[2]
    try:
        ipaddress.ip_address(address)
    except ValueError:
        sys.exit(f"ADDRESS {address!r} is not an IP address (is the container on the scenario network?)")
    ca_key, ca_cert = lab_dir / "pki" / "ca.key", lab_dir / "pki" / "ca.pem"
    if not ca_key.exists():
        sys.exit(f"no lab CA in {lab_dir / 'pki'}: run the shared prepare (labctl.py up --attach) first")
    ca = pki.Authority.load(ca_key.read_bytes(), ca_cert.read_bytes())
    key, cert = ca.issue([name], [address])
    pki.write(lab_dir / "tier" / f"{name}.key", key, 0o600)
    pki.write(lab_dir / "tier" / f"{name}.crt", cert + ca.cert_pem, 0o644)
    print(f"issued {lab_dir / 'tier' / name}.crt for {name} {address}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
