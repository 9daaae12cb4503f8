"""TLS on the listeners: RTMPS, HTTPS (the HTTP server: HTTP-FLV, WSS-FLV, HLS, HTTP-TS, the pages) and the API
over HTTPS, each beside its plain listener, with SRS's directives (``rtmps { }``, ``http_server { https { } }``,
``http_api { https { } }``).

The standard library's ``ssl`` does the TLS, through the event loop's own TLS layer (uvloop's, in C, or
asyncio's): a TLS listener accepts each connection itself and hands the socket to
``loop.connect_accepted_socket(ssl=..., ssl_handshake_timeout=...)``, which returns once the handshake is done
(the listener's protocol, ``RTMPConnection`` or ``HTTPConnection``, then has a transport like any other) or
raises why it failed. Why not ``create_server(ssl=...)``: there a handshake that fails (a plain-text client on
a TLS port, garbage, a stalled or vanished client) is dropped without a word unless the loop runs in debug
mode; here every failure closes the connection with one logged reason (``event=tls-handshake-failed
listener=rtmps ip=... reason="..."``), and a handshake under way holds a slot of ``max_connections`` like any
connection. (``loop.start_tls`` after a plain accept is no better: uvloop starts reading a new connection after
``connection_made`` even when that paused it, so a client's first bytes could reach the wrong protocol.)

Certificates. One :class:`TlsCertificate` per listener holds the ``ssl.SSLContext`` built from the ``cert``
(PEM, a chain: the server's certificate first) and ``key`` files. A reload (SIGHUP, the raw API) builds a new
context from the files and swaps it in: the next handshake uses it, connections already open keep theirs (a TLS
session keeps the certificate it was made with). A pair that cannot be used is refused with a message that
says which file and why: at start the server does not start, at a reload the old certificate stays.

Settings: TLS 1.2 and 1.3 only, the ``ssl`` module's default ciphers for servers (forward secrecy, AEAD), no
compression, no client-initiated renegotiation. The handshake must finish within the listener's limit
(``rtmp_limits { handshake_timeout }`` for RTMPS, ``http_limits { header_timeout }`` for HTTPS).

``--self-signed`` (the command line, for testing only) makes a self-signed certificate instead
(:func:`self_signed`): a certificate whose issuer is its subject is logged as a warning at every start and reload.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import ipaddress
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livesrv.config import Config, TlsListenerConfig, default_hls_path, listen_addresses
from livesrv.log import describe_error, event
from livesrv.servers.limits import ConnectionBudget

log = logging.getLogger("livesrv.tls")

#: The TLS listeners' names (the ready line, the addresses the pages learn, log lines).
RTMPS, HTTPS, API_HTTPS = "rtmps", "https", "api_https"

#: Lines per second a listener logs about failed handshakes; past it they are counted, and the count is logged
#: once the second is over (a scan or a flood must not write a line per connection).
FAILURE_LINES_PER_SECOND = 20

#: The organization name of the certificates ``--self-signed`` makes (how they are recognized in the logs).
SELF_SIGNED_ORG = "livesrv self-signed certificate, for testing only"
#: Days a generated certificate is valid; one is made again when less than a day is left.
SELF_SIGNED_DAYS = 30

#: OpenSSL's reasons for a client that does not speak TLS at all.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                      "WRONG_SSL_VERSION", "BAD_PACKET_LENGTH", "BAD_RECORD_TYPE", "UNEXPECTED_RECORD",
                      "RECORD_LENGTH_MISMATCH", "ENCRYPTED_LENGTH_TOO_LONG"})


class TlsError(Exception):
    """A certificate or key that cannot be used; the message names the file and what is wrong with it."""


def tls_blocks(config: Config) -> dict[str, TlsListenerConfig]:
    """Every TLS listener's block, by listener name."""
    return {RTMPS: config.rtmps, HTTPS: config.http_server.https, API_HTTPS: config.http_api.https}


