"""HTTPS for the local network: a certificate authority made once on this machine, and a server
certificate it signs for the machine's current names and addresses.

Browsers give the microphone only to secure pages (https, or http on localhost), so a phone or a
laptop on the LAN needs https. `scripts/run.sh --lan` calls `ensure()`; the devices trust the
authority once (`ca.crt`, which the gateway also serves at `/ca.crt`) and every certificate it
signs later (a new address from DHCP, a renewal) is trusted with it.

The authority may sign only names a LAN uses (X.509 name constraints: private, shared and
link-local address ranges, loopback, `localhost`, `.local`, `.lan`, `.home.arpa`, `.internal`
and this machine's host name), so trusting it on a phone does not let its key vouch for any
public site. A public address or domain needs a certificate of the user's own
(`VA_TLS_CERT` / `VA_TLS_KEY`).

    python -m services.gateway.tls [--dir DIR] [--name NAME ...]   # make or renew; how to trust
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import ifaddr
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CA_DAYS = 3650
SERVER_DAYS = 397  # the longest validity Apple's and Chrome's rules accept for a server cert
RENEW_DAYS = 30  # a server certificate this close to its end is replaced

# What the authority may vouch for: addresses and names that do not leave a local network.
LOCAL_NETWORKS = [
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # carrier-grade NAT, Tailscale
        "169.254.0.0/16",
        "127.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
]
LOCAL_DOMAINS = ("localhost", "local", "lan", "home.arpa", "internal")


def default_dir() -> Path:
    """`VA_TLS_DIR`, else `$XDG_DATA_HOME/voice-assistant/tls` (kept: devices trust its CA)."""
    if os.environ.get("VA_TLS_DIR"):
        return Path(os.environ["VA_TLS_DIR"])
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "voice-assistant" / "tls"


def host_names() -> list[str]:
    """This machine's name, its mDNS `.local` name, and `localhost`."""
    name = socket.gethostname().split(".")[0].lower()
    return [name, f"{name}.local", "localhost"]


def host_addresses() -> list[IPAddress]:
    """The addresses of this machine's interfaces that a device on a local network can reach
    (loopback too; IPv6 link-local addresses are left out: they need a zone in a URL)."""
    found: list[IPAddress] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            raw = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
            addr = ipaddress.ip_address(raw)
            if addr.version == 6 and addr.is_link_local:
                continue
            if addr not in found:
                found.append(addr)
    return found


def is_local(addr: IPAddress) -> bool:
    return any(addr in net for net in LOCAL_NETWORKS)


def lan_addresses(addresses: Iterable[IPAddress]) -> list[IPAddress]:
    """The non-loopback local addresses, the ones other devices open."""
    return [a for a in addresses if is_local(a) and not a.is_loopback]


