"""The load generator's per-viewer measures: keeping up under batched delivery, stalls, broken timestamps."""

from __future__ import annotations

from bench.measure import AUDIO, VIDEO, Thresholds, ViewerStats

KEY, INTER = (0x17, 1), (0x27, 1)
AAC = (0xAF, 1)


def play(stats: ViewerStats, arrivals: list[tuple[float, list[tuple[int, int, tuple[int, int]]]]]) -> None:
    """Feed reads: (wall time, [(tag type, timestamp ms, first two payload bytes), ...])."""
    for now, tags in arrivals:
        before = stats.media
        for typ, ts, (b0, b1) in tags:
            stats.tag(typ, ts, b0, b1, now)
        stats.account(1000, before, now)


def live(start: float, end: float, batch: float, speed: float = 1.0, t0: float = 0.0):  # type: ignore[no-untyped-def]
    """Reads every ``batch`` seconds carrying the 30 fps video and 43/s audio produced since the last one."""
    arrivals = []
    frame = 0
    audio = 0
    t = start
    while t <= end + 1e-9:
        tags = []
        media_now = (t - t0) * 1000 * speed
        while frame * 1000 / 30 <= media_now:
            tags.append((VIDEO, int(frame * 1000 / 30), KEY if frame % 60 == 0 else INTER))
            frame += 1
        while audio * 23 <= media_now:
            tags.append((AUDIO, audio * 23, AAC))
            audio += 1
        arrivals.append((t, tags))
        t += batch
    return arrivals


def test_merged_writes_every_350ms_keep_up_even_over_a_short_window() -> None:
    stats = ViewerStats(Thresholds(), window_start=2.0, window_end=5.0, connect_at=0.0)
    play(stats, live(0.01, 6.0, 0.35))
    r = stats.result()
    assert r["keeping_up"] and r["stalls"] == 0 and r["malformed"] == 0, r
    assert 0.97 < r["rate"] < 1.03
    assert r["first_frame"] == 0.01


def test_a_viewer_at_90_percent_speed_is_not_keeping_up() -> None:
    stats = ViewerStats(Thresholds(), window_start=2.0, window_end=12.0, connect_at=0.0)
    play(stats, live(0.01, 13.0, 0.1, speed=0.9))
    r = stats.result()
    assert not r["keeping_up"] and 0.85 < r["rate"] < 0.95, r


def test_a_stall_is_counted_and_a_viewer_cut_off_early_is_not_keeping_up() -> None:
    stats = ViewerStats(Thresholds(stall_s=1.0), window_start=2.0, window_end=8.0, connect_at=0.0)
    arrivals = [a for a in live(0.01, 9.0, 0.1) if not 4.0 < a[0] < 5.5]  # 1.5 s without data, then catch-up
    play(stats, arrivals)
    r = stats.result()
    assert r["stalls"] == 1 and r["max_stall"] >= 1.5 and r["keeping_up"], r

    cut = ViewerStats(Thresholds(), window_start=2.0, window_end=8.0, connect_at=0.0)
    play(cut, [a for a in live(0.01, 9.0, 0.1) if a[0] < 6.0])
    r = cut.result()
    assert not r["keeping_up"] and r["stalls"] == 1, r


def test_timestamps_going_back_and_lost_frames_are_malformed() -> None:
    stats = ViewerStats(Thresholds(max_gap_ms=1000), window_start=0.0, window_end=10.0, connect_at=0.0)
    play(stats, [(0.1, [(VIDEO, 0, (0x17, 0)), (VIDEO, 0, KEY), (VIDEO, 33, INTER), (VIDEO, 20, INTER)]),
                 (0.2, [(VIDEO, 2100, KEY), (AUDIO, 0, (0xAF, 0)), (AUDIO, 5, AAC), (AUDIO, 4, AAC)])])
    r = stats.result()
    assert (r["backwards"], r["ts_gaps"], r["malformed"]) == (2, 1, 3), r
    assert r["video_frames"] == 4 and r["audio_frames"] == 2  # sequence headers are not frames


def test_first_frame_waits_for_a_keyframe() -> None:
    stats = ViewerStats(Thresholds(), window_start=0.0, window_end=10.0, connect_at=1.0)
    play(stats, [(1.2, [(VIDEO, 0, (0x17, 0)), (VIDEO, 10, INTER), (VIDEO, 40, INTER)]), (1.5, [(VIDEO, 80, KEY)])])
    r = stats.result()
    assert r["frames_before_key"] == 2 and abs(r["first_frame"] - 0.5) < 1e-9, r
    # Enhanced RTMP: packet type in the low nibble (0 = sequence start, 1 = coded frames), frame type as usual.
    ex = ViewerStats(Thresholds(), window_start=0.0, window_end=10.0, connect_at=0.0)
    play(ex, [(0.3, [(VIDEO, 0, (0x90, 0)), (VIDEO, 0, (0x91, 0))])])
    assert ex.result()["first_frame"] == 0.3 and ex.result()["video_frames"] == 1