def handshake_timeout(config: Config, name: str) -> float:
    """Seconds a client has to finish the TLS handshake: the limit of what it must send next."""
    return config.rtmp_limits.handshake_timeout if name == RTMPS else config.http_limits.header_timeout


# ------------------------------------------------------------------------------------------- certificates


def _read(path: str, what: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as exc:
        raise TlsError(f"{what} {path}: {describe_error(exc).split(': ')[0]}") from None
    return data.decode("latin-1")


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for the ``cert`` (chain) and ``key`` PEM files; :class:`TlsError` when they cannot serve."""
    cert_text = _read(cert, "cert")
    key_text = _read(key, "key")
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise TlsError(f"cert {cert}: no PEM certificate in it (want -----BEGIN CERTIFICATE-----)")
    if "PRIVATE KEY-----" not in key_text:
        raise TlsError(f"key {key}: no PEM private key in it (want -----BEGIN PRIVATE KEY-----)")
    if "ENCRYPTED" in key_text:
        raise TlsError(f"key {key}: the private key is encrypted with a passphrase, which livesrv cannot be given; "
                       f"decrypt it: openssl pkey -in {key} -out {key}.plain")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    try:
        # A password callback, so that OpenSSL never asks for a passphrase on the terminal.
        ctx.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        reason = exc.reason or ""
        if reason in ("KEY_VALUES_MISMATCH", "X509_CHECK_PRIVATE_KEY"):
            raise TlsError(f"key {key} does not belong to cert {cert} (a key and certificate of different pairs)") from None
        raise TlsError(f"cert {cert} / key {key}: cannot be loaded ({reason or exc})") from None
    except OSError as exc:
        raise TlsError(f"cert {cert} / key {key}: {describe_error(exc)}") from None
    return ctx


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What is logged about a certificate (the first of its file): names, validity, whether self-signed."""

    subject: str
    names: tuple[str, ...]
    not_after: float  # seconds since the epoch
    self_signed: bool
    ours: bool  # made by --self-signed


def cert_info(path: str) -> CertInfo | None:
    """The first certificate of ``path``, decoded by the ``ssl`` module; None when it cannot be decoded."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)  # CPython's, since 2.7
    if decode is None:
        return None
    try:
        d = decode(path)
    except (ssl.SSLError, OSError, ValueError):
        return None

    def flat(name: Any) -> dict[str, str]:
        return {k: v for rdn in name or () for k, v in rdn}

    subject, issuer = flat(d.get("subject")), flat(d.get("issuer"))
    try:
        not_after = ssl.cert_time_to_seconds(d["notAfter"])
    except (KeyError, ValueError):
        not_after = 0.0
    return CertInfo(
        subject=subject.get("commonName") or subject.get("organizationName") or "",
        names=tuple(v for _, v in d.get("subjectAltName", ())),
        not_after=not_after,
        self_signed=subject == issuer,
        ours=subject.get("organizationName") == SELF_SIGNED_ORG,
    )


class TlsCertificate:
    """One listener's certificate: the context new handshakes use, swapped by :meth:`load`."""

    def __init__(self, name: str, cert: str, key: str) -> None:
        self.name = name
        self.cert = cert
        self.key = key
        self.context = self._build(cert, key)
        self.loaded = time.time()

    def _build(self, cert: str, key: str) -> ssl.SSLContext:
        ctx = server_context(cert, key)
        _log_cert(self.name, cert)
        return ctx

    def load(self, cert: str, key: str) -> bool:
        """Read the files again (a reload): new handshakes get them, open connections keep what they have. A
        pair that cannot serve is logged and changes nothing; returns whether the new pair is in use."""
        try:
            ctx = self._build(cert, key)
        except TlsError as exc:
            event(log, "tls-reload-failed", logging.ERROR, listener=self.name,
                  reason=f"{exc}; the certificate loaded before is still used")
            return False
        self.context, self.cert, self.key, self.loaded = ctx, cert, key, time.time()
        return True


def _log_cert(name: str, path: str) -> None:
    info = cert_info(path)
    if info is None:
        event(log, "tls-cert", listener=name, cert=path)
        return
    expires = datetime.datetime.fromtimestamp(info.not_after, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    event(log, "tls-cert", listener=name, cert=path, subject=info.subject, names=",".join(info.names) or "-",
          expires=expires)
    if info.not_after and info.not_after < time.time():
        event(log, "tls-cert-expired", logging.ERROR, listener=name, cert=path, expires=expires,
              reason="clients refuse an expired certificate: renew it and reload")
    elif info.self_signed:
        what = ("generated by --self-signed" if info.ours else "self-signed")
        event(log, "tls-cert-self-signed", logging.WARNING, listener=name, cert=path,
              reason=f"{what}: for testing only, browsers and players refuse it unless told to trust it; "
                     "use a certificate from a CA in production")


# --------------------------------------------------------------------------------------- self-signed


def self_signed_dir() -> str:
    """Where ``--self-signed`` keeps its certificate: beside the embedded defaults' HLS, in the per-user cache."""
    return os.path.join(os.path.dirname(default_hls_path()), "tls")


def _self_signed_names(extra: Iterable[str] = ()) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1"]
    for name in (socket.gethostname(), *extra):
        if name and name not in names and name not in ("0.0.0.0", "::"):
            names.append(name)
    return names


def self_signed(directory: str | None = None, names: Iterable[str] = ()) -> str:
    """For testing only: the path of a PEM file holding a private key and a self-signed certificate for
    localhost, 127.0.0.1, ::1, this host's name and ``names``; made at the first call (with the ``cryptography``
    package, else the ``openssl`` command) and used again while it is valid for more than a day and names them.
    One file (key and certificate together) replaced atomically, so a reader never sees one without the other."""
    directory = directory or self_signed_dir()
    wanted = _self_signed_names(names)
    path = os.path.join(directory, "self-signed.pem")
    info = cert_info(path) if os.path.exists(path) else None
    if (info is not None and info.ours and info.not_after > time.time() + 86400
            and set(wanted) <= {_normal(n) for n in info.names}):
        try:
            server_context(path, path)
            return path
        except TlsError:
            pass
    os.makedirs(directory, mode=0o700, exist_ok=True)
    pem = _generate_cryptography(wanted)
    if pem is None:
        pem = _generate_openssl(wanted)
    fd, tmp = tempfile.mkstemp(prefix=".self-signed-", suffix=".pem", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp: mode 0600, as a private key's file should be
            f.write(pem)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    event(log, "tls-self-signed-made", logging.WARNING, cert=path, names=",".join(wanted),
          reason="a self-signed certificate, made for testing only")
    return path


def _normal(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _generate_cryptography(names: list[str]) -> bytes | None:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return None
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, SELF_SIGNED_ORG),
                         x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
            + cert.public_bytes(serialization.Encoding.PEM))


def _generate_openssl(names: list[str]) -> bytes:
    exe = shutil.which("openssl")
    if exe is None:
        raise TlsError("--self-signed needs the Python package cryptography or the openssl command "
                       "(apt-get install openssl)")
    alt = ",".join(("IP:" if _is_ip(n) else "DNS:") + n for n in names)
    with tempfile.TemporaryDirectory(prefix="livesrv-tls-") as tmp:
        key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
        try:
            subprocess.run(
                [exe, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-days", str(SELF_SIGNED_DAYS), "-subj", f"/O={SELF_SIGNED_ORG}/CN={names[0]}",
                 "-addext", f"subjectAltName={alt}", "-addext", "basicConstraints=critical,CA:FALSE",
                 "-keyout", key, "-out", cert],
                check=True, capture_output=True, timeout=60,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            raise TlsError(f"openssl could not make a self-signed certificate: {exc} "
                           f"{detail.decode(errors='replace').strip()}") from None
        return Path(key).read_bytes() + Path(cert).read_bytes()


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------- accepting TLS


def describe_handshake_error(exc: BaseException | None, timeout: float) -> tuple[str, int]:
    """Why a handshake failed, as the logged reason, and the level to log it at."""
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in ("HTTP_REQUEST", "HTTPS_PROXY_REQUEST"):
            return "plain HTTP on a TLS port (SSL HTTP_REQUEST): use https://", logging.WARNING
        if reason in _NOT_TLS:
            return f"not TLS: plain-text or garbage bytes on a TLS port (SSL {reason})", logging.WARNING
        if reason in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "VERSION_TOO_LOW"):
            return f"the client offers no TLS version from 1.2 on (SSL {reason})", logging.WARNING
        if reason == "NO_SHARED_CIPHER":
            return "no cipher in common with the client (SSL NO_SHARED_CIPHER)", logging.WARNING
        if "ALERT" in reason:
            return (f"the client ended the handshake with an alert (SSL {reason}): it does not trust the "
                    "certificate?", logging.INFO)
        return f"TLS handshake failed (SSL {reason or exc})", logging.WARNING
    if isinstance(exc, (ConnectionAbortedError, TimeoutError, asyncio.TimeoutError)):
        return f"TLS handshake not done after {timeout:g}s", logging.INFO
    if exc is None or isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError)):
        return ("client closed the connection during the TLS handshake (a port check, or a client that does not "
                "trust the certificate)", logging.INFO)
    return f"TLS handshake failed: {describe_error(exc)}", logging.WARNING


