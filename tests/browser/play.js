#!/usr/bin/env node
// Plays a live stream in headless Debian chromium and reports, as JSON lines on stdout, whether it really
// plays: the first decoded frame, currentTime advancing, decoded frames increasing, the picture changing,
// and every player error. The page (page.html + probe.js) and the players are served by a tiny local
// server on an OS-chosen port, so the stream is fetched cross-origin, as from a real web page (CORS).
//
//   node play.js --mode flv|hls|whep --url URL [--watch S] [--first-frame-timeout S]
//                [--republish] [--resume-timeout S] [--after S] [--chromium PATH] [--screenshot FILE]
//                [--audio-only] [--barcode] [--no-audio]
//
// --mode flv plays with mpegts.js (http://.../x.flv or ws://.../x.flv); --mode hls plays with hls.js;
// --mode whep plays over WebRTC (the URL is the WHEP endpoint, http://.../rtc/v1/whep/?app=..&stream=..).
// --barcode: the page reads the glass-to-glass latency from the publisher's barcode (see probe.js); the
// result's "latency" has the samples. --no-audio: a WHEP offer for video only.
// Lines printed: {"event":"playing"} at the first frame, {"event":"watched"} after the watch window,
// {"event":"resumed"} (with --republish) and, last, {"event":"result"} with everything. With --republish the harness, after "watched", keeps playing
// and waits for SIGUSR2 ("the publisher was killed and is back"); it then reports whether playback went on
// past what was buffered when the signal came, i.e. with media from the new publisher.
// --audio-only: a stream without video; "playing" is the first decoded audio with currentTime moving, and a
// window is good when time advanced and audio was decoded (no picture is expected).
// Every wait is a poll with a deadline. Exit code: 0 when the checks passed, 1 when not, 2 on a harness error.
'use strict';

const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const POLL_MS = 200;
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
  // WebRTC: offer this machine's addresses rather than mDNS names, which the server would have to resolve.
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

