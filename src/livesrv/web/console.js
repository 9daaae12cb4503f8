// The console: server figures, streams with their bitrate and viewers over the last minutes, clients (filter,
// kick), the running config. Everything comes from the public HTTP API, refreshed every REFRESH_MS.
import { $, h, Api, ApiError, apiBase, audioText, fmtBytes, fmtDuration, fmtKbps, loadConfig, loginForm,
  playerHref, videoText } from './common.js';
import { drawChart } from './chart.js';

const REFRESH_MS = 2000;
const MINUTES = 5; // of history in the charts (kept by this page since it opened)
const KBPS = '#2f7de1';
const VIEWERS = '#e0312f';
const OUT = '#23a36b';

let cfg;
let api;
let timer = null;
const history = new Map(); // stream id -> [[t, kbps, viewers]]
const traffic = []; // [t, in kbps, out kbps, viewers]
let lastSummary = null;

function keep(list, now) {
  while (list.length && list[0][0] < now - MINUTES * 60000 - REFRESH_MS) list.shift();
}

// A button that acts on the second click (within 3 s): no modal dialog.
function confirmButton(label, confirmLabel, act) {
  let armed = null;
  const b = h('button', { type: 'button', class: 'danger' }, label);
  b.addEventListener('click', async () => {
    if (!armed) {
      b.textContent = confirmLabel;
      b.classList.add('armed');
      armed = setTimeout(() => { armed = null; b.textContent = label; b.classList.remove('armed'); }, 3000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    b.disabled = true;
    b.textContent = '…';
    try {
      await act();
      refresh();
    } catch (e) {
      showError(e.message, true);
      b.disabled = false;
      b.textContent = label;
      b.classList.remove('armed');
    }
  });
  return b;
}

// An action's error stays 10 s; a refresh's problem goes with the next good refresh.
let errorUntil = 0;
function showError(text, sticky = false) {
  if (!text && Date.now() < errorUntil) return;
  errorUntil = sticky ? Date.now() + 10000 : 0;
  $('#error').hidden = !text;
  $('#error').textContent = text;
}

// Rows keyed by id, made once and updated in place (so a half-confirmed button survives a refresh).
function syncRows(tbody, items, make, update) {
  const rows = new Map([...tbody.rows].map((r) => [r.dataset.id, r]));
  for (const item of items) {
    let row = rows.get(item.id);
    if (!row) {
      row = make(item);
      row.dataset.id = item.id;
      tbody.append(row);
    }
    rows.delete(item.id);
    update(row, item);
  }
  for (const row of rows.values()) row.remove();
}

function cells(row, values) {
  values.forEach((v, i) => {
    const c = row.cells[i];
    if (v instanceof Node) c.replaceChildren(v);
    else if (c.textContent !== String(v)) c.textContent = v;
  });
}

function renderServer(sum, streams, clients, now) {
  const self = sum.self;
  const sys = sum.system;
  let inKbps = 0;
  let outKbps = 0;
  if (lastSummary) {
    const dt = (sys.srs_sample_time - lastSummary.srs_sample_time) / 1000;
    if (dt > 0) {
      inKbps = Math.max(0, (sys.srs_recv_bytes - lastSummary.srs_recv_bytes) * 8 / 1000 / dt);
      outKbps = Math.max(0, (sys.srs_send_bytes - lastSummary.srs_send_bytes) * 8 / 1000 / dt);
    }
  }
  const viewers = streams.reduce((n, s) => n + s.viewers, 0);
  if (lastSummary) traffic.push([now, inKbps, outKbps, viewers]); // a rate needs two samples
  lastSummary = sys;
  keep(traffic, now);
  const fig = (label, value, title) => h('div', { class: 'figure', title, dataset: { figure: label } },
    h('span', { class: 'value' }, value), h('span', { class: 'label' }, label));
  $('#figures').replaceChildren(
    fig('CPU', `${(self.cpu_percent * 100).toFixed(1)}%`, `livesrv; the machine: ${(sys.cpu_percent * 100).toFixed(0)}% of ${sys.cpus} CPUs`),
    fig('Memory', fmtBytes(self.mem_kbyte * 1024), `${(self.mem_percent * 100).toFixed(1)}% of ${fmtBytes(sys.mem_ram_kbyte * 1024)}`),
    fig('In', fmtKbps(inKbps), 'received by livesrv, all protocols'),
    fig('Out', fmtKbps(outKbps), 'sent by livesrv, all protocols'),
    fig('Connections', sys.conn_srs, 'open connections of every listener'),
    fig('Streams', streams.filter((s) => s.publish.active).length, 'live streams'),
    fig('Clients', clients.length, 'publishers, viewers, forwarders, recorders'),
    fig('Uptime', fmtDuration(self.srs_uptime), `pid ${self.pid}, livesrv ${self.version}`),
    fig('Load', sys.load_1m.toFixed(2), '1-minute load average of the machine'));
  drawChart($('#traffic'), [
    { label: 'in', color: KBPS, points: traffic.map((p) => [p[0], p[1]]), axis: 'left', unit: fmtKbps },
    { label: 'out', color: OUT, points: traffic.map((p) => [p[0], p[2]]), axis: 'left', unit: fmtKbps },
    { label: 'viewers', color: VIEWERS, points: traffic.map((p) => [p[0], p[3]]), axis: 'right',
      unit: (v) => String(Math.round(v)), step: true },
  ], { minutes: MINUTES, now });
}

function renderStreams(streams, now) {
  const tbody = $('#streams tbody');
  for (const s of streams) {
    const list = history.get(s.id) || [];
    list.push([now, s.kbps.recv_30s, s.viewers]);
    keep(list, now);
    history.set(s.id, list);
  }
  for (const id of history.keys()) if (!streams.some((s) => s.id === id)) history.delete(id);
  syncRows(tbody, streams, (s) => {
    const row = h('tr', {}, ...Array.from({ length: 8 }, () => h('td')));
    row.cells[6].append(h('canvas', { class: 'chart spark', width: 200, height: 36 }));
    row.cells[7].append(h('a', { href: playerHref({ app: s.app, stream: s.name }), class: 'button' }, 'Watch'), ' ',
      confirmButton('End', 'End it?', () => api.del(`/api/v1/streams/${encodeURIComponent(s.id)}`)));
    return row;
  }, (row, s) => {
    row.classList.toggle('inactive', !s.publish.active);
    cells(row, [`${s.app}/${s.name}`, videoText(s.video), audioText(s.audio), fmtKbps(s.kbps.recv_30s),
      s.viewers, s.publish.active ? fmtDuration((now - s.live_ms) / 1000) : s.state]);
    const list = history.get(s.id);
    drawChart(row.cells[6].firstChild, [
      { color: KBPS, points: list.map((p) => [p[0], p[1]]), unit: fmtKbps },
      { color: VIEWERS, points: list.map((p) => [p[0], p[2]]), unit: String, step: true },
    ], { minutes: MINUTES, now });
  });
  $('#stream-count').textContent = `(${streams.length})`;
  $('#no-streams').hidden = streams.length > 0;
}

function renderClients(clients) {
  const tbody = $('#clients tbody');
  syncRows(tbody, clients, (c) => {
    const row = h('tr', {}, ...Array.from({ length: 9 }, () => h('td')));
    row.cells[8].append(confirmButton('Kick', 'Kick?', async () => {
      await api.del(`/api/v1/clients/${encodeURIComponent(c.id)}`);
      row.remove();
    }));
    return row;
  }, (row, c) => {
    cells(row, [c.id, c.kind, c.protocol, c.url, c.ip, fmtDuration(c.alive), fmtKbps(c.kbps.send_30s),
      fmtKbps(c.kbps.recv_30s)]);
    row.dataset.search = [c.id, c.kind, c.protocol, c.type, c.url, c.ip, c.tcUrl].join(' ').toLowerCase();
  });
  filter();
  $('#client-count').textContent = `(${clients.length})`;
}

function filter() {
  const words = $('#filter').value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const row of $('#clients tbody').rows) row.hidden = !words.every((w) => row.dataset.search.includes(w));
}

// JSON, indented, with lists of plain values (addresses, URLs) kept on one line.
function pretty(value, indent = '') {
  const flat = (v) => v === null || typeof v !== 'object' || (Array.isArray(v) && v.every(flat));
  if (flat(value)) return JSON.stringify(value);
  const inner = indent + '  ';
  const items = Array.isArray(value) ? value.map((v) => inner + pretty(v, inner))
    : Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${pretty(v, inner)}`);
  const [open, close] = Array.isArray(value) ? ['[', ']'] : ['{', '}'];
  return items.length ? `${open}\n${items.join(',\n')}\n${indent}${close}` : open + close;
}

async function loadRunningConfig() {
  try {
    const body = await api.get('/api/v1/config');
    $('#config').textContent = pretty(body.data);
  } catch (e) {
    $('#config').textContent = e.status === 403 ? e.message : `Not available: ${e.message}`;
  }
}

async function refresh() {
  let streams;
  let clients;
  let sum;
  try {
    [streams, clients, sum] = await Promise.all([api.get('/api/v1/streams?count=1000'),
      api.get('/api/v1/clients?count=10000'), api.get('/api/v1/summaries')]);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      stop();
      if (!$('#login')) $('#auth').append(loginForm(api, start));
      return;
    }
    showError(`The API does not answer: ${e.message}`);
    return;
  }
  showError('');
  const now = Date.now();
  renderServer(sum.data, streams.streams, clients.clients, now);
  renderStreams(streams.streams, now);
  renderClients(clients.clients);
  $('#updated').textContent = `updated ${new Date(now).toLocaleTimeString()}`;
  document.body.dataset.ready = 'true';
}

function start() {
  stop();
  refresh();
  loadRunningConfig();
  timer = setInterval(refresh, REFRESH_MS);
}

function stop() {
  clearInterval(timer);
  timer = null;
}

async function main() {
  cfg = await loadConfig();
  api = new Api(apiBase(cfg));
  window.livesrvConsole = { api, refresh };
  $('#api').value = api.base;
  $('#api-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const u = new URL(location.href);
    u.searchParams.set('api', $('#api').value.trim());
    location.href = u.href;
  });
  $('#filter').addEventListener('input', filter);
  $('#config-refresh').addEventListener('click', loadRunningConfig);
  if (!cfg.api.auth) {
    const note = $('#safety');
    note.hidden = false;
    note.append('The API has no auth: anyone who reaches it can read it, and only this machine (127.0.0.1, ::1) ' +
      'may kick clients, end streams and read the config. To manage livesrv from elsewhere, turn auth on in ' +
      'the config file and reload: ', h('code', {}, 'http_api { auth { enabled on; username admin; password <secret>; } }'));
  }
  start();
}

main().catch((e) => showError(String(e)));
