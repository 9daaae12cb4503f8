// What the pages share: the server's page config, the API client (CORS, Basic auth), URLs, formatting, DOM.
// Everything shown comes from the public HTTP API; /livesrv/config.json only says where it is.

export const $ = (sel, root = document) => root.querySelector(sel);

// h('div', {class: 'x', onclick: f}, 'text', child...): a DOM element.
export function h(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// The server's page config; with a vhost, what that vhost plays over (HTTP-FLV, HLS, WebRTC).
export async function loadConfig(vhost = '') {
  const r = await fetch('/livesrv/config.json' + vhostQuery(vhost), { cache: 'no-store' });
  if (!r.ok) throw new Error(`/livesrv/config.json: HTTP ${r.status}`);
  return r.json();
}

// The API's address: ?api=URL (kept for the session), else the page's host with the API's port for the page's
// scheme: a page loaded over HTTPS may only call https:// (http_api { https { ... } }), one over HTTP calls the
// plain API (or the HTTPS one when that is all there is).
export function apiBase(cfg) {
  const q = new URLSearchParams(location.search).get('api');
  if (q) sessionStorage.setItem('livesrv.api', q.replace(/\/+$/, ''));
  const saved = sessionStorage.getItem('livesrv.api');
  if (saved) return saved;
  const { api, api_https: apiHttps } = cfg.ports;
  if (secure() ? apiHttps : !api && apiHttps) return `https://${location.hostname}:${apiHttps}`;
  return `http://${location.hostname}:${api || 1985}`;
}

// Was this page loaded over HTTPS (every URL it uses must then be https:// or wss://)?
export function secure() { return location.protocol === 'https:'; }

export class ApiError extends Error {
  constructor(status, body, path) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.path = path;
  }
}

// The HTTP API with Basic auth credentials kept for the browser session. Requests carry no cookies and no
// browser-managed credentials (credentials: 'omit'), so a 401 comes back to the page, which asks itself.
export class Api {
  constructor(base) {
    this.base = base;
    this.key = 'livesrv.auth.' + base;
  }
  get auth() { return sessionStorage.getItem(this.key); }
  login(user, password) {
    sessionStorage.setItem(this.key, btoa(unescape(encodeURIComponent(`${user}:${password}`))));
  }
  logout() { sessionStorage.removeItem(this.key); }
  async request(method, path) {
    const headers = {};
    if (this.auth) headers.Authorization = 'Basic ' + this.auth;
    let r;
    try {
      r = await fetch(this.base + path, { method, headers, credentials: 'omit', cache: 'no-store' });
    } catch (e) {
      const why = secure() && this.base.startsWith('http:') ? 'this page was loaded over HTTPS and may not call ' +
        'an http:// API: turn on http_api { https { enabled on; } }' : e.message;
      throw new ApiError(0, { error: `the API at ${this.base} cannot be reached (${why})` }, path);
    }
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok || (body && body.code)) throw new ApiError(r.status, body, path);
    return body;
  }
  get(path) { return this.request('GET', path); }
  del(path) { return this.request('DELETE', path); }
}

// A login form for the API's Basic auth; calls done() once the credentials are accepted.
export function loginForm(api, done) {
  const user = h('input', { name: 'username', autocomplete: 'username', placeholder: 'username', required: true });
  const pass = h('input', { name: 'password', type: 'password', autocomplete: 'current-password',
    placeholder: 'password', required: true });
  const msg = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'login card', id: 'login' },
    h('h2', {}, 'The API asks for credentials'),
    h('p', {}, 'This server has ', h('code', {}, 'http_api { auth { ... } }'),
      ' on: sign in with its username and password (kept for this browser session only).'),
    h('label', {}, 'Username ', user), h('label', {}, 'Password ', pass),
    h('button', { type: 'submit' }, 'Sign in'), msg);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    api.login(user.value, pass.value);
    try {
      await api.get('/api/v1/versions');
      form.remove();
      done();
    } catch (e) {
      api.logout();
      msg.textContent = e.status === 401 ? 'Wrong username or password.' : e.message;
    }
  });
  return form;
}

// A stream's path with every name part percent-encoded (a multi-level app keeps its '/').
export function streamPath(app, stream) {
  return '/' + [...app.split('/'), stream].map(encodeURIComponent).join('/');
}

function vhostQuery(vhost) {
  return vhost && vhost !== '__defaultVhost__' ? '?vhost=' + encodeURIComponent(vhost) : '';
}

// rtmp://host[:port], or with tls rtmps://host[:port] (the RTMPS listener; null when it is off).
export function rtmpBase(cfg, tls = false) {
  const [scheme, port, standard] = tls ? ['rtmps', cfg.ports.rtmps, 443] : ['rtmp', cfg.ports.rtmp, 1935];
  if (tls && !port) return null;
  return `${scheme}://${location.hostname}${port && port !== standard ? ':' + port : ''}`;
}

