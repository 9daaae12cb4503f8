"""A sans-IO DVR recorder with SRS's knobs (``vhost { dvr { ... } }``): media packets in, file actions out.

The recorder never touches the disk or the clock (the wall clock is passed in for the path's time variables).
:meth:`DvrRecorder.feed` returns, in order, :class:`OpenFile` (a new file: its FLV header and onMetaData),
:class:`AppendFile` (the next tags) and :class:`CloseFile` (complete: the onMetaData ``duration`` and
``filesize`` to write back in place, then the file goes under its final name). The asyncio side
(:mod:`livesrv.servers.dvr`) performs them in a worker thread, in order.

Every file is FLV bytes while it is written; a path ending in ``.mp4`` is remuxed to MP4 when it closes (see
the servers side). So one writer serves both, and a recording cut off by a crash is always a playable FLV.

Rules:

* a file starts at a video keyframe (with the sequence headers and the publisher's metadata re-emitted first),
  or at the first audio frame of a stream that has no video; what comes before is dropped (a file that starts
  with inter frames shows garbage until the first keyframe);
* ``session``: one file per live period (publish to unpublish); ``segment``: a new file once the current one
  lasts ``dvr_duration``, at the next video keyframe when ``dvr_wait_keyframe`` is on (SRS's default), at the
  next frame otherwise; a stream without video is cut on an audio frame (SRS waits for a video keyframe that
  never comes, and never cuts an audio-only recording);
* ``time_jitter``: ``full`` and ``zero`` make each file start at 0 (the hub already removed the publisher's
  jitter and discontinuities, so both give the same result); ``off`` keeps the stream's timestamps;
* an onMetaData that comes while a file is open goes into it at its place in the stream, as a script tag
  stamped 0 (FFmpeg's FLV demuxer reads onMetaData stamped later as a subtitle packet, see
  ``media.gop``) without ``duration`` and ``filesize`` (they describe the publisher's file, not this one:
  the header's onMetaData keeps them, written back when the file closes); it is also the next file's
  header metadata. (SRS keeps only the first onMetaData of a file and drops later ones.)
"""

from __future__ import annotations

import posixpath
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from livesrv.codec import amf0, flv
from livesrv.codec.mpegts import FLVPacket
from livesrv.codec.errors import ProtocolError
from livesrv.names import has_bad_char

__all__ = [
    "AppendFile",
    "CloseFile",
    "DvrAction",
    "DvrRecorder",
    "OpenFile",
    "dvr_applies",
    "metadata_tag",
    "render_dvr_path",
]

#: What SRS appends to a ``dvr_path`` that names a directory (does not end in ``.flv`` or ``.mp4``).
DIRECTORY_FILE: Final = "/[stream].[timestamp].flv"
#: Tags of the open file kept at most between two calls before they go out as one append (bytes); they also go
#: out at each video keyframe, so a crash loses at most the current GOP.
APPEND_BYTES: Final = 64 * 1024

_DOUBLE = struct.Struct(">d")

AUDIO: Final = flv.AUDIO
VIDEO: Final = flv.VIDEO
DATA: Final = flv.SCRIPT


class MediaPacket(FLVPacket, Protocol):
    """What the recorder reads of a packet (``livesrv.media.packet.MediaPacket`` has it)."""

    @property
    def keyframe(self) -> bool: ...

    @property
    def sequence_header(self) -> bool: ...


# ------------------------------------------------------------------------------------------ config helpers


def dvr_applies(apply: tuple[str, ...] | list[str], app: str, stream: str) -> bool:
    """SRS's ``dvr_apply``: ``all``, or a list of ``app/stream`` names (exact)."""
    name = f"{app}/{stream}"
    return any(item == "all" or item == name for item in apply)


def render_dvr_path(template: str, *, vhost: str, app: str, stream: str, now: float) -> str:
    """The file name for a new recording: SRS's variables ``[vhost] [app] [stream] [timestamp]`` (ms since the
    epoch) and the local time ``[2006] [01] [02] [15] [04] [05] [999]`` (year, month, day, hour, minute,
    second, millisecond). A template that does not end in ``.flv``/``.mp4`` is a directory (SRS's rule).

    Raises ValueError when the name would leave the template's fixed directory (an app or stream made of
    ``..``) or holds a control character: names are checked where they enter, this is the second layer.
    """
    if not template.endswith((".flv", ".mp4")):
        template = template.rstrip("/") + DIRECTORY_FILE
    ms = int(now * 1000)
    tm = time.localtime(now)
    out = template.replace("[vhost]", vhost).replace("[app]", app).replace("[stream]", stream)
    for var, value in (
        ("[timestamp]", str(ms)),
        ("[2006]", f"{tm.tm_year:04d}"),
        ("[01]", f"{tm.tm_mon:02d}"),
        ("[02]", f"{tm.tm_mday:02d}"),
        ("[15]", f"{tm.tm_hour:02d}"),
        ("[04]", f"{tm.tm_min:02d}"),
        ("[05]", f"{tm.tm_sec:02d}"),
        ("[999]", f"{ms % 1000:03d}"),
    ):
        out = out.replace(var, value)
    root = posixpath.normpath(posixpath.dirname(template.split("[", 1)[0]) or ".")  # no name changes it
    norm = posixpath.normpath(out)
    if root == ".":
        inside = norm != ".." and not norm.startswith("../") and not posixpath.isabs(norm)
    else:
        inside = norm.startswith(root.rstrip("/") + "/")
    base = posixpath.basename(norm)
    if not inside or has_bad_char(out) or base.startswith(".") or not norm.endswith((".flv", ".mp4")):
        raise ValueError(f"dvr_path {template!r} gives {out!r}: not a file inside {root!r}")
    return "./" + norm if out.startswith("./") and not norm.startswith("../") else norm


