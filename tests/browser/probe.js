// In-page side of the playback check: starts mpegts.js (HTTP-FLV, WS-FLV), hls.js (HLS) or a WebRTC WHEP
// session on the <video> element, records player errors and media events, and exposes snapshot() for play.js
// to poll. Query string: ?mode=flv|hls|whep&url=<stream URL>[&barcode=1][&rtcAudio=0 (WHEP: video only)].
// With barcode=1 the glass-to-glass latency is read from the 20-bit barcode the benchmark's publisher burns
// into row 350 of each picture (its wall clock in 10 ms units): T.lat holds one sample every 500 ms.
'use strict';
(function () {
  const q = new URLSearchParams(location.search);
  const mode = q.get('mode');
  const url = q.get('url');
  const v = document.getElementById('v');
  const T = (window.T = { mode, url, errors: [], events: [], firstFrameAt: null, presented: 0 });
  const t0 = performance.now();
  const now = () => Math.round(performance.now() - t0);
  // Bounded, so a player that repeats one error cannot flood the report.
  const error = (e) => { if (T.errors.length < 100) T.errors.push({ ...e, at: now() }); };

  for (const name of ['loadedmetadata', 'canplay', 'playing', 'waiting', 'stalled', 'ended', 'error']) {
    v.addEventListener(name, () => T.events.push({ name, at: now(), currentTime: v.currentTime }));
  }
  // Counts frames actually handed to the compositor, independent of the decoder's counter.
  T.lat = [];
  const barcode = q.get('barcode') === '1';
  const bc = document.createElement('canvas');
  bc.width = 640;
  bc.height = 360;
  const bctx = bc.getContext('2d', { willReadFrequently: true });
  let lastBarcode = 0;
  const onFrame = (t, meta) => {
    if (T.firstFrameAt === null) T.firstFrameAt = now();
    T.presented += 1;
    if (barcode && performance.now() - lastBarcode >= 500 && v.videoWidth) {
      lastBarcode = performance.now();
      bctx.drawImage(v, 0, 0, 640, 360);
      const row = bctx.getImageData(0, 350, 640, 1).data;
      let code = 0;
      for (let k = 0; k < 20; k++) if (row[(2 + 16 * k + 8) * 4 + 1] > 128) code |= 1 << k;
      const shown = Math.floor((performance.timeOrigin + meta.expectedDisplayTime) / 10);
      const lat = (((shown - code) % (1 << 20)) + (1 << 20)) % (1 << 20) * 10;
      if (T.lat.length < 10000) T.lat.push(lat);
    }
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);

  if (mode === 'flv') {
    // mpegts.js picks its WebSocket loader by itself for ws:// URLs.
    const p = (window.player = mpegts.createPlayer(
      { type: 'flv', isLive: true, url },
      { enableWorker: false, liveBufferLatencyChasing: true, liveBufferLatencyMaxLatency: 1.5,
        liveBufferLatencyMinRemain: 0.3 }));
    p.on(mpegts.Events.ERROR, (type, detail, info) =>
      error({ type, detail, info: JSON.stringify(info), fatal: true }));
    p.attachMediaElement(v);
    p.load();
  } else if (mode === 'hls') {
    const h = (window.player = new Hls({ liveSyncDurationCount: 3 }));
    // Non-fatal hls.js errors (e.g. a short buffer stall at the live edge) are kept but are not failures.
    h.on(Hls.Events.ERROR, (e, d) =>
      error({ type: d.type, detail: d.details, fatal: !!d.fatal }));
    h.loadSource(url);
    h.attachMedia(v);
  } else if (mode === 'whep') {
    // WebRTC: an offer to receive video and audio, POSTed to the WHEP URL; the answer starts the media. The
    // audio goes to WebRTC's own decoder, not the media element's: "decoded audio" is the samples received
    // minus those concealed (made up for missing packets), from the receiver's stats.
    T.rtc = { state: 'new', audioSamples: 0, audioEnergy: 0, location: null };
    const pc = (window.player = new RTCPeerConnection());
    pc.addTransceiver('video', { direction: 'recvonly' });
    if (q.get('rtcAudio') !== '0') pc.addTransceiver('audio', { direction: 'recvonly' });
    const ms = new MediaStream();
    pc.ontrack = (e) => {
      ms.addTrack(e.track);
      if (v.srcObject !== ms) v.srcObject = ms;
      v.play().catch((err) => error({ type: 'play', detail: String(err), fatal: err.name !== 'AbortError' }));
    };
    pc.onconnectionstatechange = () => {
      T.rtc.state = pc.connectionState;
      T.events.push({ name: 'rtc-' + pc.connectionState, at: now(), currentTime: v.currentTime });
      if (pc.connectionState === 'failed') error({ type: 'webrtc', detail: 'connection failed', fatal: true });
    };
    (async () => {
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === 'complete') resolve();
        pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
        setTimeout(resolve, 3000);
      });
      const resp = await fetch(url, { method: 'POST', body: pc.localDescription.sdp,
        headers: { 'Content-Type': 'application/sdp' } });
      const text = await resp.text();
      if (resp.status !== 201) {
        error({ type: 'whep', detail: resp.status + ' ' + text, fatal: true });
        return;
      }
      T.rtc.location = resp.headers.get('Location');
      await pc.setRemoteDescription({ type: 'answer', sdp: text });
    })().catch((e) => error({ type: 'whep', detail: String(e), fatal: true }));
    setInterval(async () => {
      (await pc.getStats()).forEach((st) => {
        if (st.type === 'inbound-rtp' && st.kind === 'audio') {
          T.rtc.audioSamples = (st.totalSamplesReceived || 0) - (st.concealedSamples || 0);
          T.rtc.audioEnergy = st.totalAudioEnergy || 0;
        }
      });
    }, 250);
  } else {
    error({ type: 'harness', detail: 'unknown mode ' + mode, fatal: true });
  }
  // An AbortError only says a new load replaced this play(); the autoplay attribute plays it then anyway.
  const play = () => v.play().catch((e) => error({ type: 'play', detail: String(e), fatal: e.name !== 'AbortError' }));
  if (mode === 'hls') window.player.on(Hls.Events.MANIFEST_PARSED, play);
  else if (mode !== 'whep') play();

  // A small copy of the current picture: a hash to tell frames apart, and the spread of its luma to tell
  // a real picture from a black or uniform one. MSE-fed video does not taint the canvas, even cross-origin.
  const canvas = document.createElement('canvas');
  canvas.width = 64;
  canvas.height = 36;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  function picture() {
    if (v.readyState < 2 || !v.videoWidth) return null;
    ctx.drawImage(v, 0, 0, canvas.width, canvas.height);
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let hash = 2166136261;
    let sum = 0;
    let sum2 = 0;
    const n = px.length / 4;
    for (let i = 0; i < px.length; i += 4) {
      for (let c = 0; c < 3; c++) hash = Math.imul(hash ^ px[i + c], 16777619) >>> 0;
      const y = 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
      sum += y;
      sum2 += y * y;
    }
    const mean = sum / n;
    return { hash: hash.toString(16), lumaStd: Math.sqrt(Math.max(0, sum2 / n - mean * mean)) };
  }

  window.snapshot = function () {
    const q = v.getVideoPlaybackQuality();
    const b = v.buffered;
    return {
      at: now(),
      currentTime: v.currentTime,
      bufferedEnd: b.length ? b.end(b.length - 1) : 0,
      readyState: v.readyState,
      paused: v.paused,
      videoWidth: v.videoWidth,
      videoHeight: v.videoHeight,
      totalVideoFrames: q.totalVideoFrames,
      droppedVideoFrames: q.droppedVideoFrames,
      presentedFrames: T.presented,
      audioDecodedBytes: mode === 'whep' ? T.rtc.audioSamples : v.webkitAudioDecodedByteCount || 0,
      audioEnergy: mode === 'whep' ? T.rtc.audioEnergy : null,
      rtcState: mode === 'whep' ? T.rtc.state : null,
      lat: T.lat.slice(-20),
      firstFrameAt: T.firstFrameAt,
      picture: picture(),
      mediaError: v.error ? { code: v.error.code, message: v.error.message } : null,
      errors: T.errors.slice(),
      events: T.events.slice(),
    };
  };
})();
