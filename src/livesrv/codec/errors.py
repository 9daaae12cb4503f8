"""The two error kinds of the codecs (after h11): the peer's fault versus ours.

Any byte string fed to a decoder either parses or raises a :class:`ProtocolError` subclass; anything else
escaping a codec is a bug in livesrv. Servers catch ``ProtocolError`` and close that one connection.
"""


class ProtocolError(Exception):
    """The remote peer sent bytes that violate the protocol."""


class AMF0Error(ProtocolError):
    """Malformed AMF0 data."""


class FLVError(ProtocolError):
    """Malformed FLV data."""


class HandshakeError(ProtocolError):
    """Malformed or unsupported RTMP handshake."""


class ChunkError(ProtocolError):
    """Malformed RTMP chunk stream (bad header, lying length, unknown chunk stream...)."""


class RTMPCommandError(ProtocolError):
    """An RTMP command or control message that cannot be understood."""
