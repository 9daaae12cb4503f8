"""Which tracks a stream carries, for outputs that must say so before the media (the FLV header's flags).

A player believes the header: told "audio and video" it waits for both (ffprobe never answers, mpegts.js never
starts a video-only stream), told "video only" it may break on an audio tag. So the answer must come from what
the publisher really sent, and is asked for only once the first media is there (see ``Viewer.starting``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from livesrv.media.packet import AUDIO, VIDEO, MediaPacket

#: Video in the GOP cache spanning at least this long with no audio frame means the stream has no audio,
#: whatever its audio sequence header or metadata announced (an encoder that sends the header and never a
#: frame). SRS applies this rule to the first batch a viewer gets, which also fires for a viewer that arrives
#: at the very first keyframe, before any audio frame could exist; here it needs this much evidence.
NO_AUDIO_EVIDENCE_MS = 1000


@dataclass(frozen=True, slots=True)
class Tracks:
    audio: bool
    video: bool


def _declares(metadata: Mapping[str, object], field: str) -> bool:
    """onMetaData names a codec for the track (FFmpeg and OBS write ``audiocodecid`` only when there is audio)."""
    value = metadata.get(field)
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, (int, float)):
        return value > 0
    return bool(value)


def guess_tracks(
    audio_seen: bool, video_seen: bool, metadata: Mapping[str, object], gop: Sequence[MediaPacket]
) -> Tracks:
    """The tracks of a stream from what its publisher sent so far: any packet of a track (sequence header
    included) or the track's codec in onMetaData (an encoder whose audio starts seconds after its video), unless
    the GOP cache shows at least :data:`NO_AUDIO_EVIDENCE_MS` of video with no audio frame."""
    audio = audio_seen or _declares(metadata, "audiocodecid")
    video = video_seen or _declares(metadata, "videocodecid")
    if audio and video:
        first: int | None = None
        last = 0
        for p in gop:
            kind = p.kind
            if kind == AUDIO:
                if not p.sequence_header:
                    return Tracks(True, True)
            elif kind == VIDEO:
                if first is None:
                    first = p.timestamp
                last = p.timestamp
        if first is not None and last - first >= NO_AUDIO_EVIDENCE_MS:
            audio = False
    return Tracks(audio, video)
