"""HTTP-FLV and WebSocket-FLV viewers (SRS ``http_remux``): ``GET /app/stream.flv``, with or without Upgrade.

A request is resolved against the hub when it arrives: nothing is mounted, so nothing can stay mounted after
its stream is gone (SRS #4140 "pattern duplicated"). The response is a live body with no length; each viewer
is a :class:`~livesrv.hub.stream.Viewer` whose transport is the connection's, so the fan-out writes the shared
batch bytes straight to the socket.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request as WSRequest
from wsproto.utilities import RemoteProtocolError

from livesrv.codec import flv
from livesrv.hub.keys import StreamRequest, parse_http_path, request_problem
from livesrv.hub.stream import Stream, Viewer
from livesrv.log import client_event
from livesrv.media.formats import FLV, WS_FLV, flv_format, ws_binary_frame_header
from livesrv.media.tracks import Tracks
from livesrv.hub.clients import new_client_id
from livesrv.servers.http import HTTPConnection, Request, Response
from livesrv.servers.http_viewer import CORS, HttpViewerOwner, admit_http_viewer, not_a_viewer

if TYPE_CHECKING:
    from livesrv.access import Access
    from livesrv.config import Config, HttpRemuxConfig
    from livesrv.hub.hub import Hub

log = logging.getLogger("livesrv.flv")



def resolve(config: Config, req: Request, suffix: str) -> StreamRequest | None:
    """The stream a live URL names, or None when the path is not one or its vhost does not serve it."""
    sreq = parse_http_path(req.headers.get("host"), req.target, suffix, config.vhosts.keys())
    if sreq is None:
        return None
    if req.scheme != "http" and sreq.tc_url.startswith("http://"):  # the client's URL, as it was: https://...
        sreq = replace(sreq, tc_url=req.scheme + sreq.tc_url[4:])
    vhost = config.vhost(sreq.key.vhost)
    if not vhost.enabled or not vhost.http_remux.enabled:
        return None
    return sreq


def refuse_bad_name(req: Request, sreq: StreamRequest, protocol: str) -> Response | None:
    """400 with the reason, logged once, when the URL names no acceptable stream (the name rule of
    :func:`~livesrv.hub.keys.request_problem`); None when its names are fine. Nothing is created for it."""
    problem = request_problem(sreq)
    if problem is None:
        return None
    client_event(log, "play-rejected", new_client_id(), req.ip, sreq.key, problem, logging.WARNING, protocol=protocol)
    return Response(400, f"bad request: {problem}\n".encode(), headers=CORS)


class FlvViewerOwner(HttpViewerOwner):
    """An HTTP-FLV / WS-FLV viewer: its FLV header, and the WebSocket frames it sends."""

    def __init__(self, conn: HTTPConnection, ws: WSConnection | None, remux: HttpRemuxConfig) -> None:
        super().__init__(conn)
        self.ws = ws
        self.remux = remux
        self.tracks: Tracks | None = None  # what the FLV header announced, once sent
        self._late_logged = False

    def send_header(self, tracks: Tracks) -> None:
        """The FLV header (in its own frame over WebSocket); the viewer's format then carries those tracks."""
        viewer = self.viewer
        assert viewer is not None
        self.tracks = tracks
        drop = self.remux.drop_if_not_match
        viewer.fmt = flv_format(tracks.audio or not drop, tracks.video or not drop, self.ws is not None)
        head = flv.file_header(tracks.audio, tracks.video)
        viewer.write(ws_binary_frame_header(len(head)) + head if self.ws is not None else head)

    def starting(self, stream: Stream) -> bool:
        """Before the viewer's (re)start at a random access point: the header on the first, then a check that
        the stream still has a track the header announced."""
        now = stream.tracks()
        remux = self.remux
        wanted = Tracks(now.audio and remux.has_audio, now.video and remux.has_video)
        told = self.tracks
        viewer = self.viewer
        assert viewer is not None
        if told is None:
            if not wanted.audio and not wanted.video:
                self.close_viewer(f"the stream has no track this vhost serves over HTTP-FLV "
                                  f"(audio={now.audio} video={now.video}, http_remux has_audio={remux.has_audio} "
                                  f"has_video={remux.has_video})")
                return False
            self.send_header(wanted)
            client_event(log, "flv-header", viewer.cid, viewer.ip, stream.key, level=logging.DEBUG,
                         audio=wanted.audio, video=wanted.video)
            return True
        if not (told.audio and now.audio) and not (told.video and now.video):
            self.close_viewer(f"the stream's tracks changed (audio={now.audio} video={now.video}) and none "
                              f"is one its FLV header announced (audio={told.audio} video={told.video})")
            return False
        if not self._late_logged and ((wanted.audio and not told.audio) or (wanted.video and not told.video)):
            self._late_logged = True
            late = "audio" if wanted.audio and not told.audio else "video"
            client_event(log, "track-late", viewer.cid, viewer.ip, stream.key,
                         f"{late} appeared after this viewer's FLV header: "
                         + ("not sent to it" if remux.drop_if_not_match else "sent anyway (drop_if_not_match off)"))
        return True

    def close_viewer(self, reason: str) -> None:
        conn = self.conn
        if conn.closed:
            return
        if self.ws is not None:
            try:
                conn.write(self.ws.send(CloseConnection(code=1000, reason=reason[:100])))
            except Exception:  # noqa: BLE001 - a close frame is a courtesy
                pass
        super().close_viewer(reason)

    def data_received(self, data: bytes) -> None:
        """Frames from a WebSocket viewer: answer pings, close on close. Anything else is ignored."""
        ws = self.ws
        if ws is None:
            return
        try:
            ws.receive_data(data)
            for ev in ws.events():
                if isinstance(ev, Ping):
                    self.conn.write(ws.send(ev.response()))
                elif isinstance(ev, CloseConnection):
                    try:
                        self.conn.write(ws.send(ev.response()))
                    except Exception:  # noqa: BLE001
                        pass
                    self.conn.close()
                    return
        except RemoteProtocolError as exc:
            client_event(log, "close", self.viewer.cid if self.viewer else "?", self.conn.ip, reason=f"websocket: {exc}")
            self.conn.close(abort=True)