@dataclass(frozen=True)
class Issued:
    dir: Path
    ca_cert: Path
    cert: Path
    key: Path
    names: list[str]
    addresses: list[IPAddress]
    made_ca: bool
    made_cert: bool


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _make_ca(dir: Path, host: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Voice assistant (self-hosted)"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Voice assistant local CA ({host})"),
        ]
    )
    permitted: list[x509.GeneralName] = [x509.IPAddress(n) for n in LOCAL_NETWORKS]
    permitted += [x509.DNSName(d) for d in (*LOCAL_DOMAINS, host)]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.NameConstraints(permitted, None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(dir / "ca.key", _key_pem(key), private=True)
    _write(dir / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _load_ca(dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    cert_path, key_path = dir / "ca.crt", dir / "ca.key"
    if not (cert_path.exists() and key_path.exists()):
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: not the EC key this module makes")
    return cert, key


def _covers(
    cert_path: Path, ca: x509.Certificate, names: Sequence[str], addresses: Sequence[IPAddress]
) -> bool:
    """The server certificate at `cert_path` was signed by `ca`, is not near its end, and
    names every one of `names` and `addresses`."""
    if not cert_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.issuer != ca.subject or cert.not_valid_after_utc - _now() < dt.timedelta(
        days=RENEW_DAYS
    ):
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(names) <= set(san.get_values_for_type(x509.DNSName)) and set(addresses) <= set(
        san.get_values_for_type(x509.IPAddress)
    )


def _issue(
    dir: Path,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: Sequence[str],
    addresses: Sequence[IPAddress],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    san += [x509.IPAddress(a) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(dir / "server.key", _key_pem(key), private=True)
    _write(dir / "server.crt", cert.public_bytes(serialization.Encoding.PEM))


def ensure(
    dir: Path | None = None,
    names: Sequence[str] = (),
    addresses: Sequence[IPAddress] | None = None,
) -> Issued:
    """The authority in `dir` (made the first time) and a server certificate of its for this
    machine's names and local addresses plus `names` (reissued when one is missing from it or
    it nears its end)."""
    dir = dir or default_dir()
    dir.mkdir(parents=True, exist_ok=True)
    os.chmod(dir, 0o700)
    host = host_names()[0]
    all_names = list(dict.fromkeys([*host_names(), *(n.lower() for n in names)]))
    found = host_addresses() if addresses is None else list(addresses)
    local = [a for a in found if is_local(a)]
    loaded = _load_ca(dir)
    made_ca = loaded is None
    ca, ca_key = loaded if loaded is not None else _make_ca(dir, host)
    made_cert = not _covers(dir / "server.crt", ca, all_names, local)
    if made_cert:
        _issue(dir, ca, ca_key, all_names, local)
    return Issued(
        dir,
        dir / "ca.crt",
        dir / "server.crt",
        dir / "server.key",
        all_names,
        local,
        made_ca,
        made_cert,
    )


def urls(issued: Issued, port: int) -> list[str]:
    """The https addresses other devices open (the LAN addresses, then the `.local` name)."""
    out = [
        f"https://{a}:{port}/" if a.version == 4 else f"https://[{a}]:{port}/"
        for a in lan_addresses(issued.addresses)
    ]
    return out + [f"https://{issued.names[1]}:{port}/"]


TRUST_HELP = """\
Trust the authority once on each device (its certificate: {ca}; the page also serves it at
https://<this machine>:{port}/ca.crt: accept the browser's warning once to download it):
  Android:  Settings > Security > Encryption & credentials > Install a certificate > CA
            certificate, pick ca.crt.
  iPhone:   open the ca.crt link in Safari, Settings > General > VPN & Device Management >
            install the profile, then Settings > General > About > Certificate Trust Settings >
            turn on full trust for "Voice assistant local CA".
  macOS:    double-click ca.crt (Keychain Access, System), open it, "When using this
            certificate: Always Trust".
  Windows:  double-click ca.crt > Install Certificate > Local Machine > "Trusted Root
            Certification Authorities".
  Linux (Chrome/Chromium): Settings > Privacy and security > Security > Manage certificates >
            Authorities > Import; Firefox: Settings > Certificates > View Certificates >
            Authorities > Import (or set security.enterprise_roots.enabled).
The authority can sign only local names and addresses (name constraints), so trusting it
vouches for no public site. Keep {key} private."""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.gateway.tls", description=__doc__)
    ap.add_argument("--dir", type=Path, default=None, help="where the files live")
    ap.add_argument("--name", action="append", default=[], help="another host name to include")
    ap.add_argument("--port", type=int, default=8443, help="the https port, for the URLs shown")
    args = ap.parse_args(argv)
    issued = ensure(args.dir, args.name)
    state = "made" if issued.made_ca else "kept"
    print(f"certificate authority ({state}): {issued.ca_cert}")
    print(f"server certificate ({'made' if issued.made_cert else 'kept'}): {issued.cert}")
    print(f"  names: {', '.join(issued.names)}")
    print(f"  addresses: {', '.join(map(str, issued.addresses))}")
    print("open from other devices: " + "  ".join(urls(issued, args.port)))
    print(TRUST_HELP.format(ca=issued.ca_cert, port=args.port, key=issued.dir / "ca.key"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
