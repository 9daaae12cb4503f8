// A live player on one <video>: HTTP-FLV and WS-FLV through mpegts.js, HLS through hls.js or the browser's
// own HLS, WebRTC through the browser's RTCPeerConnection (WHEP). It starts muted (browsers allow only muted
// autoplay), keeps latency low, and recovers by itself: when the stream ends, the connection drops or playback
// stalls, it starts again (with a backoff) on the same element, without reloading the page. No DOM other than
// the <video>: the page shows `state`.

import { loadScript } from './common.js';

// mpegts.js for HTTP-FLV and WS-FLV: no stash buffer (bytes go to the decoder as they come), no playback
// rate games (the browser then wants more audio buffered, and stalls); a backlog over 2 s (a background tab)
// is cut by mpegts.js itself, the finer cuts are ours (SYNC, below).
export const FLV_OPTIONS = {
  enableWorker: false,
  enableStashBuffer: false,
  lazyLoad: false,
  autoCleanupSourceBuffer: true,
  autoCleanupMaxBackwardDuration: 30,
  autoCleanupMinBackwardDuration: 15,
  liveSync: false,
  liveBufferLatencyChasing: true,
  liveBufferLatencyMaxLatency: 2.0,
  liveBufferLatencyMinRemain: 0.5,
};

// Latency control for HTTP-FLV and WS-FLV. The server sends media in batches (play { mw_latency }, 350 ms by
// default), so what is buffered ahead of the picture swings by a batch; what can be cut is only what stays
// buffered even just before a batch comes: the lowest buffer over the last WINDOW_MS. When that is over
// EXCESS seconds (the start from the cached GOP, the backlog a stall leaves) the player jumps ahead within its
// buffer, keeping KEEP seconds. Whatever the batch interval or the network's jitter, the picture then runs
// as close behind the newest media as the browser plays without stalling. Measured in docs/performance.md.
export const SYNC = { WINDOW_MS: 2000, EXCESS: 0.12, KEEP: 0.04, EVERY_MS: 40 };

// hls.js: three segments behind the live edge (2 s segments with livesrv's defaults), catching up by playing
// faster rather than jumping; retries of a missing playlist are ours (the stream may not be there yet).
export const HLS_OPTIONS = {
  liveSyncDurationCount: 3,
  maxLiveSyncPlaybackRate: 1.5,
  backBufferLength: 30,
  manifestLoadingMaxRetry: 2,
};

export const MODES = {
  flv: 'HTTP-FLV',
  ws: 'WS-FLV',
  hls: 'HLS (hls.js)',
  native: 'HLS (native)',
  webrtc: 'WebRTC',
};

// WebRTC (WHEP): no ICE servers (the server's answer names the addresses it is reached at); the offer is sent
// once its candidates are gathered (the server takes no trickled ones), waiting at most GATHER_MS for them.
const GATHER_MS = 2000;
const RTC_STATS_MS = 500;

const STALL_SECONDS = { flv: 5, ws: 5, hls: 15, native: 15, webrtc: 5 };
const FIRST_FRAME_SECONDS = 40; // a viewer may wait for the publisher (play { wait_timeout 30 })
const MAX_BACKOFF_MS = 5000;

export function nativeHls(video) {
  return !!video.canPlayType('application/vnd.apple.mpegurl');
}

export class LivePlayer {
  // urls: {flv, ws, hls, whep}; onchange(player) is called at every state change.
  constructor(video, urls, onchange = () => {}) {
    this.video = video;
    this.urls = urls;
    this.onchange = onchange;
    this.mode = null;
    this.state = 'idle';
    this.detail = '';
    this.restarts = 0;
    this.errors = [];
    this.impl = null;
    this.backoff = 500;
    this.lastTime = 0;
    this.lastProgress = 0;
    this.startedAt = 0;
    this.timer = null;
    this.watchdog = setInterval(() => this.check(), 1000);
    this.headroom = []; // [[time, seconds buffered ahead]] over the last SYNC.WINDOW_MS
    this.cuts = 0; // jumps ahead (latency cut)
    this.syncTimer = setInterval(() => this.sync(), SYNC.EVERY_MS);
    video.muted = true;
    video.playsInline = true;
    video.autoplay = true;
    this.userPaused = false;
    this.quietUntil = 0;
    for (const ev of ['play', 'playing', 'waiting', 'pause']) video.addEventListener(ev, () => this.onMedia(ev));
    video.addEventListener('error', () => {
      if (this.mode === 'native' && video.error) this.restart(`media error ${video.error.code}`);
    });
  }

