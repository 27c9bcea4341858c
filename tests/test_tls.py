"""HTTPS for the local network (services/gateway/tls.py, the gateway's TLS settings).

Invariants protected:
- the local authority is made once and kept; the server certificate it signs names this
  machine's names and the given addresses and verifies against it as a browser would (chain,
  host name, IP address, server use); it is reissued only when a name or address is missing or
  it nears its end, always by the same authority (devices trust it once);
- the authority cannot vouch for a public name or address (name constraints), so trusting it on
  a phone trusts no public site;
- the private keys are readable by their owner only;
- the gateway refuses to start with a missing, unreadable or mismatched certificate or key,
  saying which, and refuses to listen beyond loopback without an agents API key.
The browser over the veth pair: tests/test_browser.py (`..._over_https`).
"""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from pydantic import ValidationError

from services.gateway import tls
from services.gateway.settings import GatewaySettings

LAN = ipaddress.ip_address("192.168.1.20")
LOOP = ipaddress.ip_address("127.0.0.1")


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _verify(issued: tls.Issued, subject: x509.DNSName | x509.IPAddress) -> None:
    store = Store([_load(issued.ca_cert)])
    verifier = PolicyBuilder().store(store).build_server_verifier(subject)
    verifier.verify(_load(issued.cert), [])


def test_the_authority_signs_a_certificate_browsers_accept_for_this_machine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    issued = tls.ensure(tmp_path / "tls", names=["box.home.arpa"], addresses=[LAN, LOOP])
    assert issued.made_ca and issued.made_cert
    host = tls.host_names()[0]
    for name in (host, f"{host}.local", "localhost", "box.home.arpa"):
        _verify(issued, x509.DNSName(name))
    for addr in (LAN, LOOP):
        _verify(issued, x509.IPAddress(addr))
    with pytest.raises(VerificationError):
        _verify(issued, x509.IPAddress(ipaddress.ip_address("192.168.1.21")))
    for key in (issued.key, issued.dir / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert tls.urls(issued, 8443)[0] == "https://192.168.1.20:8443/"


def test_kept_and_reissued_by_the_same_authority(tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = tls.ensure(tmp_path, addresses=[LAN])
    ca, cert = first.ca_cert.read_bytes(), first.cert.read_bytes()
    again = tls.ensure(tmp_path, addresses=[LAN])
    assert not (again.made_ca or again.made_cert)
    assert again.cert.read_bytes() == cert
    moved = ipaddress.ip_address("10.0.0.7")  # DHCP gave the box a new address
    renewed = tls.ensure(tmp_path, addresses=[moved])
    assert renewed.made_cert and not renewed.made_ca
    assert renewed.ca_cert.read_bytes() == ca and renewed.cert.read_bytes() != cert
    _verify(renewed, x509.IPAddress(moved))


def test_the_authority_cannot_vouch_for_a_public_site(tmp_path) -> None:  # type: ignore[no-untyped-def]
    issued = tls.ensure(tmp_path, addresses=[LAN])
    ca = _load(issued.ca_cert)
    loaded = tls._load_ca(tmp_path)
    assert loaded is not None
    public = ipaddress.ip_address("93.184.216.34")
    tls._issue(tmp_path, ca, loaded[1], ["example.com"], [public])  # what a stolen key would do
    with pytest.raises(VerificationError):
        _verify(issued, x509.DNSName("example.com"))
    with pytest.raises(VerificationError):
        _verify(issued, x509.IPAddress(public))
    # public addresses of the machine are left out of its own certificate
    again = tls.ensure(tmp_path / "b", addresses=[LAN, public])
    assert again.addresses == [LAN]


def _settings(**kw: object) -> GatewaySettings:
    return GatewaySettings(**kw)  # type: ignore[arg-type]


def test_the_gateway_says_what_is_wrong_with_its_certificate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    issued = tls.ensure(tmp_path / "a", addresses=[LAN])
    other = tls.ensure(tmp_path / "b", addresses=[LAN])
    keyed = {"api_keys": ["k"]}
    ok = _settings(tls_cert=issued.cert, tls_key=issued.key, **keyed)
    assert ok.listen_hosts() == ["127.0.0.1", "0.0.0.0"]
    cases = [
        ({"tls_cert": tmp_path / "nope.crt", "tls_key": issued.key}, "VA_TLS_CERT=.*no such file"),
        ({"tls_cert": issued.cert}, "set both or neither"),
        ({"tls_cert": issued.cert, "tls_key": other.key}, "not a PEM certificate chain and its"),
        ({"tls_cert": issued.key, "tls_key": issued.key}, "not a PEM certificate chain"),
        ({"tls_cert": issued.cert, "tls_key": tmp_path}, "VA_TLS_KEY=.*no such file"),
    ]
    for kw, message in cases:
        with pytest.raises(ValidationError, match=message):
            _settings(**kw, **keyed)


def test_listening_beyond_this_machine_needs_an_api_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    issued = tls.ensure(tmp_path, addresses=[LAN])
    files = {"tls_cert": issued.cert, "tls_key": issued.key}
    with pytest.raises(ValidationError, match="0.0.0.0 .* needs VA_API_KEYS"):
        _settings(**files)
    with pytest.raises(ValidationError, match="needs VA_API_KEYS"):
        _settings(http_host="0.0.0.0")
    _settings(**files, tls_host="127.0.0.1")  # https on loopback only: no key needed
    _settings(**files, api_keys=["k"])
    _settings(**files, open_agents_api=True)
    _settings()  # plain http on localhost, the default