async def serve_flv(config: Config, hub: Hub, access: Access, req: Request, conn: HTTPConnection) -> Response | None:
    sreq = resolve(config, req, ".flv")
    if sreq is None:
        return Response(404, b"not found\n", headers=CORS)
    is_ws = req.headers.get("upgrade", "").lower() == "websocket"
    protocol = "ws-flv" if is_ws else "flv"
    refused = refuse_bad_name(req, sreq, protocol)
    if refused is not None:
        return refused
    answer = not_a_viewer(req, "video/x-flv")
    if answer is not None:
        return answer
    remux = config.vhost(sreq.key.vhost).http_remux
    owner = FlvViewerOwner(conn, None, remux)

    def open_body(viewer: Viewer) -> Response | None:
        if is_ws:
            ws = WSConnection(ConnectionType.SERVER)
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in req.headers.items()]
            try:
                ws.initiate_upgrade_connection(headers, req.target)
                ev = next(ws.events())
                if not isinstance(ev, WSRequest):
                    raise RemoteProtocolError("not a websocket request", event_hint=None)
                conn.take_over(ws.send(AcceptConnection()))
            except RemoteProtocolError as exc:
                return Response(400, f"bad websocket request: {exc}\n".encode())
            owner.ws = ws
        else:
            conn.start_stream(200, [("Content-Type", "video/x-flv"), ("Cache-Control", "no-cache"), *CORS])
        if remux.guess_has_av:
            viewer.starting = owner.starting  # the header goes out with the first media, saying its real tracks
        else:
            owner.send_header(Tracks(remux.has_audio, remux.has_video))
        return None

    return await admit_http_viewer(config, hub, access, req, conn, sreq, owner, protocol, WS_FLV if is_ws else FLV,
                                   open_body, log)
