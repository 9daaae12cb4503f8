// A small time chart on a <canvas>: lines over the last minutes, with a left and a right scale (series on
// the same side share it). No library: a few dozen canvas calls, redrawn at each refresh. A chart taller
// than 80 CSS pixels gets a time grid, scales and a legend; a smaller one is a bare sparkline. The time axis
// spans what there is, from 30 s up to `minutes` (a page that just opened has no history yet).

// series: [{label, color, points: [[t_ms, value]], axis: 'left'|'right', unit: v => text, step: bool}]
export function drawChart(canvas, series, { minutes = 5, now = Date.now() } = {}) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || canvas.width;
  const cssH = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(cssW * dpr)) canvas.width = Math.round(cssW * dpr);
  if (canvas.height !== Math.round(cssH * dpr)) canvas.height = Math.round(cssH * dpr);
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, cssW, cssH);
  const big = cssH > 80;
  const pad = big ? { l: 70, r: 40, t: 22, b: 18 } : { l: 2, r: 2, t: 3, b: 3 };
  const w = cssW - pad.l - pad.r;
  const hgt = cssH - pad.t - pad.b;
  const first = Math.min(now, ...series.filter((s) => s.points.length).map((s) => s.points[0][0]));
  const span = Math.min(minutes * 60000, Math.max(30000, now - first));
  const t0 = now - span;
  const x = (t) => pad.l + ((t - t0) / span) * w;
  const visible = series.map((s) => s.points.filter(([t]) => t >= t0));
  const max = {};
  series.forEach((s, i) => {
    const side = s.axis || 'left';
    max[side] = Math.max(max[side] || 1, ...visible[i].map(([, v]) => v * 1.15));
  });
  g.font = '11px system-ui, sans-serif';
  g.textBaseline = 'middle';
  if (big) {
    g.strokeStyle = 'rgba(128,128,128,.25)';
    g.lineWidth = 1;
    g.fillStyle = 'rgba(128,128,128,.95)';
    g.textAlign = 'center';
    const step = [10000, 30000, 60000].find((ms) => span / ms <= 6) || 60000; // a grid line every step
    for (let ago = 0; ago <= span; ago += step) {
      const xx = Math.round(x(now - ago)) + 0.5;
      g.beginPath(); g.moveTo(xx, pad.t); g.lineTo(xx, pad.t + hgt); g.stroke();
      const label = !ago ? 'now' : step < 60000 ? `-${ago / 1000} s` : `-${ago / 60000} min`;
      g.fillText(label, Math.min(Math.max(xx, pad.l + 16), cssW - pad.r - 10), cssH - 7);
    }
    g.beginPath(); g.moveTo(pad.l, pad.t + hgt + 0.5); g.lineTo(pad.l + w, pad.t + hgt + 0.5); g.stroke();
    for (const side of Object.keys(max)) { // the scale: its top and zero, in the unit of its first series
      const s = series.find((c) => (c.axis || 'left') === side);
      g.textAlign = side === 'right' ? 'left' : 'right';
      g.fillStyle = series.filter((c) => (c.axis || 'left') === side).length > 1 ? 'rgba(128,128,128,.95)' : s.color;
      const ax = side === 'right' ? pad.l + w + 6 : pad.l - 6;
      g.fillText(s.unit(max[side]), ax, pad.t);
      g.fillText(s.unit(0), ax, pad.t + hgt);
    }
    let lx = pad.l; // legend, top left: a swatch, the name, the latest value
    g.textAlign = 'left';
    series.forEach((s, i) => {
      const pts = visible[i];
      const text = `${s.label} ${s.unit(pts.length ? pts[pts.length - 1][1] : 0)}`;
      g.fillStyle = s.color;
      g.fillRect(lx, 5, 12, 3);
      g.fillStyle = 'rgba(128,128,128,1)';
      g.fillText(text, lx + 16, 7);
      lx += 28 + g.measureText(text).width;
    });
  }
  series.forEach((s, i) => {
    const pts = visible[i];
    const top = max[s.axis || 'left'];
    const y = (v) => pad.t + hgt - (v / top) * hgt;
    g.strokeStyle = s.color;
    g.lineWidth = big ? 2 : 1.5;
    g.beginPath();
    pts.forEach(([t, v], k) => {
      if (k === 0) g.moveTo(x(t), y(v));
      else {
        if (s.step) g.lineTo(x(t), y(pts[k - 1][1]));
        g.lineTo(x(t), y(v));
      }
    });
    g.stroke();
  });
}
