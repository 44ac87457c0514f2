"""Certificates for a loopback TLS listener: a private CA, then a broker certificate it signs (openssl)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from scripts.devstack.errors import StackError

# Short-lived on purpose: a local stack is made again at each start.
VALID_DAYS = 30
# The names clients use to reach a local broker; hostname verification checks them.
BROKER_NAMES = "subjectAltName=DNS:localhost,IP:127.0.0.1"
_CURVE = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")


def _openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise StackError("'openssl' is not on PATH: the SASL_SSL stack makes its certificates with it")
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StackError(f"openssl {args[0]} failed: {done.stderr.strip()[-300:]}")


def make_ca(folder: Path, name: str) -> Path:
    """A self-signed CA as `<folder>/<name>.pem` (its key beside it, mode 0600); returns the certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl(
        "req", "-x509", *_CURVE, "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(VALID_DAYS),
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    key.chmod(0o600)
    return cert


def make_broker_keystore(folder: Path, ca: Path) -> Path:
    """The broker's key and certificate chain in one PEM file (Kafka's PEM keystore), signed by `ca`."""
    key, cert, keystore = folder / "broker.key", folder / "broker.pem", folder / "broker-keystore.pem"
    _openssl(
        "req", "-x509", *_CURVE, "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(VALID_DAYS),
        "-subj", "/CN=localhost", "-CA", str(ca), "-CAkey", str(ca.with_suffix(".key")),
        "-addext", BROKER_NAMES, "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "extendedKeyUsage=serverAuth",
    )  # fmt: skip
    keystore.touch(mode=0o600)
    keystore.write_text(key.read_text() + cert.read_text() + ca.read_text())
    key.unlink()
    return keystore