  // Which modes this browser and server can play, best first: the first is the automatic choice. WebRTC
  // comes last: its picture is the closest to live, but it needs UDP between browser and server (the
  // server's ICE candidate, firewalls, NAT: nothing the page can know before trying), starts at the next
  // keyframe (no cached GOP), plays H.264 only and without B-frames, and costs the server more per viewer;
  // HTTP-FLV plays wherever HTTP does. It is a click away, and the automatic choice where nothing else plays.
  static async available(video, cfg) {
    const out = [];
    const mse = !!(window.MediaSource || window.ManagedMediaSource);
    if (cfg.flv && cfg.players['mpegts.js'] && mse && await loadScript('/livesrv/vendor/mpegts.js') &&
        window.mpegts && mpegts.getFeatureList().mseLivePlayback) {
      out.push('flv', 'ws');
    }
    if (cfg.hls && nativeHls(video) && !mse) out.push('native'); // iOS: the browser's own HLS first
    if (cfg.hls && cfg.players['hls.js'] && mse && await loadScript('/livesrv/vendor/hls.js') &&
        window.Hls && Hls.isSupported()) {
      out.push('hls');
    }
    if (cfg.hls && nativeHls(video) && !out.includes('native')) out.push('native');
    if (cfg.rtc && window.RTCPeerConnection) out.push('webrtc');
    return out;
  }

  set(state, detail = '') {
    if (state === this.state && detail === this.detail) return;
    this.state = state;
    this.detail = detail;
    this.onchange(this);
  }

  start(mode) {
    this.stop();
    this.mode = mode;
    this.startedAt = performance.now();
    this.lastProgress = performance.now();
    this.lastTime = -1;
    this.progressSince = -1; // when media started moving again after this (re)start
    this.set('connecting');
    try {
      if (mode === 'flv' || mode === 'ws') this.impl = this.startFlv(mode === 'flv' ? this.urls.flv : this.urls.ws);
      else if (mode === 'hls') this.impl = this.startHls();
      else if (mode === 'native') this.impl = this.startNative();
      else if (mode === 'webrtc') this.impl = this.startWebrtc();
      else throw new Error('unknown mode ' + mode);
    } catch (e) {
      this.restart(String(e));
      return;
    }
    const p = this.video.play();
    if (p) p.catch(() => {}); // a new load aborts the previous play(): autoplay plays it anyway
  }

  startFlv(url) {
    const p = mpegts.createPlayer({ type: 'flv', isLive: true, url }, FLV_OPTIONS);
    p.on(mpegts.Events.ERROR, (type, detail) => this.restart(`${type}: ${detail}`));
    // The server ended the body: the publisher did not come back within republish_grace, or the stream ended.
    p.on(mpegts.Events.LOADING_COMPLETE, () => this.restart('the stream ended'));
    p.attachMediaElement(this.video);
    p.load();
    return { destroy: () => { p.pause(); p.unload(); p.detachMediaElement(); p.destroy(); } };
  }

  startHls() {
    const hls = new Hls(HLS_OPTIONS);
    hls.on(Hls.Events.ERROR, (e, d) => {
      if (!d.fatal) return;
      if (d.type === Hls.ErrorTypes.MEDIA_ERROR && !this.mediaRecovered) {
        this.mediaRecovered = true;
        hls.recoverMediaError();
      } else {
        this.restart(d.details === 'manifestLoadError' ? 'no playlist yet' : `${d.type}: ${d.details}`);
      }
    });
    this.mediaRecovered = false;
    hls.loadSource(this.urls.hls);
    hls.attachMedia(this.video);
    return { destroy: () => hls.destroy() };
  }

