// The streams list: every live stream with a still, its codec, size, bitrate and viewers (from the API),
// a click to watch; the URLs to publish and play, ready to copy.
import { $, h, Api, ApiError, apiBase, audioText, copyable, fmtDuration, fmtKbps, loadConfig, loginForm,
  playUrls, playerHref, publishUrls, videoText } from './common.js';

const REFRESH_MS = 2000;
const STILL_MS = 10000; // a new still at most this often (the server makes one per stream per 5 s at most)

let cfg;
let api;
const vhostNames = {};
const cards = new Map(); // stream id -> {el, refresh(stream)}

function publishBlock() {
  const app = $('#app').value.trim() || 'live';
  const stream = $('#stream').value.trim() || 'test';
  const p = publishUrls(cfg, app, stream);
  $('#publish').replaceChildren(
    copyable('OBS server', p.server), copyable('OBS stream key', p.key), copyable('RTMP URL', p.url),
    copyable('ffmpeg', p.ffmpeg));
  const urls = playUrls(cfg, { app, stream });
  $('#play').replaceChildren(...Object.entries(urls).map(([k, v]) => copyable(k, v)),
    copyable('In this browser', new URL(playerHref({ app, stream }), location.href).href));
  $('#hint').textContent = cfg.hls ? 'HLS starts about one fragment (2 s with the built-in defaults) after the ' +
    'publisher; the other URLs play at once.' : 'HLS is off on this server (hls { enabled on; } turns it on).';
}

function card(s) {
  const name = `${s.app}/${s.name}`;
  const vhost = vhostNames[s.vhost];
  const target = { app: s.app, stream: s.name, vhost };
  const img = h('img', { alt: `${name} now`, loading: 'lazy', width: 320, height: 180 });
  const still = h('div', { class: 'still' }, img, h('span', { class: 'badge live' }, 'LIVE'),
    h('span', { class: 'badge viewers' }));
  const info = h('div', { class: 'info' });
  const urls = h('details', { class: 'urls' }, h('summary', {}, 'URLs'));
  const el = h('article', { class: 'stream card', dataset: { id: s.id, name } },
    h('a', { href: playerHref(target), class: 'watch', title: `Watch ${name}` }, still,
      h('h2', {}, name, vhost && vhost !== '__defaultVhost__' ? h('small', {}, ` @${vhost}`) : null)),
    info, urls);
  let lastStill = 0;
  let urlsFor = null;
  const refresh = (s) => {
    const audioOnly = !s.video;
    still.classList.toggle('audio-only', audioOnly);
    if (!audioOnly && Date.now() - lastStill > STILL_MS) {
      lastStill = Date.now();
      const next = new Image();
      next.onload = () => { img.src = next.src; still.classList.remove('no-still'); };
      next.onerror = () => still.classList.add('no-still');
      next.src = `/livesrv/thumbs/${encodeURIComponent(s.id)}.jpg?t=${lastStill}`;
    }
    still.querySelector('.viewers').textContent = `${s.viewers} watching`;
    info.replaceChildren(
      h('span', { class: 'video' }, videoText(s.video)),
      h('span', { class: 'audio' }, audioText(s.audio)),
      h('span', { class: 'kbps' }, fmtKbps(s.kbps.recv_30s)),
      h('span', { class: 'viewers' }, `${s.viewers} viewer${s.viewers === 1 ? '' : 's'}`),
      h('span', { class: 'uptime' }, `live ${fmtDuration((Date.now() - s.live_ms) / 1000)}`));
    const hls = !!s.hls;
    if (urlsFor !== hls) {
      urlsFor = hls;
      urls.replaceChildren(urls.firstChild, ...Object.entries(playUrls(cfg, target, hls)).map(([k, v]) => copyable(k, v)));
    }
  };
  return { el, refresh };
}

async function refresh() {
  let body;
  try {
    body = await api.get('/api/v1/streams?count=1000');
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      if (!$('#login')) $('#auth').append(loginForm(api, refresh));
      return;
    }
    $('#error').hidden = false;
    $('#error').textContent = `The stream list is not available: ${e.message}`;
    return;
  }
  $('#error').hidden = true;
  const live = body.streams.filter((s) => s.publish.active);
  if (live.some((s) => !(s.vhost in vhostNames))) {
    try {
      for (const v of (await api.get('/api/v1/vhosts')).vhosts) vhostNames[v.id] = v.name;
    } catch (e) { /* names stay unknown: default vhost URLs */ }
  }
  const seen = new Set();
  for (const s of live) {
    seen.add(s.id);
    let c = cards.get(s.id);
    if (!c) {
      c = card(s);
      cards.set(s.id, c);
      $('#streams').append(c.el);
    }
    c.refresh(s);
  }
  for (const [id, c] of cards) {
    if (!seen.has(id)) {
      c.el.remove();
      cards.delete(id);
    }
  }
  $('#count').textContent = live.length ? `(${live.length})` : '';
  $('#empty').hidden = live.length > 0;
  document.body.dataset.ready = 'true';
}

async function main() {
  cfg = await loadConfig();
  api = new Api(apiBase(cfg));
  $('#names').addEventListener('input', publishBlock);
  publishBlock();
  $('#footer').replaceChildren(`livesrv ${cfg.version} · API `, h('code', {}, api.base),
    !cfg.players['mpegts.js'] ? ' · the players are not installed (scripts/serve installs them with npm): ' +
      'the browser plays HLS natively where it can' : '');
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

main().catch((e) => {
  $('#error').hidden = false;
  $('#error').textContent = String(e);
});
