"""Certificates for the TLS tests, made by the real ``openssl`` command: self-signed pairs, and a chain (a root CA,
an intermediate CA, a server certificate) as a CA would issue it. Plus TLS clients that do not verify (as ffmpeg's
``-tls_verify 0`` and chromium's ``--ignore-certificate-errors``) and tell which certificate they were shown."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import require_tool

NAMES = "DNS:localhost,IP:127.0.0.1"


def _openssl(*args: str) -> None:
    subprocess.run([require_tool("openssl"), *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the (first) certificate's DER, as :func:`peer_fingerprint` reports it."""
        text = self.cert.read_text()
        start = text.index("-----BEGIN CERTIFICATE-----")
        end = text.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(text[start:end] + "\n")).hexdigest()


def self_signed_pair(directory: Path, name: str, cn: str = "localhost") -> Pair:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", f"/CN={cn}", "-addext", f"subjectAltName={NAMES}", "-keyout", str(key), "-out", str(cert))
    return Pair(cert, key)


@dataclass(frozen=True)
class Chain:
    root: Path  # what a client trusts
    chain: Pair  # the server's certificate, then the intermediate's; the server's key


def ca_chain(directory: Path) -> Chain:
    """root CA -> intermediate CA -> server (localhost, 127.0.0.1). A client that trusts the root alone can
    verify the server only if the server sends the intermediate too."""
    directory.mkdir(parents=True, exist_ok=True)
    d = str(directory)
    ext_ca = directory / "ca.ext"
    ext_ca.write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    ext_leaf = directory / "leaf.ext"
    ext_leaf.write_text(f"basicConstraints=critical,CA:FALSE\nsubjectAltName={NAMES}\n"
                        "extendedKeyUsage=serverAuth\n")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", "/CN=test root CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", f"{d}/root.key", "-out", f"{d}/root.crt")
    for name, cn, signer, ext in (("inter", "test intermediate CA", "root", ext_ca), ("leaf", "localhost", "inter", ext_leaf)):
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-subj", f"/CN={cn}", "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr")
        _openssl("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/{signer}.crt", "-CAkey", f"{d}/{signer}.key",
                 "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", f"{d}/{name}.crt")
    chain = directory / "chain.crt"
    chain.write_text((directory / "leaf.crt").read_text() + (directory / "inter.crt").read_text())
    return Chain(directory / "root.crt", Pair(chain, directory / "leaf.key"))


def insecure_context() -> ssl.SSLContext:
    """A client that takes any certificate (self-signed ones included)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_fingerprint(writer: asyncio.StreamWriter) -> str:
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest()


async def tls_connect(port: int, ctx: ssl.SSLContext | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx or insecure_context(),
                                                          server_hostname="localhost"), 10)