function parseArgs(argv) {
  const opts = {
    mode: null, url: null, watch: 4, firstFrameTimeout: 20, republish: false, resumeTimeout: 25,
    republishWait: 60, after: 2, chromium: '/usr/bin/chromium', screenshot: null, audioOnly: false,
    barcode: false,
  };
  const numeric = { '--watch': 'watch', '--first-frame-timeout': 'firstFrameTimeout',
    '--resume-timeout': 'resumeTimeout', '--republish-wait': 'republishWait', '--after': 'after' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--republish') opts.republish = true;
    else if (a === '--audio-only') opts.audioOnly = true;
    else if (a === '--barcode') opts.barcode = true;
    else if (a === '--no-audio') opts.noAudio = true;
    else if (a === '--mode') opts.mode = argv[++i];
    else if (a === '--url') opts.url = argv[++i];
    else if (a === '--chromium') opts.chromium = argv[++i];
    else if (a === '--screenshot') opts.screenshot = argv[++i];
    else if (a in numeric) opts[numeric[a]] = Number(argv[++i]);
    else throw new Error('unknown argument ' + a);
  }
  if (!['flv', 'hls', 'whep'].includes(opts.mode) || !opts.url) throw new Error('need --mode flv|hls|whep and --url URL');
  return opts;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The page, its probe and the two players, from this folder and node_modules.
function startStaticServer() {
  const files = {
    '/page.html': [path.join(__dirname, 'page.html'), 'text/html'],
    '/probe.js': [path.join(__dirname, 'probe.js'), 'text/javascript'],
    '/lib/mpegts.js': [require.resolve('mpegts.js/dist/mpegts.js'), 'text/javascript'],
    '/lib/hls.min.js': [require.resolve('hls.js/dist/hls.min.js'), 'text/javascript'],
  };
  const server = http.createServer((req, res) => {
    const f = files[new URL(req.url, 'http://x').pathname];
    if (!f) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': f[1], 'Cache-Control': 'no-store' });
    res.end(fs.readFileSync(f[0]));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// Summary of the snapshots taken over one window of playback.
function summarize(samples) {
  const first = samples[0];
  const last = samples[samples.length - 1];
  let longestFreeze = 0;
  let since = first;
  for (const s of samples) {
    if (s.currentTime > since.currentTime) since = s;
    else longestFreeze = Math.max(longestFreeze, (s.at - since.at) / 1000);
  }
  const pictures = samples.filter((s) => s.picture).map((s) => s.picture);
  return {
    seconds: (last.at - first.at) / 1000,
    startTime: first.currentTime,
    endTime: last.currentTime,
    advanced: last.currentTime - first.currentTime,
    framesDecoded: last.totalVideoFrames - first.totalVideoFrames,
    framesPresented: last.presentedFrames - first.presentedFrames,
    framesDropped: last.droppedVideoFrames - first.droppedVideoFrames,
    audioDecodedBytes: last.audioDecodedBytes - first.audioDecodedBytes,
    distinctPictures: new Set(pictures.map((p) => p.hash)).size,
    minLumaStd: pictures.length ? Math.min(...pictures.map((p) => p.lumaStd)) : 0,
    longestFreeze,
    readyState: last.readyState,
    paused: last.paused,
    videoWidth: last.videoWidth,
    videoHeight: last.videoHeight,
  };
}

async function watch(page, seconds) {
  const samples = [await page.evaluate(() => window.snapshot())];
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    await sleep(POLL_MS);
    samples.push(await page.evaluate(() => window.snapshot()));
  }
  return samples;
}

function windowOk(w, minSeconds, audioOnly) {
  if (audioOnly) return w.advanced >= minSeconds && w.audioDecodedBytes > 0 && w.readyState >= 3 && !w.paused;
  return w.advanced >= minSeconds && w.framesDecoded > 0 && w.distinctPictures >= 2 && w.minLumaStd > 5 &&
    w.readyState >= 3 && !w.paused;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let republishedAt = null;
  process.on('SIGUSR2', () => { republishedAt = Date.now(); });

  const result = { event: 'result', ok: false, mode: opts.mode, url: opts.url, failures: [], console: [],
    pageErrors: [] };
  const server = await startStaticServer();
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'livesrv-chromium-'));
  let ctx = null;
  const stop = async () => {
    if (ctx) await ctx.close().catch(() => {});
    ctx = null;
    fs.rmSync(profile, { recursive: true, force: true });
    server.close();
  };
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => stop().finally(() => process.exit(2)));

  try {
    const t0 = Date.now();
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: opts.chromium, headless: true, args: CHROMIUM_ARGS, viewport: { width: 660, height: 420 },
    });
    result.launchMs = Date.now() - t0;
    const page = ctx.pages()[0] || (await ctx.newPage());
    page.on('console', (m) => {
      if (m.type() === 'error' && result.console.length < 50) result.console.push(m.text().slice(0, 500));
    });
    page.on('pageerror', (e) => {
      if (result.pageErrors.length < 50) result.pageErrors.push(String(e).slice(0, 500));
    });
    const port = server.address().port;
    const qs = new URLSearchParams({ mode: opts.mode, url: opts.url, barcode: opts.barcode ? '1' : '0',
      rtcAudio: opts.noAudio ? '0' : '1' });
    await page.goto(`http://127.0.0.1:${port}/page.html?${qs}`);

    // First frame: a player that gets nothing may raise no error at all (an HTTP-FLV response that stays
    // open and empty), so this is a deadline, not a wait for an error.
    const ffDeadline = Date.now() + opts.firstFrameTimeout * 1000;
    const started = (s) => (opts.audioOnly ? s.audioDecodedBytes > 0 && s.currentTime > 0 : s.firstFrameAt !== null);
    let snap = await page.evaluate(() => window.snapshot());
    while (!started(snap) && !snap.errors.some((e) => e.fatal) && Date.now() < ffDeadline) {
      await sleep(POLL_MS);
      snap = await page.evaluate(() => window.snapshot());
    }
    if (opts.audioOnly && started(snap)) snap.firstFrameAt = snap.at;
    result.firstFrameMs = snap.firstFrameAt;
    if (snap.firstFrameAt === null) {
      result.failures.push(snap.errors.some((e) => e.fatal) ? 'no frame: the player stopped on an error'
        : `no frame within ${opts.firstFrameTimeout}s`);
      result.last = snap;
      return result;
    }
    emit({ event: 'playing', firstFrameMs: snap.firstFrameAt, videoWidth: snap.videoWidth });

    result.watch = summarize(await watch(page, opts.watch));
    if (!windowOk(result.watch, opts.watch / 2, opts.audioOnly)) result.failures.push('playback did not advance in the watch window');
    emit({ event: 'watched', watch: result.watch });

    if (opts.republish && result.failures.length === 0) {
      result.republish = await afterRepublish(page, opts, () => republishedAt);
      if (!result.republish.resumed) result.failures.push('playback did not resume after the republish');
      else if (!windowOk(result.republish.after, opts.after / 2, opts.audioOnly)) {
        result.failures.push('playback did not go on after it resumed');
      }
    }
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot });
    result.last = await page.evaluate(() => window.snapshot());
    if (opts.barcode) result.latency = await page.evaluate(() => window.T.lat.slice());
    return result;
  } finally {
    const last = result.last;
    if (last) {
      result.errors = last.errors;
      result.fatalErrors = last.errors.filter((e) => e.fatal);
      result.mediaError = last.mediaError;
      result.events = last.events;
      delete last.events;
      delete last.errors;
      if (result.fatalErrors.length) result.failures.push('player errors');
      if (last.mediaError) result.failures.push('media element error');
    }
    if (result.pageErrors.length) result.failures.push('page errors');
    result.ok = result.failures.length === 0 && !!last;
    await stop();
  }
}