class HandshakeFailures:
    """The log of one listener's failed handshakes: one line per connection, at most
    :data:`FAILURE_LINES_PER_SECOND` a second, the rest counted and logged as one line after the second."""

    def __init__(self, name: str, per_second: int = FAILURE_LINES_PER_SECOND,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.per_second = per_second
        self.total = 0
        self._clock = clock
        self._window = -float("inf")
        self._lines = 0
        self._suppressed = 0
        self._handle: asyncio.TimerHandle | None = None

    def failed(self, ip: str, reason: str, level: int) -> None:
        self.total += 1
        now = self._clock()
        if now - self._window >= 1.0:
            self._flush()
            self._window, self._lines = now, 0
        if self._lines < self.per_second:
            self._lines += 1
            event(log, "tls-handshake-failed", level, listener=self.name, ip=ip, reason=reason)
            return
        self._suppressed += 1
        if self._handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._handle = loop.call_later(max(0.0, self._window + 1.0 - now), self._flush)

    def _flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._suppressed:
            count, self._suppressed = self._suppressed, 0
            event(log, "tls-handshake-failed", logging.WARNING, listener=self.name, suppressed=count,
                  reason=f"{count} more failed handshakes in a second, not logged one by one")

    def close(self) -> None:
        self._flush()


class TlsEndpoint:
    """One TLS listener's state: its certificate, its handshake timeout and failure log, the handshakes under
    way. :meth:`listen` opens a listening socket whose connections are handed to ``factory``'s protocol once
    their handshake is done."""

    def __init__(self, name: str, certificate: TlsCertificate, timeout: Callable[[], float],
                 budget: ConnectionBudget) -> None:
        self.name = name
        self.certificate = certificate
        self.timeout = timeout  # read at each accept: a reload applies to the next handshake
        self.budget = budget
        self.failures = HandshakeFailures(name)
        self.pending: set[asyncio.Task[None]] = set()
        self.listeners: list[TlsListener] = []
        self.handshakes = 0  # completed, since start

    async def listen(self, factory: Callable[[], asyncio.Protocol], host: str | None, port: int,
                     reuse_port: bool = False) -> TlsListener:
        listener = TlsListener(self, factory, _bind(host, port, reuse_port))
        self.listeners.append(listener)
        listener.start()
        return listener

    def close(self) -> None:
        """Stop accepting and abort the handshakes under way (the server is closing)."""
        for listener in self.listeners:
            listener.close()
        for task in tuple(self.pending):
            task.cancel()
        self.failures.close()

    async def handshake(self, sock: socket.socket, ip: str, factory: Callable[[], asyncio.Protocol]) -> None:
        """One accepted connection: the server side of the TLS handshake, then ``factory``'s protocol has it.
        The connection holds a slot of ``max_connections`` from its accept; the protocol's ``connection_made``
        takes that slot over (it acquires its own, so this one is given back just before)."""
        loop = asyncio.get_running_loop()
        timeout = self.timeout()
        held = [True]

        def release() -> None:
            if held[0]:
                held[0] = False
                self.budget.release()

        def made_factory() -> asyncio.Protocol:
            protocol = factory()
            connection_made = protocol.connection_made

            def handed_over(transport: asyncio.BaseTransport) -> None:
                del protocol.connection_made  # (the class's again)
                release()
                connection_made(transport)

            protocol.connection_made = handed_over  # type: ignore[method-assign]
            return protocol

        made = False
        try:
            transport, _ = await loop.connect_accepted_socket(made_factory, sock, ssl=self.certificate.context,
                                                              ssl_handshake_timeout=timeout)
            made = not held[0]
            if not made or transport.is_closing():
                raise ConnectionResetError("closed during the handshake")  # (EOF: no error from the TLS layer)
        except asyncio.CancelledError:
            release()
            _close(sock)
            raise
        except Exception as exc:  # noqa: BLE001 - whatever ended the handshake ends this connection only
            release()
            _close(sock)
            if not made:
                reason, level = describe_handshake_error(exc, timeout)
                self.failures.failed(ip, reason, level)
            return
        self.handshakes += 1


def _close(sock: socket.socket) -> None:
    """Drop a connection whose handshake failed: a reset, nothing more to send or wait for."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


#: Connections the kernel queues for a TLS listener before they are accepted (asyncio's default is 100; a TLS
#: listener accepts in a task, so a burst of new viewers waits here a little longer).
BACKLOG = 511
#: accept() errors that mean the process is short of descriptors or memory: wait, then accept again.
_ACCEPT_PAUSE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _bind(host: str | None, port: int, reuse_port: bool = False) -> list[socket.socket]:
    """Listening sockets for ``host:port`` (as ``loop.create_server`` makes them: SO_REUSEADDR, IPv6 only on
    IPv6 sockets, non-blocking; SO_REUSEPORT with ``reuse_port``: the workers of one host share the port)."""
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address {addr!r}: "
                                         f"{exc.strerror.lower() if exc.strerror else exc}") from None
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


class TlsListener:
    """The listening sockets of one TLS address, each accepting in a task (what ``RTMPServer`` and
    ``HTTPServer`` keep of it is what they keep of an asyncio server: ``sockets``, ``close``, ``wait_closed``)."""

    def __init__(self, endpoint: TlsEndpoint, factory: Callable[[], asyncio.Protocol],
                 socks: list[socket.socket]) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.sockets = socks
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._accept(sock), name=f"{self.endpoint.name}-accept")
                       for sock in self.sockets]

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        while True:
            try:
                conn, addr = await loop.sock_accept(sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                if exc.errno in _ACCEPT_PAUSE:
                    event(log, "accept-error", logging.ERROR, listener=ep.name, reason=describe_error(exc))
                    await asyncio.sleep(1.0)
                continue  # (ECONNABORTED and the like: that one connection)
            ip = addr[0] if isinstance(addr, tuple) else "?"
            if not ep.budget.try_acquire():  # a handshake holds a descriptor like any connection
                _close(conn)
                ep.budget.reject(ep.name, ip)
                continue
            conn.setblocking(False)
            task = loop.create_task(ep.handshake(conn, ip, self.factory))
            ep.pending.add(task)
            task.add_done_callback(ep.pending.discard)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


# ------------------------------------------------------------------------------------------- viewers

#: The largest piece of one write a TLS viewer's transport is given at once (see :func:`viewer_transport`).
#: Above a 350 ms batch of an 2-3 Mbit/s stream (~100 KB), so a batch still goes out in one write.
TLS_WRITE_PIECE = 128 * 1024


class _PiecewiseWrites:
    """A TLS connection's transport as the hub's fan-out sees it (``write`` and ``get_write_buffer_size``):
    a large write, the GOP burst a viewer gets when it starts, goes to the TLS layer in pieces (memoryviews
    of the same bytes: no copy). The loop's TLS layer encrypts a write into a memory buffer that keeps its
    largest size for the life of the connection: one 0.5 MB burst would cost every TLS viewer 0.5 MB for
    as long as it watches."""

    __slots__ = ("transport",)

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def write(self, data: bytes) -> None:
        if len(data) <= TLS_WRITE_PIECE:
            self.transport.write(data)
            return
        view = memoryview(data)
        for i in range(0, len(data), TLS_WRITE_PIECE):
            self.transport.write(view[i:i + TLS_WRITE_PIECE])

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def viewer_transport(transport: Any) -> Any:
    """What a live viewer's hub ``Viewer`` writes to: the transport itself, or over TLS, one that gives the TLS
    layer large writes in pieces (:class:`_PiecewiseWrites`)."""
    info = getattr(transport, "get_extra_info", None)  # (any transport-like object will do, as for the hub)
    if info is not None and info("sslcontext") is not None:
        return _PiecewiseWrites(transport)
    return transport


# ------------------------------------------------------------------------------------------- the service


class TlsService:
    """The certificates of every enabled TLS listener, loaded at start (``TlsError`` when one cannot serve)
    and re-read by :meth:`reload`. ``self_signed``: the PEM file ``--self-signed`` made, used by every listener
    instead of its ``key`` and ``cert``."""

    def __init__(self, config: Config, budget: ConnectionBudget, self_signed: str | None = None) -> None:
        self.config = config
        self.budget = budget
        self.self_signed = self_signed
        self.endpoints: dict[str, TlsEndpoint] = {}
        for name, block in tls_blocks(config).items():
            if block.enabled:
                cert, key = self._files(block)
                self.endpoints[name] = TlsEndpoint(name, TlsCertificate(name, cert, key),
                                                   lambda n=name: handshake_timeout(self.config, n), budget)

    def _files(self, block: TlsListenerConfig) -> tuple[str, str]:
        if self.self_signed is not None:
            return self.self_signed, self.self_signed
        return block.cert, block.key

    def endpoint(self, name: str) -> TlsEndpoint | None:
        return self.endpoints.get(name)

    async def start(self, servers: dict[str, Any], reuse_port: bool = False) -> dict[str, list[tuple[str, int]]]:
        """Start each enabled TLS listener on its server (``RTMPServer`` or ``HTTPServer``, by listener name),
        beside that server's plain listener; returns the addresses bound."""
        blocks = tls_blocks(self.config)
        bound = {}
        for name, endpoint in self.endpoints.items():
            bound[name] = await servers[name].start(listen_addresses(blocks[name].listen), tls=endpoint,
                                                    reuse_port=reuse_port)
        return bound

    def reload(self, config: Config) -> None:
        """Re-read every listener's files (named by ``config``): new handshakes get them. A listener turned on
        or moved needs a restart (the caller says so); one turned off keeps serving until then."""
        self.config = config
        blocks = tls_blocks(config)
        for name, endpoint in self.endpoints.items():
            block = blocks[name]
            if not block.enabled:  # (turned off: it serves with what it has until the restart)
                continue
            cert, key = self._files(block)
            if endpoint.certificate.load(cert, key):
                event(log, "tls-reload", listener=name, cert=cert, key=key)

    def close(self) -> None:
        for endpoint in self.endpoints.values():
            endpoint.close()


def check_files(config: Config) -> list[str]:
    """Problems of the enabled TLS listeners' files, for ``livesrv -t`` (empty: every pair can serve)."""
    problems = []
    for name, block in tls_blocks(config).items():
        if block.enabled:
            try:
                server_context(block.cert, block.key)
            except TlsError as exc:
                problems.append(f"{name}: {exc}")
    return problems
