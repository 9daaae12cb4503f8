#!/usr/bin/env node
// Publishes Chromium's fake camera and microphone over WebRTC (WHIP) and reports, as JSON lines on stdout:
// {"event":"published"} once the connection is up and media flows, then, after --seconds (or on SIGUSR2),
// {"event":"result"} with the sender's stats. The page is served by a tiny local server on an OS-chosen port.
//
//   node whip.js --url WHIP_URL [--seconds S] [--chromium PATH]
'use strict';

const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const PAGE = `<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<script>
window.W = { state: 'new', errors: [], bytesSent: 0, framesEncoded: 0, codec: null, location: null };
(async () => {
  const url = new URLSearchParams(location.search).get('url');
  const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360, frameRate: 25 },
                                                            audio: true });
  const pc = window.pc = new RTCPeerConnection();
  pc.onconnectionstatechange = () => { W.state = pc.connectionState; };
  for (const track of media.getTracks()) {
    const t = pc.addTransceiver(track, { direction: 'sendonly' });
    if (track.kind === 'video') {
      const h264 = RTCRtpSender.getCapabilities('video').codecs.filter((c) => c.mimeType === 'video/H264' &&
        (c.sdpFmtpLine || '').includes('packetization-mode=1'));
      t.setCodecPreferences(h264);
    }
  }
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
    setTimeout(resolve, 3000);
  });
  const resp = await fetch(url, { method: 'POST', body: pc.localDescription.sdp,
                                  headers: { 'Content-Type': 'application/sdp' } });
  const text = await resp.text();
  if (resp.status !== 201) throw new Error('WHIP answered ' + resp.status + ': ' + text);
  W.location = new URL(resp.headers.get('Location'), url).href;
  await pc.setRemoteDescription({ type: 'answer', sdp: text });
  setInterval(async () => {
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        W.bytesSent = s.bytesSent; W.framesEncoded = s.framesEncoded;
      }
      if (s.type === 'codec' && s.mimeType && s.mimeType.startsWith('video/')) W.codec = s.mimeType;
    });
  }, 250);
})().catch((e) => W.errors.push(String(e)));
window.stopWhip = async () => {
  if (W.location) await fetch(W.location, { method: 'DELETE' });
  if (window.pc) window.pc.close();
};
</script></body></html>`;

function parseArgs(argv) {
  const opts = { url: null, seconds: 10, chromium: '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--url') opts.url = argv[++i];
    else if (argv[i] === '--seconds') opts.seconds = Number(argv[++i]);
    else if (argv[i] === '--chromium') opts.chromium = argv[++i];
    else throw new Error('unknown argument ' + argv[i]);
  }
  if (!opts.url) throw new Error('need --url WHIP_URL');
  return opts;
}

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let stopping = false;
  process.on('SIGUSR2', () => { stopping = true; });
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html', 'Cache-Control': 'no-store' }).end(PAGE);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'livesrv-chromium-'));
  let ctx = null;
  const result = { event: 'result', ok: false, console: [] };
  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: opts.chromium, headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--use-fake-device-for-media-stream',
        '--use-fake-ui-for-media-stream', '--disable-features=WebRtcHideLocalIpsWithMdns'],
    });
    const page = ctx.pages()[0] || (await ctx.newPage());
    page.on('console', (m) => { if (m.type() === 'error' && result.console.length < 50) result.console.push(m.text()); });
    await page.goto(`http://127.0.0.1:${server.address().port}/?${new URLSearchParams({ url: opts.url })}`);
    const deadline = Date.now() + 30000;
    let w = await page.evaluate(() => window.W);
    while (!(w.state === 'connected' && w.framesEncoded > 10) && !w.errors.length && Date.now() < deadline) {
      await sleep(200);
      w = await page.evaluate(() => window.W);
    }
    if (w.state !== 'connected' || w.errors.length) {
      result.failure = 'not published';
      result.last = w;
      return result;
    }
    emit({ event: 'published', codec: w.codec });
    const end = Date.now() + opts.seconds * 1000;
    while (Date.now() < end && !stopping) await sleep(200);
    result.last = await page.evaluate(() => window.W);
    await page.evaluate(() => window.stopWhip());
    result.ok = true;
    return result;
  } finally {
    if (ctx) await ctx.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
    server.close();
  }
}

main().then((r) => { emit(r); process.exit(r.ok ? 0 : 1); },
  (e) => { emit({ event: 'result', ok: false, failure: 'harness error: ' + (e && e.stack || e) }); process.exit(2); });