def _without_file_fields(metadata: dict[str, Any]) -> amf0.ECMAArray:
    return amf0.ECMAArray({k: v for k, v in metadata.items() if k not in ("duration", "filesize")})


def metadata_tag(metadata: dict[str, Any]) -> tuple[bytes, int, int]:
    """An onMetaData script tag body whose first two entries are ``duration`` and ``filesize`` (0 for now),
    with the offsets in the body of their 8-byte doubles, to be written back when the file closes."""
    arr = amf0.ECMAArray(duration=0.0, filesize=0.0)
    for k, v in metadata.items():
        if k not in ("duration", "filesize"):
            arr[k] = v
    body = amf0.encode("onMetaData", arr)
    dur = len(amf0.encode("onMetaData")) + 1 + 4 + 2 + len("duration") + 1
    size = dur + 8 + 2 + len("filesize") + 1
    assert body[dur - 1] == 0 and body[size - 1] == 0
    return body, dur, size


# ------------------------------------------------------------------------------------------ actions


@dataclass(frozen=True, slots=True)
class OpenFile:
    """Start file ``fid`` (its final ``path``) with ``data`` (FLV header and onMetaData); ``patch_at``: where
    the onMetaData ``duration`` and ``filesize`` doubles are (what :class:`CloseFile` patches), for a file that
    must be finished early (a full disk keeps what is written, see the servers side)."""

    fid: int
    path: str
    data: bytes
    patch_at: tuple[int, int] = (0, 0)


@dataclass(frozen=True, slots=True)
class AppendFile:
    """The next whole tags of file ``fid``; ``duration``: the file's duration (seconds) once they are in."""

    fid: int
    data: bytes
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class CloseFile:
    """File ``fid`` is complete: write each ``(offset, bytes)`` patch in place, then publish it."""

    fid: int
    path: str
    duration: float  # seconds
    size: int  # bytes of the FLV written
    patches: tuple[tuple[int, bytes], ...] = field(default=())


DvrAction = OpenFile | AppendFile | CloseFile


# ------------------------------------------------------------------------------------------ recorder


class _File:
    __slots__ = ("fid", "path", "base", "last", "size", "dur_at", "size_at", "pending", "pending_size", "video")

    def __init__(self, fid: int, path: str, base: int, size: int, dur_at: int, size_at: int, video: bool) -> None:
        self.fid = fid
        self.path = path
        self.base = base  # stream timestamp that is 0 in the file (time_jitter full/zero)
        self.last = 0  # highest file timestamp written
        self.size = size
        self.dur_at = dur_at
        self.size_at = size_at
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.video = video  # the file has a video track (cuts wait for keyframes)


