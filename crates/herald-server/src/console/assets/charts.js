// Herald console: the rate charts. The history is this tab's own: at each poll the state
// view gives every app's running totals (read at one instant, `counters_at_ms`), the page
// keeps them for the last five minutes, and a rate is the difference of two polls over
// the time between them. The node keeps no samples. Drawn as inline SVG built here; no
// library, nothing fetched, no markup from strings.
'use strict';

(() => {
  const WINDOW_MS = 5 * 60 * 1000;
  // A short history is drawn over at least this span, so its first points are not stretched.
  const MIN_SPAN_MS = 30 * 1000;
  // Polls further apart than this (a tab asleep, the node away) break the line.
  const GAP_MS = 15 * 1000;
  // At most this many samples an app (a poll every 1.5 s fills 200 in five minutes).
  const MAX_SAMPLES = 400;
  // Charted apps: the first ones by id; a node with hundreds of apps is not drawn whole.
  const MAX_CHARTED = 10;
  const SVG = 'http://www.w3.org/2000/svg';
  const W = 300;
  const H = 60;

  /** Per second, the rise of the sum of `keys` between two samples (a counter that went
   * back, the node restarted, counts from zero). */
  const rate = (...keys) => (a, b, secs) => {
    let rise = 0;
    for (const key of keys) {
      const d = Number(b.c[key] ?? 0) - Number(a.c[key] ?? 0);
      rise += d > 0 ? d : 0;
    }
    return rise / secs;
  };

  const CHARTS = [
    {
      id: 'connections', title: 'Connections', gauge: true,
      series: [{ id: 'open', label: 'open', at: (b) => Number(b.c.connections ?? 0) }],
    },
    {
      id: 'messages', title: 'Messages / s',
      series: [
        { id: 'in', label: 'in', hint: 'WebSocket messages from clients plus events published through the HTTP API', of: rate('ws_messages_received', 'api_events_published') },
        { id: 'out', label: 'out', hint: 'WebSocket messages written to clients', of: rate('ws_messages_sent') },
      ],
    },
    {
      id: 'webhooks', title: 'Webhooks / s',
      series: [
        { id: 'attempts', label: 'attempts', hint: 'requests sent, retries included', of: rate('webhook_attempts') },
        { id: 'failed', label: 'failed', hint: 'failed or refused: given up after retries, refused for the address, or dropped when a bound was full', of: rate('webhook_failures', 'webhook_refused', 'webhook_dropped') },
      ],
    },
    {
      id: 'refusals', title: 'Refused by limits / s',
      series: [{ id: 'refused', label: 'refused', hint: 'connections, subscriptions, publishes and client events a limit refused', of: rate('refusals') }],
    },
  ];

  let node;
  const history = new Map(); // app id → [{ t, c }], oldest first

  /** Keeps one poll's totals. */
  function record(state) {
    if (!state || !Array.isArray(state.apps)) return;
    // Another node answered (behind a proxy), or this one restarted: its counters are others.
    if (state.node_id !== node) {
      history.clear();
      node = state.node_id;
    }
    const t = Number(state.counters_at_ms) || Date.now();
    const present = new Set();
    for (const app of state.apps) {
      if (!app.counters) continue;
      const id = String(app.id);
      present.add(id);
      const samples = history.get(id) ?? [];
      if (samples.length && t <= samples.at(-1).t) continue;
      samples.push({ t, c: app.counters });
      // One sample older than the window stays: the first rate in it starts there.
      while (samples.length > 2 && samples[1].t <= t - WINDOW_MS) samples.shift();
      if (samples.length > MAX_SAMPLES) samples.splice(0, samples.length - MAX_SAMPLES);
      history.set(id, samples);
    }
    for (const id of [...history.keys()]) if (!present.has(id)) history.delete(id);
  }

  /** A series' points, `null` where the line breaks. */
  function points(series, samples, gauge) {
    const out = [];
    for (let i = gauge ? 0 : 1; i < samples.length; i++) {
      const b = samples[i];
      if (gauge) {
        out.push({ t: b.t, v: series.at(b) });
        continue;
      }
      const a = samples[i - 1];
      if (b.t - a.t > GAP_MS) {
        out.push(null);
        continue;
      }
      out.push({ t: b.t, v: series.of(a, b, (b.t - a.t) / 1000) });
    }
    return out;
  }

  /** 1, 2 or 5 times a power of ten, at least `v` (and at least 1). */
  function niceCeil(v) {
    if (!(v > 1)) return 1;
    const power = 10 ** Math.floor(Math.log10(v));
    for (const step of [1, 2, 5, 10]) if (step * power >= v) return step * power;
    return 10 * power;
  }

  const shown = (v, gauge) => (gauge || v >= 10 || v === 0 ? String(Math.round(v)) : v.toFixed(1));

  function spanText(ms) {
    const secs = Math.round(ms / 1000);
    return secs >= 120 ? `${Math.round(secs / 60)} min` : `${secs} s`;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  }

  function chart(el, spec, samples, span, latest) {
    const lines = spec.series.map((s) => points(s, samples, spec.gauge));
    const values = lines.flat().filter(Boolean).map((p) => p.v);
    const top = niceCeil(Math.max(0, ...values));
    const start = latest - span;
    const plot = svg('svg', {
      viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img',
      'aria-label': `${spec.title}, the last ${spanText(span)}`,
    });
    plot.append(svg('line', { class: 'grid', x1: 0, x2: W, y1: H / 2, y2: H / 2 }));
    const legend = [];
    spec.series.forEach((s, i) => {
      const line = lines[i];
      let run = [];
      const flush = () => {
        if (run.length === 1) run.push({ ...run[0], t: run[0].t - 1 });
        if (run.length) {
          plot.append(svg('polyline', {
            class: `series series-${i}`,
            points: run.map((p) => `${(((p.t - start) / span) * W).toFixed(1)},${(H - (p.v / top) * (H - 2) - 1).toFixed(1)}`).join(' '),
          }));
        }
        run = [];
      };
      for (const p of line) {
        if (p === null) flush();
        else run.push(p);
      }
      flush();
      const real = line.filter(Boolean);
      const now = real.length ? real.at(-1).v : 0;
      const peak = real.reduce((m, p) => Math.max(m, p.v), 0);
      legend.push(el('span', {
        class: 'legend', title: s.hint ?? null,
        dataset: { series: s.id, now: String(now), peak: String(peak) },
      }, el('span', { class: `swatch series-${i}` }), `${s.label} `, el('b', null, shown(now, spec.gauge))));
    });
    return el('figure', { class: 'chart', dataset: { chart: spec.id } },
      el('figcaption', null, el('span', { class: 'chart-title' }, spec.title), ...legend),
      el('div', { class: 'plot' }, el('span', { class: 'ymax' }, shown(top, true)), plot),
      el('div', { class: 'axis' }, el('span', null, `−${spanText(span)}`), el('span', null, 'now')));
  }

  /** Draws every charted app's charts in `container` from the history so far. */
  function draw(container, el, appIds) {
    const ids = appIds.map(String).filter((id) => history.has(id)).slice(0, MAX_CHARTED);
    let first = Infinity;
    let latest = -Infinity;
    for (const id of ids) {
      const samples = history.get(id);
      first = Math.min(first, samples[0].t);
      latest = Math.max(latest, samples.at(-1).t);
    }
    const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, latest - first));
    const blocks = ids.map((id) => {
      const samples = history.get(id);
      return el('article', { class: 'app-charts', dataset: { app: id, samples: String(samples.length) } },
        el('h3', null, `App ${id}`),
        samples.length < 2 ? el('p', { class: 'muted' }, 'Rates appear after the second poll.') : null,
        el('div', { class: 'chart-grid' }, CHARTS.map((spec) => chart(el, spec, samples, span, latest))));
    });
    if (appIds.length > ids.length && ids.length === MAX_CHARTED) {
      blocks.push(el('p', { class: 'muted' }, `The first ${MAX_CHARTED} apps by id are charted.`));
    }
    container.replaceChildren(...(blocks.length ? blocks : [el('p', { class: 'muted' }, 'No apps.')]));
    return ids.length ? span : 0;
  }

  globalThis.heraldCharts = { record, draw, spanText };
})();