// Waits for SIGUSR2, then until currentTime passes what was buffered at the signal (media that can only
// have come from the new publisher) by a margin, then watches a little longer.
async function afterRepublish(page, opts, signalled) {
  const waitDeadline = Date.now() + opts.republishWait * 1000;
  while (signalled() === null && Date.now() < waitDeadline) await sleep(POLL_MS);
  if (signalled() === null) return { resumed: false, reason: 'no SIGUSR2 (republish) came' };
  const atSignal = await page.evaluate(() => window.snapshot());
  // A WebRTC <video>'s currentTime runs with the clock whatever arrives: there, 25 frames presented after the
  // signal (the old publisher was killed before it) are the new publisher's.
  const whep = opts.mode === 'whep';
  const target = whep ? atSignal.presentedFrames + 25 : atSignal.bufferedEnd + 1.0;
  const reached = (x) => (whep ? x.presentedFrames >= target : x.currentTime >= target);
  const samples = [atSignal];
  const deadline = Date.now() + opts.resumeTimeout * 1000;
  let s = atSignal;
  while (!reached(s) && Date.now() < deadline) {
    await sleep(POLL_MS);
    s = await page.evaluate(() => window.snapshot());
    samples.push(s);
  }
  const out = {
    resumed: reached(s),
    atSignal: { currentTime: atSignal.currentTime, bufferedEnd: atSignal.bufferedEnd,
      totalVideoFrames: atSignal.totalVideoFrames },
    target,
    resumeMs: s.at - atSignal.at,
    gap: summarize(samples),
  };
  if (out.resumed) {
    emit({ event: 'resumed', resumeMs: out.resumeMs });
    out.after = summarize(await watch(page, opts.after));
  }
  return out;
}

main().then(
  (result) => {
    emit(result);
    process.exit(result.ok ? 0 : 1);
  },
  (err) => {
    emit({ event: 'result', ok: false, failures: ['harness error: ' + (err && err.stack || err)] });
    process.exit(2);
  },
);