class DvrRecorder:
    """One live period's recording (see the module docstring)."""

    def __init__(
        self,
        *,
        path: str,
        vhost: str,
        app: str,
        stream: str,
        plan: str = "session",
        duration: float = 30.0,
        wait_keyframe: bool = True,
        time_jitter: str = "full",
        first_fid: int = 0,
    ) -> None:
        self.template = path
        self.vhost, self.app, self.stream = vhost, app, stream
        self.segment = plan == "segment"
        self.duration_ms = duration * 1000.0
        self.wait_keyframe = wait_keyframe
        self.rebase = time_jitter != "off"
        # Check the template with this stream's names once: a bad name fails here, not at the first keyframe.
        render_dvr_path(path, vhost=vhost, app=app, stream=stream, now=0.0)
        self._next_fid = first_fid
        self._file: _File | None = None
        self._metadata: dict[str, Any] = {}
        self._video_sh: MediaPacket | None = None
        self._audio_sh: MediaPacket | None = None
        self._expect_video = False  # a video sequence header or metadata's videocodecid came
        self._has_audio = False
        self.finished = False
        self.files = 0  # files opened
        self.bad_packets = 0

    @property
    def current_path(self) -> str | None:
        """The open file's name as rendered from the template (the file side may give it a ``-1`` variant)."""
        return self._file.path if self._file is not None else None

    @property
    def current_fid(self) -> int | None:
        return self._file.fid if self._file is not None else None

    @property
    def current_duration(self) -> float:
        return self._file.last / 1000.0 if self._file is not None else 0.0

    # -------------------------------------------------------------------------------- feeding

    def feed(self, pkt: MediaPacket, now: float) -> list[DvrAction]:
        """One packet of the live period (``now``: wall-clock seconds, for a new file's name)."""
        if self.finished:
            return []
        kind = pkt.kind
        if kind == DATA:
            self._on_data(pkt)
            return []
        if pkt.sequence_header:
            if kind == VIDEO:
                self._video_sh = pkt
                self._expect_video = True
            else:
                self._audio_sh = pkt
                self._has_audio = True
            f = self._file
            if f is not None:  # a new decoder configuration mid-file: it goes in, in order
                self._write(f, pkt, self._ts(f, pkt.timestamp))
            return []
        if kind == AUDIO:
            self._has_audio = True
        actions: list[DvrAction] = []
        f = self._file
        if f is None:
            if not self._may_start(pkt):
                return []
            f = self._open(pkt.timestamp, now, actions)
        elif self.segment and self._should_cut(f, pkt):
            actions.extend(self._close(f))
            f = self._open(pkt.timestamp, now, actions)
        elif f.pending and (f.pending_size >= APPEND_BYTES or pkt.keyframe and kind == VIDEO):
            actions.append(self._take(f))  # what a crash can lose: at most one GOP (or APPEND_BYTES)
        self._write(f, pkt, self._ts(f, pkt.timestamp))
        return actions

    def finish(self) -> list[DvrAction]:
        """The live period ended (or the recording was stopped): the open file is closed."""
        self.finished = True
        f = self._file
        return self._close(f) if f is not None else []

    # -------------------------------------------------------------------------------- rules

    def _may_start(self, pkt: MediaPacket) -> bool:
        if pkt.kind == VIDEO:
            self._expect_video = True
            return pkt.keyframe
        return not self._expect_video

    def _should_cut(self, f: _File, pkt: MediaPacket) -> bool:
        if self._ts(f, pkt.timestamp) < self.duration_ms:
            return False
        if not self.wait_keyframe:
            return True
        if f.video:
            return pkt.kind == VIDEO and pkt.keyframe
        return True  # no video: any frame starts a file

    def _ts(self, f: _File, ts: int) -> int:
        if not self.rebase:
            return ts
        out = ts - f.base
        return out if out > 0 else 0

    def _on_data(self, pkt: MediaPacket) -> None:
        try:
            values = amf0.decode_all(pkt.payload)
        except ProtocolError:
            self.bad_packets += 1
            return
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            self._metadata = dict(values[1])
            vc = self._metadata.get("videocodecid")
            if vc not in (None, 0, False, "", 0.0):
                self._expect_video = True
            f = self._file
            if f is not None:  # in the current file, at its place (and in the next file's header)
                self._write_tag(f, DATA, 0, amf0.encode("onMetaData", _without_file_fields(self._metadata)))

    # -------------------------------------------------------------------------------- files

    def _open(self, base: int, now: float, actions: list[DvrAction]) -> _File:
        path = render_dvr_path(self.template, vhost=self.vhost, app=self.app, stream=self.stream, now=now)
        video = self._expect_video
        meta = dict(self._metadata)
        body, dur_at, size_at = metadata_tag(meta)
        header = flv.file_header(self._has_audio or self._audio_sh is not None, video)
        tag_start = len(header) + flv.TAG_HEADER_SIZE
        data = header + flv.encode_tag(flv.SCRIPT, 0, body)
        fid = self._next_fid
        self._next_fid += 1
        self.files += 1
        f = self._file = _File(fid, path, base, len(data), tag_start + dur_at,
                               tag_start + size_at, video)
        actions.append(OpenFile(fid, path, data, (f.dur_at, f.size_at)))
        start = 0 if self.rebase else base
        for sh in (self._video_sh, self._audio_sh):
            if sh is not None:
                self._write(f, sh, start)
        return f

    def _write(self, f: _File, pkt: MediaPacket, ts: int) -> None:
        self._write_tag(f, pkt.kind, ts, pkt.payload)

    def _write_tag(self, f: _File, kind: int, ts: int, payload: bytes) -> None:
        tag = flv.encode_tag(kind, ts, payload)
        f.pending.append(tag)
        f.pending_size += len(tag)
        f.size += len(tag)
        if ts > f.last:
            f.last = ts

    def _duration(self, f: _File) -> float:
        start = 0 if self.rebase else f.base
        return max(0, f.last - start) / 1000.0

    def _take(self, f: _File) -> AppendFile:
        data = b"".join(f.pending)
        f.pending = []
        f.pending_size = 0
        return AppendFile(f.fid, data, self._duration(f))

    def _close(self, f: _File) -> list[DvrAction]:
        actions: list[DvrAction] = []
        if f.pending:
            actions.append(self._take(f))
        self._file = None
        duration = self._duration(f)
        patches = ((f.dur_at, _DOUBLE.pack(duration)), (f.size_at, _DOUBLE.pack(float(f.size))))
        actions.append(CloseFile(f.fid, f.path, duration, f.size, patches))
        return actions
