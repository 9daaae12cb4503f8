// The in-page side of bench/glass.py: reads the wall-clock barcode from the frames a <video> presents and
// keeps the glass-to-glass latency of each (ms). window.glass.start(video) begins, window.glass.samples()
// returns [{at, latency}] (at: epoch ms of display), window.glass.p50(sinceMs) the median since a time.
(function () {
  if (window.glass) return;
  const BITS = 20;
  const BOX = 16;
  const MOD = 2 ** BITS;
  const samples = [];
  let canvas = null;
  let ctx = null;
  let video = null;

  function read(now, meta) {
    if (!video) return;
    const w = video.videoWidth;
    const h = video.videoHeight;
    if (w >= 2 + BOX * BITS && h > 20) {
      if (!canvas || canvas.width !== w || canvas.height !== h) {
        canvas = document.createElement('canvas');
        canvas.width = w;
        canvas.height = h;
        ctx = canvas.getContext('2d', { willReadFrequently: true });
      }
      ctx.drawImage(video, 0, 0, w, h);
      const row = ctx.getImageData(0, h - 10, 2 + BOX * BITS, 1).data;
      let code = 0;
      for (let k = 0; k < BITS; k++) {
        if (row[(2 + BOX * k + BOX / 2) * 4 + 1] > 128) code += 2 ** k;
      }
      const shown = performance.timeOrigin + (meta.expectedDisplayTime || now);
      const latency = (((Math.floor(shown / 10) - code) % MOD) + MOD) % MOD * 10;
      if (samples.length > 20000) samples.splice(0, 10000);
      samples.push({ at: shown, latency });
    }
    video.requestVideoFrameCallback(read);
  }

  window.glass = {
    start(v) {
      if (video === v) return;
      video = v;
      v.requestVideoFrameCallback(read);
    },
    samples: () => samples.slice(),
    p50(since = 0) {
      const xs = samples.filter((s) => s.at >= since).map((s) => s.latency).sort((a, b) => a - b);
      return xs.length ? xs[Math.floor(xs.length / 2)] : null;
    },
    count: (since = 0) => samples.filter((s) => s.at >= since).length,
  };
})();
