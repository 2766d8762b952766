// Charts shared by the node page (one series per peer) and the testbed overview (one series per
// node): uPlot charts over a shared time axis, fed once a second from the nodes' `sample`
// Server-Sent Events (GET /api/events). Bounded: WINDOW seconds of points per series, at most
// MAX_SERIES series; markers (algorithm switches) older than the window are dropped.
(() => {
'use strict';

const WINDOW = 300;
const MAX_SERIES = 64;
const MAX_MARKERS = 64;

// What each chart shows: a value per series per second, computed by `value(now, before)` from
// the series' newest sample and the one a second earlier (counters are cumulative).
const METRICS = [
  {key: 'goodput', title: 'goodput (upload)', unit: 'Mbit/s', digits: 1},
  {key: 'queue', title: 'queueing delay: smoothed RTT − min RTT', unit: 'ms', digits: 1, headline: true},
  {key: 'srtt', title: 'smoothed RTT', unit: 'ms', digits: 1},
  {key: 'minrtt', title: 'min RTT', unit: 'ms', digits: 1},
  {key: 'retrans', title: 'retransmitted / acked bytes', unit: '%', digits: 2},
  {key: 'cwnd', title: 'congestion window', unit: 'segments', digits: 0},
  {key: 'pacing', title: 'pacing rate', unit: 'Mbit/s', digits: 1},
  {key: 'delivery', title: 'delivery rate', unit: 'Mbit/s', digits: 1},
  {key: 'recovery', title: 'time in loss recovery', unit: '% of time', digits: 0},
];

// Distinct colours however many series: hues spread by the golden angle.
function colour(i) {
  return `hsl(${(i * 137.508) % 360}, 65%, 42%)`;
}

const mbit = bytesPerSecond => bytesPerSecond == null ? null : bytesPerSecond * 8 / 1e6;
const ms = seconds => seconds == null ? null : seconds * 1e3;

// One connection's values from two consecutive samples (`before` may be undefined).
function connectionValues(p, before) {
  const dt = before ? p.t - before.t : 0;
  const delta = key => (dt > 0 && p[key] != null && before[key] != null) ? Math.max(0, p[key] - before[key]) : null;
  const acked = delta('bytes_acked');
  return {
    acked,
    goodput: acked == null ? null : acked * 8 / dt / 1e6,
    queue: (p.srtt_seconds != null && p.min_rtt_seconds != null) ? Math.max(0, p.srtt_seconds - p.min_rtt_seconds) * 1e3 : null,
    srtt: ms(p.srtt_seconds),
    minrtt: ms(p.min_rtt_seconds),
    retransBytes: delta('retransmitted_bytes'),
    cwnd: p.cwnd_segments,
    pacing: mbit(p.pacing_rate_bytes_per_second),
    delivery: mbit(p.delivery_rate_bytes_per_second),
    recovery: (() => { const d = delta('loss_recovery_seconds'); return d == null ? null : Math.min(100, d / dt * 100); })(),
  };
}

// A node's values from its connections: goodput and retransmissions summed, the rest from the
// connection that uploaded the most in the last second (its busiest upload).
function nodeValues(connections) {
  let busiest = null, acked = 0, retrans = 0, goodput = null;
  for (const c of connections) {
    if (c.goodput != null) goodput = (goodput ?? 0) + c.goodput;
    acked += c.acked ?? 0;
    retrans += c.retransBytes ?? 0;
    if (!busiest || (c.acked ?? -1) > (busiest.acked ?? -1)) busiest = c;
  }
  if (!busiest) return {};
  return {...busiest, goodput, retrans: acked > 0 ? retrans / acked * 100 : (goodput != null ? 0 : null)};
}

function withRetrans(c) {
  return {...c, retrans: c.acked > 0 ? (c.retransBytes ?? 0) / c.acked * 100 : (c.acked === 0 ? 0 : null)};
}

// Draws markers (vertical lines with a label) on a chart.
function markerPlugin(board) {
  return {
    hooks: {
      draw: u => {
        const ctx = u.ctx;
        ctx.save();
        ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
        for (const m of board.markers) {
          if (m.t < u.scales.x.min || m.t > u.scales.x.max) continue;
          const x = Math.round(u.valToPos(m.t, 'x', true));
          ctx.strokeStyle = m.colour; ctx.fillStyle = m.colour;
          ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
          ctx.lineWidth = 1.5 * devicePixelRatio;
          ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
          ctx.fillText(m.label, x + 3 * devicePixelRatio, u.bbox.top + 11 * devicePixelRatio);
        }
        ctx.restore();
      },
    },
  };
}

// A tooltip at the cursor: the time and each visible series' value with its unit.
function tooltipPlugin(metric) {
  let tip;
  return {
    hooks: {
      init: u => {
        tip = document.createElement('div');
        tip.className = 'tooltip';
        tip.style.display = 'none';
        u.over.appendChild(tip);
        u.over.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
      },
      setCursor: u => {
        const i = u.cursor.idx;
        if (i == null) { tip.style.display = 'none'; return; }
        const lines = [new Date(u.data[0][i] * 1000).toLocaleTimeString()];
        u.series.forEach((s, k) => {
          const v = u.data[k][i];
          if (k > 0 && s.show && v != null) lines.push(`<span style="color:${s.stroke()}">■</span> ${s.label}: ${v.toFixed(metric.digits)} ${metric.unit}`);
        });
        tip.innerHTML = lines.join('<br>');
        tip.style.display = 'block';
        const left = u.cursor.left, top = u.cursor.top;
        tip.style.left = (left + 12 + tip.offsetWidth > u.over.clientWidth ? left - tip.offsetWidth - 12 : left + 12) + 'px';
        tip.style.top = top + 12 + 'px';
      },
    },
  };
}

class Board {
  // `container`: the element the charts go in.
  constructor(container) {
    this.container = container;
    this.series = new Map();   // id -> {label, colour, values: Map(t -> {metric: value})}
    this.markers = [];
    this.charts = [];
    this.layoutKey = '';
    if (typeof uPlot === 'undefined') {
      container.innerHTML = `<p class="error">${window.UPLOT_MISSING || 'uPlot did not load'}</p>`;
      this.disabled = true;
    }
  }

  // Adds one second of values for series `id` (created on first use, in order).
  add(id, label, t, values) {
    let s = this.series.get(id);
    if (!s) {
      if (this.series.size >= MAX_SERIES) return;
      s = {label, colour: colour(this.series.size), values: new Map()};
      this.series.set(id, s);
    }
    s.label = label;
    s.values.set(t, values);
    for (const old of s.values.keys()) { if (old > t - WINDOW) break; s.values.delete(old); }
  }

  remove(id) { this.series.delete(id); }

  mark(t, label, colourOf) {
    this.markers.push({t, label, colour: colourOf ?? '#c00'});
    while (this.markers.length > MAX_MARKERS) this.markers.shift();
  }

  colourOf(id) { return this.series.get(id)?.colour; }

  // Rebuilds the charts when the set of series changed, then gives every chart its data.
  render() {
    if (this.disabled) return;
    const ids = [...this.series.keys()].sort((a, b) => a.localeCompare(b, undefined, {numeric: true}));
    const key = ids.map(id => id + '=' + this.series.get(id).label).join('|');
    if (key !== this.layoutKey) this.layout(ids), this.layoutKey = key;
    const times = new Set();
    for (const s of this.series.values()) for (const t of s.values.keys()) times.add(t);
    const xs = [...times].sort((a, b) => a - b);
    const now = xs.length ? xs[xs.length - 1] : Math.floor(Date.now() / 1000);
    this.markers = this.markers.filter(m => m.t > now - WINDOW);
    for (const {metric, chart} of this.charts) {
      const data = [xs];
      for (const id of ids) {
        const values = this.series.get(id).values;
        data.push(xs.map(t => values.get(t)?.[metric.key] ?? null));
      }
      chart.setData(data);
    }
  }

  layout(ids) {
    for (const {chart} of this.charts) chart.destroy();
    this.charts = [];
    this.container.innerHTML = '';
    for (const metric of METRICS) {
      const box = document.createElement('div');
      box.className = 'chart' + (metric.headline ? ' headline' : '');
      box.innerHTML = `<h2>${metric.title} <span class="unit">(${metric.unit})</span></h2>`;
      this.container.appendChild(box);
      const height = metric.headline ? 260 : 190;
      const width = () => Math.max(300, box.clientWidth - 20);
      const chart = new uPlot({
        width: width(), height,
        plugins: [markerPlugin(this), tooltipPlugin(metric)],
        scales: {x: {time: true}, y: {range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1]}},
        axes: [
          // Whole seconds at least: the data has one point per second.
          {label: 'time', labelSize: 18, size: 36, incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600]},
          {label: metric.unit, labelSize: 18, size: 56, values: (u, vals) => vals.map(v => v == null ? '' : +v.toFixed(metric.digits > 0 && v < 10 ? 1 : 0))},
        ],
        series: [{label: 'time'}, ...ids.map(id => {
          const s = this.series.get(id);
          return {label: s.label, stroke: s.colour, width: 1.6, spanGaps: false, points: {show: false},
                  value: (u, v) => v == null ? '–' : `${v.toFixed(metric.digits)} ${metric.unit}`};
        })],
        legend: {show: true, live: true},
      }, [[], ...ids.map(() => [])], box);
      new ResizeObserver(() => {
        if (Math.abs(chart.width - width()) > 4) chart.setSize({width: width(), height});
      }).observe(box);
      this.charts.push({metric, chart});
    }
  }
}

// Opens the event stream at `url`, calling `onSample(sample)` per event; reconnects (the
// browser's EventSource does) and reports the state through `onState(text)`.
function stream(url, onSample, onState) {
  const source = new EventSource(url);
  source.addEventListener('sample', e => { onState?.('live'); onSample(JSON.parse(e.data)); });
  source.onerror = () => onState?.('reconnecting…');
  return source;
}

window.p2pcc = {Board, METRICS, connectionValues, nodeValues, withRetrans, stream, colour};
})();
