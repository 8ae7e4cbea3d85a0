"""MqttBus through a broker that wants a password, and through one that speaks TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestrator.mosquitto import Mosquitto
from smets1.broker_url import parse_broker_url
from smets1.errors import BusError
from smets1.mqtt import MqttBus

pytestmark = pytest.mark.mqtt


async def _round_trip(url: str) -> None:
    broker = parse_broker_url(url)
    pub, sub = MqttBus(broker, "sec-pub"), MqttBus(broker, "sec-sub")
    got: list[bytes] = []
    arrived = asyncio.Event()

    def on_frame(topic: str, payload: bytes) -> None:
        got.append(payload)
        arrived.set()

    sub.subscribe("smets1/s/down/0", on_frame)
    await sub.start()
    await pub.start()
    try:
        pub.publish("smets1/s/down/0", b"\x01frame")
        await asyncio.wait_for(arrived.wait(), 5)
        assert got == [b"\x01frame"]
    finally:
        await pub.close()
        await sub.close()


async def test_user_and_password_from_the_url(mosquitto_exe: str, tmp_path: Path) -> None:
    mosq = Mosquitto(tmp_path / "m", exe=mosquitto_exe, users={"fleet": "s3cr@t:pw"})
    await asyncio.to_thread(mosq.start)
    try:
        await _round_trip(f"mqtt://fleet:s3cr%40t%3Apw@127.0.0.1:{mosq.port}")
        wrong = MqttBus(
            parse_broker_url(f"mqtt://fleet:nope@127.0.0.1:{mosq.port}"),
            "sec-wrong",
            connect_timeout_seconds=1.0,
        )
        with pytest.raises(BusError, match="cannot reach"):
            await wrong.start()
        await wrong.close()
    finally:
        await asyncio.to_thread(mosq.stop)


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, as PEM files."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smets1 test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_mqtts_with_a_ca_file(mosquitto_exe: str, tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path / "pki")
    mosq = Mosquitto(tmp_path / "m", exe=mosquitto_exe, tls=(ca, cert, key))
    await asyncio.to_thread(mosq.start)
    try:
        await _round_trip(f"mqtts://127.0.0.1:{mosq.port}?ca={ca}")
        # Without the CA the server's certificate is not trusted.
        untrusted = MqttBus(
            parse_broker_url(f"mqtts://127.0.0.1:{mosq.port}"),
            "sec-untrusted",
            connect_timeout_seconds=1.0,
        )
        with pytest.raises(BusError, match="cannot reach"):
            await untrusted.start()
        await untrusted.close()
    finally:
        await asyncio.to_thread(mosq.stop)
