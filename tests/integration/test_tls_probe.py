"""TLS certificate days left, read from a real TLS handshake with a certificate made for the test."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from runbook.clients import http_probe
from sandbox.httpserver import Listener, Response


def make_cert(tmp_path, days: int):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def probe_tls_server(tmp_path, port: int, days: int, trust: bool):
    """Serve HTTPS with a certificate valid for `days` more days and probe it, trusting it or not."""
    cert_file, key_file = make_cert(tmp_path, days=days)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)

    async def handler(request):
        return Response.text("TokenForge")

    listener = Listener("127.0.0.1", port, handler, ssl_context=server_ctx)
    await listener.start()
    verify = ssl.create_default_context(cafile=str(cert_file)) if trust else True
    try:
        async with http_probe.make_client(2, verify=verify) as client:
            return await http_probe.probe(client, "fe", f"https://127.0.0.1:{port}/", deadline_s=5)
    finally:
        await listener.stop()


async def test_probe_reports_days_until_the_certificate_expires(tmp_path, unused_tcp_port):
    obs = await probe_tls_server(tmp_path, unused_tcp_port, days=10, trust=True)
    assert obs.error is None, obs.error
    assert obs.get("status") == 200
    assert 9.5 < obs.get("tls_days") < 10.5


async def test_an_untrusted_certificate_is_a_failed_probe_not_a_pass(tmp_path, unused_tcp_port):
    obs = await probe_tls_server(tmp_path, unused_tcp_port, days=30, trust=False)
    assert obs.error is not None and "CERTIFICATE_VERIFY_FAILED" in obs.error