// The RTMP(S) base a publisher is told to use: RTMPS when this page came over HTTPS and RTMPS is on.
function publishBase(cfg) {
  return (secure() && rtmpBase(cfg, true)) || rtmpBase(cfg);
}

// A stream's WHEP URL (WebRTC playback, SRS's URL on the API's port: the HTTPS API's on a page loaded over HTTPS).
export function whepUrl(cfg, s) {
  const q = new URLSearchParams({ app: s.app, stream: s.stream });
  if (s.vhost && s.vhost !== '__defaultVhost__') q.set('vhost', s.vhost);
  return `${apiBase(cfg)}/rtc/v1/whep/?${q}`;
}

// Every URL a stream plays at (s: {vhost, app, stream}); HLS only when the vhost writes it, WHEP only when the
// server plays over WebRTC. The HTTP URLs have the page's own scheme and host (https:// and wss:// on a page
// loaded over HTTPS).
export function playUrls(cfg, s, hls = cfg.hls) {
  const p = streamPath(s.app, s.stream);
  const q = vhostQuery(s.vhost);
  const ws = secure() ? 'wss:' : 'ws:';
  const urls = { 'RTMP': `${rtmpBase(cfg)}${p}${q}` };
  if (rtmpBase(cfg, true)) urls['RTMPS'] = `${rtmpBase(cfg, true)}${p}${q}`;
  if (cfg.flv) {
    urls['HTTP-FLV'] = `${location.origin}${p}.flv${q}`;
    urls['WS-FLV'] = `${ws}//${location.host}${p}.flv${q}`;
  }
  if (hls) urls['HLS'] = `${location.origin}${p}.m3u8${q}`;
  if (cfg.flv) urls['HTTP-TS'] = `${location.origin}${p}.ts${q}`;
  if (cfg.rtc) urls['WebRTC (WHEP)'] = whepUrl(cfg, s);
  return urls;
}

export function publishUrls(cfg, app, stream) {
  const server = `${publishBase(cfg)}/${app}`;
  const url = `${server}/${stream}`;
  return {
    server, key: stream, url,
    ffmpeg: `ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 ` +
      `-c:v libx264 -preset veryfast -tune zerolatency -g 60 -c:a aac -f flv ${url}`,
  };
}

export function playerHref(s) {
  const q = new URLSearchParams({ app: s.app, stream: s.stream });
  if (s.vhost && s.vhost !== '__defaultVhost__') q.set('vhost', s.vhost);
  return '/player.html?' + q;
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (e) { // no clipboard API outside secure contexts (http://<LAN address>): the old way
    const t = h('textarea', { style: 'position:fixed;opacity:0' }, text);
    document.body.append(t);
    t.select();
    const ok = document.execCommand('copy');
    t.remove();
    return ok;
  }
}

// A labelled value with a Copy button.
export function copyable(label, text) {
  const btn = h('button', { type: 'button', class: 'copy', title: 'Copy to the clipboard' }, 'Copy');
  btn.addEventListener('click', async () => {
    btn.textContent = (await copy(text)) ? 'Copied' : 'Select and copy';
    setTimeout(() => { btn.textContent = 'Copy'; }, 1500);
  });
  return h('div', { class: 'copyable', dataset: { label } },
    h('span', { class: 'label' }, label), h('code', {}, text), btn);
}

export function fmtKbps(kbps) {
  if (!kbps) return '0 kbit/s';
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(kbps >= 10000 ? 0 : 1)} Mbit/s` : `${Math.round(kbps)} kbit/s`;
}

export function fmtBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}

export function fmtDuration(s) {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), hh = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60, ss = s % 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${ss}s`;
  return `${ss}s`;
}

export function videoText(v) {
  if (!v) return 'no video';
  const size = v.width && v.height ? ` ${v.width}×${v.height}` : '';
  const profile = v.profile && v.profile !== 'Other' ? ` ${v.profile}` : '';
  return `${v.codec}${profile}${size}`;
}

export function audioText(a) {
  if (!a) return 'no audio';
  const rate = a.sample_rate ? ` ${a.sample_rate / 1000} kHz` : '';
  return `${a.codec}${rate}${a.channel === 1 ? ' mono' : a.channel === 2 ? ' stereo' : ''}`;
}

// The players' scripts (npm packages the server serves), loaded once; resolves false when missing.
const scripts = {};
export function loadScript(src) {
  if (!scripts[src]) {
    scripts[src] = new Promise((resolve) => {
      const s = h('script', { src });
      s.onload = () => resolve(true);
      s.onerror = () => resolve(false);
      document.head.append(s);
    });
  }
  return scripts[src];
}