  startNative() {
    this.video.src = this.urls.hls;
    return { destroy: () => { this.video.removeAttribute('src'); this.video.load(); } };
  }

  // WHEP: a receive-only peer connection whose offer is POSTed to the server, the answer (201) starts the media
  // and its Location is DELETEd when this ends (a restart, another mode, leaving the page). A <video> fed by
  // WebRTC has no buffer to measure and its currentTime runs on whatever arrives: progress is the RTP packets
  // received (audio or video), the buffer the jitter buffer's delay, both from the connection's stats.
  startWebrtc() {
    const url = this.urls.whep;
    const video = this.video;
    const pc = new RTCPeerConnection();
    const media = new MediaStream();
    const impl = { packets: 0, delay: 0, location: null, closed: false, seen: {} };
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.ontrack = (e) => {
      media.addTrack(e.track);
      if (video.srcObject !== media) video.srcObject = media;
      video.play().catch(() => {}); // autoplay plays it anyway once there is a frame
    };
    const ended = (state, reason) => {
      if (!impl.closed && (state === 'failed' || state === 'closed')) this.restart(reason);
    };
    pc.onconnectionstatechange = () => ended(pc.connectionState, `WebRTC connection ${pc.connectionState}`);
    const poll = setInterval(async () => {
      let stats;
      try { stats = await pc.getStats(); } catch (e) { return; } // closed meanwhile
      let packets = 0;
      const jitter = {};
      stats.forEach((st) => {
        if (st.type !== 'inbound-rtp') return;
        packets += st.packetsReceived || 0;
        jitter[st.kind] = [st.jitterBufferDelay || 0, st.jitterBufferEmittedCount || 0];
      });
      impl.packets = packets;
      // The jitter buffer's delay over the last interval: video's, or audio's in an audio-only stream.
      const kind = jitter.video && jitter.video[1] ? 'video' : 'audio';
      const [delay, count] = jitter[kind] || [0, 0];
      const seen = impl.seen.kind === kind ? impl.seen : { delay: 0, count: 0 };
      if (count > seen.count) impl.delay = (delay - seen.delay) / (count - seen.count);
      impl.seen = { kind, delay, count };
    }, RTC_STATS_MS);
    impl.destroy = () => {
      impl.closed = true;
      clearInterval(poll);
      if (impl.location) endWhep(impl.location);
      pc.close();
      if (video.srcObject === media) video.srcObject = null;
    };
    (async () => {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, GATHER_MS);
      if (impl.closed) return;
      const r = await fetch(url, { method: 'POST', body: pc.localDescription.sdp, credentials: 'omit',
        cache: 'no-store', headers: { 'Content-Type': 'application/sdp' } });
      const answer = await r.text();
      if (r.status !== 201) throw new Error(`WHEP ${r.status}: ${answer.trim() || r.statusText}`);
      const location = r.headers.get('Location');
      if (location) impl.location = new URL(location, url).href;
      if (impl.closed) { // ended while the server answered
        if (impl.location) endWhep(impl.location);
        return;
      }
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      // The server ending the session (the stream ended, the viewer was kicked) closes DTLS, which the
      // connection's state does not show.
      const dtls = pc.getReceivers()[0] && pc.getReceivers()[0].transport;
      if (dtls) dtls.onstatechange = () => ended(dtls.state, `the server ended the session (DTLS ${dtls.state})`);
    })().catch((e) => {
      if (!impl.closed) this.restart(e instanceof TypeError ? `WHEP: ${e.message}` : String(e.message || e));
    });
    return impl;
  }

  stop() {
    this.quietUntil = performance.now() + 1000; // the pause this causes is not the viewer's
    clearTimeout(this.timer);
    this.timer = null;
    if (this.impl) {
      try { this.impl.destroy(); } catch (e) { /* already gone */ }
      this.impl = null;
    }
  }

  // Start again after a problem, on the same element: 0.5 s, then doubling to 5 s while nothing plays.
  restart(reason) {
    if (this.timer) return;
    if (this.errors.length < 50) this.errors.push({ at: Math.round(performance.now()), mode: this.mode, reason });
    const mode = this.mode;
    this.stop();
    this.restarts += 1;
    const delay = this.backoff;
    this.backoff = Math.min(MAX_BACKOFF_MS, this.backoff * 2);
    this.set('reconnecting', `${reason}; trying again in ${(delay / 1000).toFixed(1)} s`);
    this.timer = setTimeout(() => { this.timer = null; this.start(mode); }, delay);
  }

  onMedia(ev) {
    if (ev === 'play' || ev === 'playing') this.userPaused = false;
    if (ev === 'playing') this.set('playing');
    else if (ev === 'waiting' && this.state === 'playing') this.set('buffering');
    else if (ev === 'pause' && this.impl && !this.timer && performance.now() > this.quietUntil) {
      this.userPaused = true;
      this.set('paused');
    }
  }

  // Once a second: progress resets the backoff; a stall (or no first frame) past its limit restarts.
  // Progress is currentTime moving, over WebRTC the packets received (see startWebrtc).
  check() {
    if (!this.impl || this.timer) return;
    const v = this.video;
    const now = performance.now();
    const mark = this.mode === 'webrtc' ? this.impl.packets : v.currentTime;
    if (mark !== this.lastTime) {
      // Five seconds of steady progress since the (re)start: the next problem is retried quickly again.
      if (this.progressSince < 0) this.progressSince = now;
      else if (now - this.progressSince > 5000) this.backoff = 500;
      if (this.lastTime >= 0 && !v.paused && this.state !== 'playing') this.set('playing');
      this.lastTime = mark;
      this.lastProgress = now;
      return;
    }
    if (this.userPaused) { // the viewer paused it: no stall
      this.lastProgress = now;
      return;
    }
    const started = v.readyState >= 2 && this.lastTime > 0;
    const limit = started ? STALL_SECONDS[this.mode] : FIRST_FRAME_SECONDS;
    if (started && now - this.lastProgress > 1500) this.set('buffering', 'no new media: the publisher may have left');
    if ((now - this.lastProgress) / 1000 > limit) {
      this.restart(started ? `no progress for ${limit} s` : `no picture within ${limit} s`);
    }
  }

  // HTTP-FLV, WS-FLV: jump ahead by what stayed buffered over the last WINDOW_MS beyond KEEP.
  sync() {
    const v = this.video;
    const live = (this.mode === 'flv' || this.mode === 'ws') && this.impl && !this.timer && !v.paused &&
      v.readyState >= 2 && !v.seeking;
    if (!live) {
      this.headroom = [];
      return;
    }
    const now = performance.now();
    const h = this.headroom;
    h.push([now, this.buffer()]);
    while (h[0][0] < now - SYNC.WINDOW_MS) h.shift();
    if (now - h[0][0] < SYNC.WINDOW_MS * 0.9) return; // not a whole window yet
    const lowest = Math.min(...h.map((x) => x[1]));
    if (lowest > SYNC.EXCESS) {
      v.currentTime += lowest - SYNC.KEEP;
      this.cuts += 1;
      this.headroom = [];
    }
  }

  // Seconds of media buffered ahead of what is shown (the player's share of the latency); over WebRTC, the
  // jitter buffer's delay.
  buffer() {
    if (this.mode === 'webrtc') return this.impl ? this.impl.delay : 0;
    const b = this.video.buffered;
    return b.length ? Math.max(0, b.end(b.length - 1) - this.video.currentTime) : 0;
  }

  destroy() {
    clearInterval(this.watchdog);
    clearInterval(this.syncTimer);
    this.stop();
  }
}

// Resolves once the connection's ICE candidates are gathered, or after ms.
function gathered(pc, ms) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') resolve(); });
    setTimeout(resolve, ms);
  });
}

// Ends a WHEP session: DELETE its Location. keepalive: it is sent even when the page is being left.
function endWhep(location) {
  fetch(location, { method: 'DELETE', credentials: 'omit', keepalive: true }).catch(() => {});
}
