"""Publisher load generator: K RTMP publishers in ONE process, each streaming the source file in real time.

    .venv/bin/python bench/pubgen.py rtmp://127.0.0.1:1935/live --publishers 50 --duration 20

Publisher ``i`` publishes ``<url>/<prefix><i>`` (``bench000``, ``bench001``...). Each one streams the FLV
file's tags paced by their timestamps, looping with increasing timestamps (like ``ffmpeg -re -stream_loop -1
-c copy``): metadata (``@setDataFrame``) and the sequence headers once, then the frames of the file again and
again, each pass ``loop_ms`` later than the one before. Publishers start staggered (``--connect-rate`` per
second) and each keeps its own clock from its ``NetStream.Publish.Start``.

Why it stays cheap (``--client lean``, the default): the tags are the same for every publisher, so they are
serialized into RTMP chunks once per (chunk size, message stream id, pass over the file), fmt 0 headers
throughout (stateless, :func:`~livesrv.codec.rtmp.chunk.encode_message`), and every publisher writes
memoryview slices of those shared bytes: no per-publisher encoding. The RTMP conversation (handshake, connect,
releaseStream, FCPublish, createStream, publish, acknowledgements, pings) is livesrv's sans-IO
:class:`~livesrv.codec.rtmp.client.ClientSession`. Each publisher has one timer: it wakes up when its next
message is due and writes what is due.

What the server reads (``--style``): ``message`` (default) writes each message in one ``write`` with a chunk
size of 4096, as librtmp (OBS) does; ``ffmpeg`` announces a chunk size of 60000 and writes each chunk header
and each chunk separately with Nagle's algorithm on, as FFmpeg's own RTMP does (two writes per message). With
``--tick T`` a publisher wakes up at most every T seconds and writes everything due in one ``write`` (cheaper
for this process, fewer and larger reads for the server). ``--client package`` uses livesrv's package client
(:class:`livesrv.clients.rtmp.RtmpClient`: ``connect``, ``publish``, ``send_media`` per message, ``drain``)
instead: a write per message, encoded per publisher, to compare what it costs.

Back-pressure: a publisher whose transport holds more than ``--write-limit`` bytes (the server does not read
fast enough) stops writing until it drains, and falls behind real time, as an encoder on a blocking socket
would; how far behind each publisher is (lag) is reported. Prints one JSON object: how many publishers were
accepted, refused, disconnected, fell behind, what they sent in the window and the process's own CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import resource
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from livesrv.codec import amf0, flv
from livesrv.codec.errors import ProtocolError
from livesrv.codec.rtmp import messages as m
from livesrv.codec.rtmp.chunk import encode_message
from livesrv.codec.rtmp.client import ClientSession, CommandReply, HandshakeComplete, StatusEvent

monotonic = time.monotonic

#: A publisher counts as behind when its media time is more than this far behind its wall clock at the end.
BEHIND_MS = 1000
#: A message may be sent this much before its time (see :meth:`Pacer.due`).
EARLY_MS = 2.0
_SET_DATA_FRAME = amf0.encode("@setDataFrame")
_PUBLISH_FAILURES = frozenset(("NetStream.Publish.BadName", "NetStream.Publish.Denied",
                               "NetStream.Publish.Rejected"))


@dataclass(frozen=True)
class Style:
    """How a publisher cuts what it writes (what the server's reads look like)."""

    chunk_size: int
    split: bool  # each chunk header and each chunk's data in its own write (FFmpeg), else a write per message
    nodelay: bool  # TCP_NODELAY (asyncio's default); FFmpeg leaves Nagle on


STYLES = {"message": Style(4096, False, True), "ffmpeg": Style(60000, True, False)}


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ------------------------------------------------------------------------------------------- source


class Source:
    """The file's tags, and their RTMP serialization shared by every publisher.

    ``head``: the metadata and the sequence headers, sent once at timestamp 0. ``frames``: every other audio and
    video tag (end-of-sequence tags dropped), sent on every pass; pass ``n`` adds ``n * loop_ms`` to their
    timestamps, so each track keeps increasing across the loop point (``loop_ms`` is the longer track's end
    plus one frame of it, as ffmpeg's ``-stream_loop`` does).
    """

    def __init__(self, path: Path, keep_passes: int = 4) -> None:
        tags = [t for t in flv.FLVDecoder().feed(path.read_bytes()) if isinstance(t, flv.FLVTag)]
        self.metadata: bytes | None = None
        self.head: list[tuple[int, int, bytes]] = []  # (type, timestamp, payload)
        self.frames: list[tuple[int, int, bytes]] = []
        have_video_sh = have_audio_sh = False
        for t in tags:
            typ, p = t.tag_type, t.payload
            if typ == flv.SCRIPT:
                if self.metadata is None and amf0.decode_all(p)[:1] == ["onMetaData"]:
                    self.metadata = p
            elif typ == flv.VIDEO and flv.is_sequence_header(p):
                if not have_video_sh:
                    self.head.append((typ, 0, p))
                    have_video_sh = True
            elif typ == flv.VIDEO and len(p) >= 2 and p[0] & 0x0F in (7, 12, 13) and p[1] == 2:
                continue  # end of sequence: not in the middle of a looped stream
            elif typ == flv.AUDIO and flv.is_audio_sequence_header(p):
                if not have_audio_sh:
                    self.head.append((typ, 0, p))
                    have_audio_sh = True
            elif typ in (flv.AUDIO, flv.VIDEO):
                self.frames.append((typ, t.timestamp, p))
        if not self.frames:
            raise ValueError(f"{path}: no audio or video frames")
        self.frames.sort(key=lambda f: f[1])  # stable: same-timestamp tags keep the file's order
        ends = []
        for typ in (flv.VIDEO, flv.AUDIO):
            ts = [f[1] for f in self.frames if f[0] == typ]
            if len(ts) >= 2:
                deltas = sorted(b - a for a, b in zip(ts, ts[1:]) if b > a)
                ends.append(ts[-1] + (deltas[len(deltas) // 2] if deltas else 1))
            elif ts:
                ends.append(ts[-1] + 1)
        self.loop_ms = max(ends)
        self.ts = [f[1] for f in self.frames]  # relative to the pass
        self.bytes_per_pass = sum(len(f[2]) for f in self.frames)
        self._keep = keep_passes
        self._passes: dict[tuple[int, int, int, bool], Pass] = {}
        self._heads: dict[tuple[int, int], bytes] = {}

    @property
    def metadata_dict(self) -> dict[str, Any]:
        """The onMetaData object, for clients that take a dict (the package client)."""
        if self.metadata is None:
            return {}
        values = amf0.decode_all(self.metadata)
        return dict(values[1]) if len(values) > 1 and isinstance(values[1], dict) else {}

    def head_bytes(self, chunk_size: int, stream_id: int) -> bytes:
        key = (chunk_size, stream_id)
        data = self._heads.get(key)
        if data is None:
            parts = []
            if self.metadata is not None:
                msg = m.Message(m.DATA_AMF0, stream_id, 0, _SET_DATA_FRAME + self.metadata)
                parts.append(encode_message(msg, m.CSID_STREAM, chunk_size))
            for typ, ts, payload in self.head:
                parts.append(encode_message(m.Message(typ, stream_id, ts, payload), m.csid_for(typ), chunk_size))
            data = self._heads[key] = b"".join(parts)
        return data

    def pass_bytes(self, chunk_size: int, stream_id: int, n: int, split: bool = False) -> Pass:
        """Pass ``n`` over the frames as RTMP chunks, cut into the pieces a publisher writes one by one: whole
        messages, or (``split``, as FFmpeg writes) each chunk header and each chunk's data separately."""
        key = (chunk_size, stream_id, n, split)
        got = self._passes.get(key)
        if got is not None:
            return got
        base = n * self.loop_ms
        parts = []
        cuts: list[int] = []
        first = [0]
        off = 0
        csid_for = m.csid_for
        for typ, ts, payload in self.frames:
            b = encode_message(m.Message(typ, stream_id, base + ts, payload), csid_for(typ), chunk_size)
            parts.append(b)
            if split:
                ext = 4 if base + ts >= 0xFFFFFF else 0
                pos, left = off + 12 + ext, len(payload)  # fmt 0 header: 1 + 11 bytes (+ extended timestamp)
                cuts.append(pos)
                while left:
                    take = min(left, chunk_size)
                    pos += take
                    left -= take
                    cuts.append(pos)
                    if left:
                        pos += 1 + ext  # fmt 3 continuation header
                        cuts.append(pos)
            off += len(b)
            if not split:
                cuts.append(off)
            assert cuts[-1] == off
            first.append(len(cuts))
        got = Pass(b"".join(parts), cuts, first)
        if len(self._passes) >= self._keep:  # publishers hold the pass they are in; drop the oldest
            del self._passes[min(self._passes, key=lambda k: k[2])]
        self._passes[key] = got
        return got


class Pass:
    """One pass over the source's frames, serialized: ``cuts`` are the end offsets of the pieces written one by
    one, ``first[k]`` the index of message ``k``'s first piece (``first[-1] == len(cuts)``)."""

    __slots__ = ("data", "view", "cuts", "first")

    def __init__(self, data: bytes, cuts: list[int], first: list[int]) -> None:
        self.data = data
        self.view = memoryview(data)
        self.cuts = cuts
        self.first = first

    def pieces(self, i: int, j: int) -> list[memoryview]:
        """Messages ``i`` to ``j - 1``, piece by piece."""
        cuts, view = self.cuts, self.view
        a = self.first[i]
        start = cuts[a - 1] if a else 0
        out = []
        for p in range(a, self.first[j]):
            end = cuts[p]
            out.append(view[start:end])
            start = end
        return out

    def span(self, i: int, j: int) -> memoryview:
        """Messages ``i`` to ``j - 1`` in one slice."""
        a, b = self.first[i], self.first[j]
        return self.view[(self.cuts[a - 1] if a else 0) : self.cuts[b - 1]]


# ------------------------------------------------------------------------------------------ publishers


class PubStats:
    __slots__ = ("index", "name", "connect_at", "started_at", "accepted", "error", "step", "ended", "lag_ms",
                 "max_lag_ms", "win_bytes", "bytes", "paused", "window_start", "window_end", "lag_at_end", "pacer")

    def __init__(self, index: int, name: str, window_start: float, window_end: float) -> None:
        self.index = index
        self.name = name
        self.connect_at = monotonic()
        self.started_at: float | None = None  # NetStream.Publish.Start arrived
        self.accepted = False
        self.error = ""
        self.step = "TCP connect"
        self.ended = False  # the connection is gone
        self.lag_ms = 0.0
        self.max_lag_ms = 0.0  # over the window
        self.lag_at_end: float | None = None
        self.win_bytes = 0
        self.bytes = 0
        self.paused = 0  # times the transport's buffer went over the limit
        self.window_start = window_start
        self.window_end = window_end
        self.pacer: Pacer | None = None  # once createStream answered

    def result(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "accepted": self.accepted,
            "error": self.error,
            "step": self.step,
            "publish_time": None if self.started_at is None else self.started_at - self.connect_at,
            "started_at": self.started_at,  # time.monotonic() of NetStream.Publish.Start: media time 0
            "max_lag_ms": round(self.max_lag_ms, 1),
            "lag_at_end_ms": None if self.lag_at_end is None else round(self.lag_at_end, 1),
            "win_bytes": self.win_bytes,
            "bytes": self.bytes,
            "write_paused": self.paused,
        }


class Pacer:
    """Where a publisher is in the source, and what it must send now; shared by both client kinds."""

    __slots__ = ("source", "chunk_size", "stream_id", "split", "t0", "n", "i", "cur")

    def __init__(self, source: Source, chunk_size: int, stream_id: int, split: bool = False) -> None:
        self.source = source
        self.chunk_size = chunk_size
        self.stream_id = stream_id
        self.split = split
        self.t0 = 0.0
        self.n = 0
        self.i = 0
        self.cur: Pass | None = None  # the pass it is in (held, so the source's cache may drop it)

    def due(self, now: float) -> list[tuple[Pass, int, int]]:
        """The messages due by ``now``, in order: (pass, first message, end) for each pass they fall in.

        Up to :data:`EARLY_MS` early: the event loop's timers have a millisecond's resolution and may fire
        that much before the time asked, and a wake-up that finds nothing to send is wasted."""
        source = self.source
        media = (now - self.t0) * 1000.0 + EARLY_MS
        out = []
        ts = source.ts
        while True:
            j = bisect.bisect_right(ts, media - self.n * source.loop_ms, self.i)
            if j > self.i:
                if self.cur is None:
                    self.cur = source.pass_bytes(self.chunk_size, self.stream_id, self.n, self.split)
                out.append((self.cur, self.i, j))
                self.i = j
            if j < len(ts):
                return out
            self.n += 1
            self.i = 0
            self.cur = None

    def due_frames(self, now: float) -> list[tuple[int, int, bytes]]:
        """The same as :meth:`due`, as (type, absolute timestamp, payload) messages (for the package client)."""
        source = self.source
        media = (now - self.t0) * 1000.0 + EARLY_MS
        out = []
        frames = source.frames
        while True:
            base = self.n * source.loop_ms
            j = bisect.bisect_right(source.ts, media - base, self.i)
            for k in range(self.i, j):
                typ, ts, payload = frames[k]
                out.append((typ, base + ts, payload))
            self.i = j
            if j < len(source.ts):
                return out
            self.n += 1
            self.i = 0

    def next_due(self) -> float:
        """Wall time (monotonic) the next message is due."""
        return self.t0 + (self.n * self.source.loop_ms + self.source.ts[self.i]) / 1000.0

    def lag_ms(self, now: float) -> float:
        """How far the media sent is behind the publisher's wall clock (0 when it is up to date)."""
        return max(0.0, (now - self.next_due()) * 1000.0)


class LeanPublisher(asyncio.Protocol):
    """One publisher on the sans-IO client session, writing the shared serialized bytes."""

    def __init__(self, stats: PubStats, app: str, tc_url: str, source: Source, style: Style, tick: float,
                 write_limit: int) -> None:
        self.stats = stats
        self.app, self.tc_url = app, tc_url
        self.source = source
        self.style = style
        self.chunk_size = chunk_size = style.chunk_size
        self.tick = tick
        self.write_limit = write_limit
        self.session = ClientSession(out_chunk_size=chunk_size)
        self.transport: asyncio.Transport | None = None
        self.pacer: Pacer | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.write_paused = False
        self._connect_txn = -1.0
        self._create_txn = -1.0
        self.loop = asyncio.get_running_loop()
        self.published = self.loop.create_future()

    # ------------------------------------------------------------------------------------ RTMP

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=self.write_limit)
        if not self.style.nodelay:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        self.stats.step = "handshake"
        self._flush()

    def _flush(self) -> None:
        out = self.session.data_to_send()
        if out and self.transport is not None and not self.closing:
            self.transport.write(out)
            self.stats.bytes += len(out)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.session.receive_data(data)
        except ProtocolError as exc:
            self.fail(f"protocol error: {exc}")
            return
        for ev in events:
            t = type(ev)
            if t is CommandReply:
                self._reply(ev)  # type: ignore[arg-type]
            elif t is StatusEvent:
                self._status(ev)  # type: ignore[arg-type]
            elif t is HandshakeComplete:
                self.stats.step = "connect"
                self._connect_txn = self.session.connect(self.app, self.tc_url)
        self._flush()

    def _reply(self, ev: CommandReply) -> None:
        if ev.transaction_id not in (self._connect_txn, self._create_txn):
            return  # releaseStream / FCPublish answers, if any
        if ev.name == "_error":
            info = next((v for v in ev.values if isinstance(v, dict)), {})
            self.fail(f"{self.stats.step} refused: {info.get('code', '_error')} {info.get('description', '')}"[:200])
        elif ev.transaction_id == self._connect_txn:
            self.stats.step = "createStream"
            name = self.stats.name
            self.session.call("releaseStream", name)
            self.session.call("FCPublish", name)
            self._create_txn = self.session.create_stream()
        else:
            sid = ev.values[1] if len(ev.values) > 1 else None
            if not isinstance(sid, float) or not 0 < sid < 2**31:
                self.fail(f"createStream answered {ev.values!r}"[:200])
                return
            self.stats.step = "publish"
            self.pacer = self.stats.pacer = Pacer(self.source, self.chunk_size, int(sid), self.style.split)
            self.session.publish(int(sid), self.stats.name)

    def _status(self, ev: StatusEvent) -> None:
        if self.pacer is None or ev.stream_id != self.pacer.stream_id:
            return
        if ev.code == "NetStream.Publish.Start" and not self.stats.accepted:
            now = monotonic()
            self.stats.accepted = True
            self.stats.started_at = now
            self.stats.step = "publishing"
            self.pacer.t0 = now
            if not self.published.done():
                self.published.set_result(None)
            self._write(self.source.head_bytes(self.chunk_size, self.pacer.stream_id), now)
            self._tick()
        elif ev.level == "error" or ev.code in _PUBLISH_FAILURES or (
            self.stats.accepted and ev.code in ("NetStream.Unpublish.Success", "NetStream.Publish.Idle")
        ):
            self.fail(f"{ev.code}: {ev.description}"[:200])

    # ----------------------------------------------------------------------------------- media

    def _write(self, data: bytes | memoryview, now: float) -> None:
        assert self.transport is not None
        self.transport.write(data)
        n = len(data)
        st = self.stats
        st.bytes += n
        if st.window_start <= now <= st.window_end:
            st.win_bytes += n

    def _tick(self) -> None:
        self.timer = None
        if self.closing or self.pacer is None:
            return
        now = monotonic()
        pacer = self.pacer
        if not self.write_paused:
            if self.tick > 0:  # one write for everything due
                for pas, i, j in pacer.due(now):
                    self._write(pas.span(i, j), now)
            else:
                for pas, i, j in pacer.due(now):
                    for piece in pas.pieces(i, j):
                        self._write(piece, now)
        st = self.stats
        due = pacer.next_due()
        lag = (now - due) * 1000.0 if now > due else 0.0
        st.lag_ms = lag
        if lag > st.max_lag_ms and st.window_start <= now <= st.window_end:
            st.max_lag_ms = lag
        if self.write_paused:
            return  # resume_writing schedules the next tick
        self.timer = self.loop.call_at(due if due > now + self.tick else now + self.tick, self._tick)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.stats.paused += 1

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.timer is None and not self.closing and self.pacer is not None and self.stats.accepted:
            self._tick()

    # --------------------------------------------------------------------------------- closing

    def fail(self, reason: str) -> None:
        if not self.stats.error:
            self.stats.error = reason
        self.close(abort=True)

    def close(self, abort: bool = False) -> None:
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.published.done():
            self.published.set_result(None)
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        st = self.stats
        st.ended = True
        if not self.closing and not st.error:
            st.error = ("closed by the server" if exc is None else f"connection lost: {exc}") + f" ({st.step})"
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.published.done():
            self.published.set_result(None)


async def run_lean(stats: PubStats, host: str, port: int, app: str, tc_url: str, source: Source, style: Style,
                   tick: float, write_limit: int, timeout: float) -> LeanPublisher | None:
    loop = asyncio.get_running_loop()
    pub: LeanPublisher | None = None

    def factory() -> LeanPublisher:
        nonlocal pub
        pub = LeanPublisher(stats, app, tc_url, source, style, tick, write_limit)
        return pub

    try:
        await asyncio.wait_for(loop.create_connection(factory, host, port), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        stats.error = f"connect: {exc!r}"[:200]
        stats.ended = True
        return None
    assert pub is not None
    try:
        await asyncio.wait_for(asyncio.shield(pub.published), timeout)
    except asyncio.TimeoutError:
        pub.fail(f"timed out after {timeout:g}s at {stats.step}")
    return pub


class PackagePublisher:
    """One publisher on livesrv's package client: send_media per message, drain for back-pressure."""

    def __init__(self, stats: PubStats, url: str, source: Source, chunk_size: int, tick: float,
                 write_limit: int) -> None:
        self.stats = stats
        self.url = url
        self.source = source
        self.chunk_size = chunk_size
        self.tick = tick
        self.write_limit = write_limit
        self.client: Any = None
        self.closing = False
        self.task: asyncio.Task[None] | None = None

    async def run(self, timeout: float) -> None:
        from livesrv.clients.rtmp import RtmpClient, RtmpClientError

        st = self.stats
        try:
            self.client = await RtmpClient.connect(self.url, timeout=timeout, chunk_size=self.chunk_size,
                                                   write_buffer_limit=self.write_limit)
            st.step = "publish"
            await self.client.publish(timeout=timeout)
        except (RtmpClientError, OSError) as exc:
            st.error = f"{exc}"[:200]
            st.step = getattr(exc, "step", st.step) or st.step
            st.ended = True
            return
        now = monotonic()
        st.accepted, st.started_at, st.step = True, now, "publishing"
        pacer = st.pacer = Pacer(self.source, self.chunk_size, self.client.stream_id)
        pacer.t0 = now
        client = self.client
        client.send_metadata(self.source.metadata_dict)
        for typ, ts, payload in self.source.head:
            client.send_media(typ, ts, payload)
        try:
            while not self.closing:
                now = monotonic()
                for typ, ts, payload in pacer.due_frames(now):
                    client.send_media(typ, ts, payload)
                    n = len(payload)
                    st.bytes += n
                    if st.window_start <= now <= st.window_end:
                        st.win_bytes += n
                if client.writing_paused:
                    st.paused += 1
                    await client.drain()
                now = monotonic()
                lag = pacer.lag_ms(now)
                st.lag_ms = lag
                if st.window_start <= now <= st.window_end and lag > st.max_lag_ms:
                    st.max_lag_ms = lag
                await asyncio.sleep(max(pacer.next_due() - now, self.tick))
        except RtmpClientError as exc:
            if not self.closing:
                st.error = f"{exc}"[:200]
        finally:
            st.ended = True

    def close(self) -> None:
        self.closing = True
        if self.client is not None:
            self.client.abort()


# --------------------------------------------------------------------------------------------- worker


async def _sleep_until(t: float) -> None:
    delay = t - monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _cpu_seconds() -> tuple[float, float]:
    """(user, system) CPU seconds of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


async def run_publishers(base_url: str, prefix: str, n: int, source: Source, *, start_at: float, rate: float,
                         window_start: float, duration: float, client: str = "lean", style: str = "message",
                         tick: float = 0.0, write_limit: int = 1 << 20, timeout: float = 10.0,
                         linger: float = 0.0) -> dict[str, Any]:
    """Start ``n`` publishers from ``start_at`` at ``rate`` per second, measure the window, go on ``linger``
    seconds more (so the server's reaction to unpublishing stays out of the window), close them all."""
    from urllib.parse import urlsplit

    u = urlsplit(base_url)
    if u.scheme != "rtmp" or not u.hostname or not u.path.strip("/"):
        raise ValueError(f"want rtmp://host[:port]/app, got {base_url!r}")
    host, port, app = u.hostname, u.port or 1935, u.path.strip("/")
    tc_url = f"rtmp://{u.netloc}/{app}"
    window_end = window_start + duration
    stats: list[PubStats] = []
    tasks: list[asyncio.Future[Any]] = []
    width = max(3, len(str(n - 1)))
    for i in range(n):
        await _sleep_until(start_at + i / rate)
        st = PubStats(i, f"{prefix}{i:0{width}d}", window_start, window_end)
        stats.append(st)
        if client == "package":
            pp = PackagePublisher(st, f"{base_url.rstrip('/')}/{st.name}", source, STYLES[style].chunk_size, tick,
                                  write_limit)
            pp.task = asyncio.ensure_future(pp.run(timeout))
            tasks.append(asyncio.ensure_future(_keep(pp)))
        else:
            tasks.append(asyncio.ensure_future(run_lean(st, host, port, app, tc_url, source, STYLES[style], tick,
                                                        write_limit, timeout)))
    await _sleep_until(window_start)
    cpu0 = _cpu_seconds()
    await _sleep_until(window_end)
    cpu1 = _cpu_seconds()
    now = monotonic()
    for st in stats:
        if st.accepted and not st.ended and st.pacer is not None:
            # From the pacer, not the last wake-up's figure: a publisher held back by the server (its writes
            # paused) has not woken up since.
            st.lag_at_end = st.pacer.lag_ms(now)
            st.max_lag_ms = max(st.max_lag_ms, st.lag_at_end)
    await _sleep_until(window_end + linger)
    pubs = []
    for task in tasks:
        if task.done():
            pub = task.result()
            if pub is not None:
                pubs.append(pub)
        else:
            task.cancel()
    for pub in pubs:
        pub.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    for pub in pubs:
        if isinstance(pub, PackagePublisher) and pub.task is not None:
            await asyncio.gather(pub.task, return_exceptions=True)
    await asyncio.sleep(0.05)  # connection_lost callbacks
    return {"publishers": [s.result() for s in stats], "cpu_s": cpu1[0] - cpu0[0] + cpu1[1] - cpu0[1],
            "cpu_user_s": cpu1[0] - cpu0[0], "duration": duration}


async def _keep(pp: PackagePublisher) -> PackagePublisher:
    """Resolves once the package publisher is publishing or has failed (as run_lean does)."""
    st = pp.stats
    while not st.accepted and not st.ended:
        await asyncio.sleep(0.02)
    return pp


def summarize(pubs: list[dict[str, Any]], duration: float, cpu_s: float, cpu_user_s: float = 0.0) -> dict[str, Any]:
    n = len(pubs)
    accepted = [p for p in pubs if p["accepted"]]
    failed = [p for p in pubs if p["error"]]
    errors = Counter(p["error"] if p["accepted"] else f"{p['step']}: {p['error']}" for p in failed)
    times = sorted(p["publish_time"] for p in accepted if p["publish_time"] is not None)
    lags = [p["lag_at_end_ms"] for p in accepted if p["lag_at_end_ms"] is not None]
    return {
        "publishers": n,
        "accepted": len(accepted),
        "refused": sum(1 for p in pubs if not p["accepted"]),
        "disconnected": sum(1 for p in accepted if p["error"]),
        "publishing_at_end": sum(1 for p in accepted if not p["error"]),
        "error_samples": dict(errors.most_common(5)),
        "behind": sum(1 for v in lags if v > BEHIND_MS),
        "max_lag_ms": max((p["max_lag_ms"] for p in accepted), default=0.0),
        "write_paused": sum(p["write_paused"] for p in pubs),
        "publish_time_p50_s": times[len(times) // 2] if times else None,
        "publish_time_max_s": times[-1] if times else None,
        "sent_mbps": sum(p["win_bytes"] for p in pubs) * 8 / duration / 1e6 if duration else 0.0,
        "cpu_percent": 100.0 * cpu_s / duration if duration else 0.0,
        "cpu_user_percent": 100.0 * cpu_user_s / duration if duration else 0.0,
        "duration_s": duration,
    }


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# ------------------------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Publish the source file to a server from K publishers at once.")
    p.add_argument("url", help="rtmp://host:port/app; publisher i publishes <url>/<prefix><i>")
    p.add_argument("--source", type=Path, required=True, help="the FLV file to publish (looped)")
    p.add_argument("--publishers", type=int, default=10)
    p.add_argument("--prefix", default="bench", help="stream name prefix")
    p.add_argument("--duration", type=float, default=20.0, help="measuring window, seconds")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between the last publisher and the window")
    p.add_argument("--connect-rate", type=float, default=50.0, help="publishers started per second")
    p.add_argument("--client", choices=("lean", "package"), default="lean",
                   help="lean: shared pre-serialized chunks on the sans-IO session; package: RtmpClient")
    p.add_argument("--style", choices=sorted(STYLES), default="message",
                   help="message: chunk size 4096, one write per message (librtmp, OBS); ffmpeg: chunk size 60000, "
                        "each chunk header and chunk written separately, Nagle on (FFmpeg's RTMP)")
    p.add_argument("--tick", type=float, default=0.0,
                   help="a publisher writes at most this often, seconds (0: each message when due)")
    p.add_argument("--write-limit", type=int, default=1 << 20,
                   help="bytes a publisher's transport may hold before it stops writing (back-pressure)")
    p.add_argument("--linger", type=float, default=0.0, help="seconds to go on publishing after the window")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to get from connect to Publish.Start")
    p.add_argument("--start-at", type=float, help="time.monotonic() to start the first publisher (default: now)")
    p.add_argument("--window-start", type=float, help="time.monotonic() the window opens (default: after settle)")
    p.add_argument("--per-publisher", action="store_true", help="include every publisher's record in the JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    raise_fd_limit()
    source = Source(args.source)
    start_at = args.start_at if args.start_at is not None else monotonic() + 0.2
    window_start = args.window_start
    if window_start is None:
        window_start = start_at + args.publishers / args.connect_rate + args.settle
    result = _run_loop(run_publishers(
        args.url, args.prefix, args.publishers, source, start_at=start_at, rate=args.connect_rate,
        window_start=window_start, duration=args.duration, client=args.client, style=args.style,
        tick=args.tick, write_limit=args.write_limit, timeout=args.timeout, linger=args.linger,
    ))
    summary = summarize(result["publishers"], args.duration, result["cpu_s"], result["cpu_user_s"])
    summary.update({"url": args.url, "client": args.client, "style": args.style, "tick_s": args.tick,
                    "chunk_size": STYLES[args.style].chunk_size,
                    "loop_ms": source.loop_ms})
    if args.per_publisher:
        summary["per_publisher"] = result["publishers"]
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
