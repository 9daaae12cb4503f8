// The player page: /player.html?app=live&stream=test[&vhost=v][&mode=auto|flv|ws|hls|native|webrtc]
import { $, h, Api, apiBase, audioText, copyable, fmtKbps, loadConfig, playUrls, secure, streamPath, videoText,
  whepUrl } from './common.js';
import { LivePlayer, MODES } from './player.js';

const q = new URLSearchParams(location.search);
const s = { app: q.get('app') || 'live', stream: q.get('stream') || '', vhost: q.get('vhost') || '' };
const video = $('#video');
const status = $('#status');
const note = $('#note');
let player = null;

function say(text) {
  note.hidden = !text;
  note.textContent = text || '';
}

function show(p) {
  const words = { connecting: 'connecting…', reconnecting: 'reconnecting…', buffering: 'buffering…',
    paused: 'paused', playing: '', idle: '' };
  status.textContent = p.state === 'reconnecting' || p.state === 'buffering'
    ? `${words[p.state]} ${p.detail}` : words[p.state] ?? p.state;
  status.hidden = !status.textContent;
  document.body.dataset.state = p.state;
}

function stats() {
  if (!player || !player.mode) return;
  const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
  const parts = [`${MODES[player.mode]}`];
  if (video.videoWidth) parts.push(`${video.videoWidth}×${video.videoHeight}`);
  parts.push(`${player.mode === 'webrtc' ? 'jitter buffer' : 'buffer'} ${player.buffer().toFixed(2)} s`);
  if (video.playbackRate !== 1) parts.push(`rate ${video.playbackRate.toFixed(2)}×`);
  if (q) parts.push(`${q.totalVideoFrames} frames, ${q.droppedVideoFrames} dropped`);
  if (player.cuts) parts.push(`${player.cuts} latency cut${player.cuts > 1 ? 's' : ''}`);
  if (player.restarts) parts.push(`${player.restarts} reconnect${player.restarts > 1 ? 's' : ''}`);
  $('#stats').textContent = parts.join(' · ');
}

// What the API says about the stream (codec, size, bitrate, viewers), when it is reachable without asking.
let described = true;
async function describe(api) {
  if (!described) return;
  try {
    const { streams } = await api.get('/api/v1/streams?count=1000');
    const found = streams.find((x) => x.app === s.app && x.name === s.stream);
    $('#meta').textContent = !found ? 'not live right now: the page plays as soon as it is'
      : !found.publish.active ? 'the publisher left: waiting for it to come back'
        : `${videoText(found.video)} · ${audioText(found.audio)} · ${fmtKbps(found.kbps.recv_30s)} · ` +
          `${found.viewers} viewer${found.viewers === 1 ? '' : 's'}`;
  } catch (e) {
    $('#meta').textContent = '';
    if (e.status === 401 || e.status === 403) described = false; // the API wants credentials: ask no more
  }
}

async function main() {
  if (!s.stream) {
    status.textContent = 'no stream given: open a stream from the list';
    return;
  }
  document.title = `${s.app}/${s.stream} · livesrv`;
  $('#title').textContent = `${s.app}/${s.stream}`;
  const cfg = await loadConfig(s.vhost);
  const urls = playUrls(cfg, s);
  const path = streamPath(s.app, s.stream);
  const vq = s.vhost ? '?vhost=' + encodeURIComponent(s.vhost) : '';
  const ws = secure() ? 'wss:' : 'ws:';
  player = window.livesrvPlayer = new LivePlayer(video, {
    flv: `${location.origin}${path}.flv${vq}`, ws: `${ws}//${location.host}${path}.flv${vq}`,
    hls: `${location.origin}${path}.m3u8${vq}`, whep: whepUrl(cfg, s),
  }, show);
  // Leaving the page ends the connection now (a WebRTC session is DELETEd) rather than at its timeout.
  addEventListener('pagehide', () => player.stop());
  addEventListener('pageshow', (e) => { if (e.persisted && player.mode) player.start(player.mode); });
  $('#urls').append(...Object.entries(urls).map(([k, v]) => copyable(k, v)));

  const modes = await LivePlayer.available(video, cfg);
  const missing = Object.entries(cfg.players).filter(([, ok]) => !ok).map(([name]) => name);
  const notes = [];
  if (missing.length) {
    notes.push(`${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} not installed on this server ` +
      '(scripts/serve installs the players with npm), so ' +
      (modes.length ? `this page plays ${MODES[modes[0]]}.` : 'this browser has nothing to play the stream with.'));
  }
  if (!modes.length) {
    notes.push(cfg.hls ? 'This browser plays neither HTTP-FLV nor HLS here: use a player with the URLs below.'
      : 'HLS is off on this server and HTTP-FLV needs mpegts.js: use a player with the URLs below.');
  }
  say(notes.join(' '));
  const wanted = q.get('mode');
  const buttons = {};
  const choose = (mode, manual) => {
    if (manual) {
      const u = new URL(location.href);
      u.searchParams.set('mode', mode);
      history.replaceState(null, '', u);
    }
    for (const [m, b] of Object.entries(buttons)) b.setAttribute('aria-pressed', String(m === mode));
    player.start(mode);
  };
  for (const [mode, label] of Object.entries(MODES)) {
    const ok = modes.includes(mode);
    buttons[mode] = h('button', { type: 'button', dataset: { mode }, disabled: !ok,
      title: ok ? `Play over ${label}` : `${label} is not available here`, onclick: () => choose(mode, true) }, label);
  }
  $('#modes').append(...Object.values(buttons));
  if (modes.length) choose(modes.includes(wanted) ? wanted : modes[0], false);

  const unmute = $('#unmute');
  unmute.hidden = false;
  unmute.addEventListener('click', () => {
    video.muted = false;
    unmute.hidden = true;
    video.play().catch(() => {});
  });
  $('#fullscreen').addEventListener('click', () => {
    const stage = $('#stage');
    if (document.fullscreenElement) document.exitFullscreen();
    else if (stage.requestFullscreen) stage.requestFullscreen();
    else if (video.webkitEnterFullscreen) video.webkitEnterFullscreen();
  });
  setInterval(stats, 500);
  const api = new Api(apiBase(cfg));
  describe(api);
  setInterval(() => describe(api), 5000);
}

main().catch((e) => { status.textContent = String(e); });
