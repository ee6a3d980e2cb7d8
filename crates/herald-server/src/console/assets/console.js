// Herald console: the state view (polled), the live log (Server-Sent Events) and the
// publish form. No framework and no innerHTML: everything the page shows is put in with
// textContent or text nodes, since channel names, member info and event data come from
// clients.
// One file (about 700 lines): the binary embeds it as one asset served at one path, with
// no bundler; its charts are apart in charts.js.
'use strict';

(() => {
  // "/console" and "/console/" both lead to "/console/api/…"; relative to the page's own
  // path, so a tunnel or a proxy prefix changes nothing.
  const BASE = `${location.pathname.replace(/\/+$/, '')}/`;
  const STATE_EVERY_MS = 1500;
  const STATE_HIDDEN_EVERY_MS = 5000;
  const MAX_ROWS = 2000;
  const KINDS = [
    'connection_opened', 'connection_closed', 'subscribed', 'unsubscribed', 'api_publish',
    'client_event', 'webhook', 'refused', 'dropped',
  ];

  const $ = (id) => document.getElementById(id);

  /** An element with attributes and children; strings become text nodes, never markup. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs ?? {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'class') node.className = value;
      else if (name === 'dataset') Object.assign(node.dataset, value);
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
  const pad = (n, width = 2) => String(n).padStart(width, '0');

  /** HH:MM:SS.mmm in the browser's own time zone. */
  function clock(ms) {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  /**
   * JSON text pretty-printed when it parses; the text itself otherwise. A JSON string that
   * holds JSON (event data as the HTTP API's libraries send it) is shown as what it holds.
   */
  function pretty(text) {
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      return String(text);
    }
    if (typeof value === 'string') {
      try {
        value = JSON.parse(value);
      } catch {
        return value;
      }
    }
    return JSON.stringify(value, null, 2);
  }

  function setPill(node, text, tone) {
    node.textContent = text;
    node.classList.remove('ok', 'bad', 'warn');
    if (tone) node.classList.add(tone);
  }

  // ---------------------------------------------------------------------------------------
  // State view
  // ---------------------------------------------------------------------------------------

  let lastStateKey = null;

  /**
   * What the apps view shows of `state`: all but the counters, which move at every poll and
   * are the charts'. The view is rebuilt only when this changes, so a reader's selection or
   * scroll in it survives a quiet node.
   */
  function viewKey(state) {
    const { counters_at_ms: _at, apps, ...rest } = state;
    const shownApps = Array.isArray(apps) ? apps.map(({ counters: _c, ...app }) => app) : apps;
    return JSON.stringify({ ...rest, apps: shownApps });
  }
  const knownApps = new Set();

  async function pollState() {
    const status = $('state-status');
    try {
      const res = await fetch(`${BASE}api/state`, { cache: 'no-store', credentials: 'same-origin' });
      if (res.status === 401 || res.status === 403) {
        $('auth-notice').hidden = false;
        document.body.dataset.state = 'unauthorized';
        setPill(status, `state: ${res.status} (token needed)`, 'bad');
      } else if (!res.ok) {
        document.body.dataset.state = 'error';
        setPill(status, `state: HTTP ${res.status}`, 'bad');
      } else {
        const text = await res.text();
        $('auth-notice').hidden = true;
        const state = JSON.parse(text);
        // Every poll is a sample for the charts, whether or not the rest changed.
        drawCharts(state);
        const key = viewKey(state);
        if (key !== lastStateKey) {
          renderState(state);
          lastStateKey = key;
        }
        document.body.dataset.state = 'ok';
        setPill(status, `state: ${clock(Date.now()).slice(0, 8)}`, 'ok');
      }
    } catch (error) {
      document.body.dataset.state = 'error';
      setPill(status, 'state: unreachable', 'bad');
      console.warn('console state', error);
    } finally {
      setTimeout(pollState, document.hidden ? STATE_HIDDEN_EVERY_MS : STATE_EVERY_MS);
    }
  }

  function drawCharts(state) {
    const charts = globalThis.heraldCharts;
    if (!charts) return;
    charts.record(state);
    const ids = (Array.isArray(state.apps) ? state.apps : []).map((a) => String(a.id));
    const span = charts.draw($('charts'), el, ids);
    $('charts-span').textContent = span ? `the last ${charts.spanText(span)}, from this tab's polls` : '';
  }

  function renderState(state) {
    $('node').textContent = state.node_id === undefined ? '' : `node ${state.node_id}`;
    const apps = Array.isArray(state.apps) ? state.apps : [];
    for (const app of apps) noteApp(app.id);
    fillAppSelect($('pub-app'), apps.map((a) => String(a.id)), null);

    const cut = $('state-truncated');
    cut.hidden = !state.truncated;
    cut.textContent = state.truncated ? `Not everything is shown (the answer is bounded by ${state.truncated_by}).` : '';

    const container = $('apps');
    // A re-render keeps what the reader opened or closed.
    const remembered = new Map([...container.querySelectorAll('details[data-key]')].map((d) => [d.dataset.key, d.open]));
    const open = (key, byDefault) => (remembered.has(key) ? remembered.get(key) : byDefault);
    const cards = apps.map((app) => appCard(app, open));
    container.replaceChildren(...(cards.length ? cards : [el('p', { class: 'muted' }, 'No apps.')]));
  }

  function appCard(app, open) {
    const id = String(app.id);
    const channels = [...(app.channels ?? [])].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const users = app.users ?? [];
    return el('article', { class: 'app', dataset: { app: id } },
      el('div', { class: 'app-head' },
        el('h3', null, `App ${id}`),
        el('code', { class: 'muted' }, app.key ?? ''),
        el('span', { class: app.enabled === false ? 'badge off' : 'badge' }, app.enabled === false ? 'disabled' : 'enabled')),
      el('dl', { class: 'stats' },
        stat('Connections', app.connections ?? 0, 'connections'),
        stat('Channels', channels.length, 'channels'),
        stat('Signed-in users', users.length, 'users')),
      app.settings ? settings(id, app.settings, open) : null,
      app.webhook_queue ? webhookQueue(id, app.webhook_queue) : null,
      el('h4', null, 'Channels'),
      channels.length
        ? el('ul', { class: 'channels' }, channels.map((ch) => channelItem(id, ch, open)))
        : el('p', { class: 'muted' }, 'No occupied channels.'),
      el('h4', null, 'Signed-in users'),
      users.length
        ? el('ul', { class: 'chips users' }, users.map((u) => el('li', { dataset: { user: u } }, u)))
        : el('p', { class: 'muted' }, 'Nobody signed in.'));
  }

  // The limits as the page names them; `off` is what 0 means (absent: 0 is a number).
  const LIMITS = [
    ['max_connections', 'Connections', { off: 'unlimited' }],
    ['max_subscriptions_per_connection', 'Channels a connection'],
    ['publishes_per_second', 'API publishes / s', { off: 'unlimited' }],
    ['reads_per_second', 'API reads / s', { off: 'unlimited' }],
    ['messages_per_day', 'Messages / day', { off: 'unlimited' }],
    ['max_event_data_bytes', 'Event data', { bytes: true }],
    ['max_channels_per_trigger', 'Channels a trigger'],
    ['max_events_per_batch', 'Events a batch'],
    ['max_channel_name_length', 'Channel name length'],
    ['client_events', 'Client events'],
    ['client_events_per_second', 'Client events / s a socket'],
    ['max_presence_members', 'Presence members'],
    ['max_presence_user_id_length', 'Presence user id length'],
    ['max_presence_user_info_bytes', 'Presence user info', { bytes: true }],
    ['cache_ttl', 'Cache TTL', { unit: ' s' }],
    ['user_authentication_timeout', 'Sign-in timeout', { off: 'off', unit: ' s' }],
    ['terminate_close_code', 'Terminate close code'],
    ['subscription_count', 'Subscription counts'],
  ];

  function limitText(value, how = {}) {
    if (typeof value === 'boolean') return value ? 'on' : 'off';
    if (value === 0 && how.off) return how.off;
    if (how.bytes && value >= 1024 && value % 1024 === 0) return `${value / 1024} KiB`;
    if (how.bytes) return `${value} B`;
    return `${value}${how.unit ?? ''}`;
  }

  /** An app's limits and webhook endpoints (URLs as the server shows them: no credentials). */
  function settings(appId, s, open) {
    const limits = s.limits ?? {};
    const hooks = Array.isArray(s.webhooks) ? s.webhooks : [];
    const more = Number(s.webhook_count ?? hooks.length) - hooks.length;
    const key = `${appId}\nsettings`;
    return el('details', { class: 'settings', dataset: { key }, open: open(key, true) },
      el('summary', null, 'Limits and webhooks'),
      el('dl', { class: 'limits' }, LIMITS.filter(([name]) => name in limits).map(([name, label, how]) => el('div', { dataset: { limit: name, value: String(limits[name]) } },
        el('dt', null, label), el('dd', null, limitText(limits[name], how))))),
      el('h4', null, 'Webhooks'),
      hooks.length
        ? el('ul', { class: 'webhooks' }, hooks.map((h, i) => el('li', { class: 'webhook', dataset: { webhook: String(i) } },
          el('code', { class: 'webhook-url' }, h.url),
          el('span', { class: 'muted webhook-filter' },
            Array.isArray(h.event_types) && h.event_types.length ? h.event_types.join(', ') : 'all events',
            h.channel_prefix ? ` · channels starting ${h.channel_prefix}` : ''))))
        : el('p', { class: 'muted' }, 'No webhooks.'),
      more > 0 ? el('p', { class: 'muted' }, `${plural(more, 'more endpoint')} not listed.`) : null);
  }

  /** Seconds since `ms`, as the page reads it now. */
  const ago = (ms) => `${Math.max(0, Math.round((Date.now() - ms) / 1000))} s ago`;

  /**
   * Posts to the admin API's queue routes (under the console's path, where its cookie
   * goes) with the console's write header; shows the outcome in `out`.
   */
  async function queueAction(appId, path, out) {
    out.textContent = '…';
    try {
      const res = await fetch(`${BASE}api/webhooks/${encodeURIComponent(appId)}/${path}`, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'x-herald-console': '1' },
      });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) {
        out.textContent = `Not retried (HTTP ${res.status}): ${body.error ?? res.statusText}`;
        return;
      }
      const n = Array.isArray(body.retried) ? body.retried.length : 0;
      out.textContent = `${plural(n, 'batch', 'batches')} retried: delivering now.`;
      lastStateKey = null;
    } catch (error) {
      out.textContent = `Not retried: ${error.message}`;
    }
  }

  /** An app's webhook queue: pending batches, the oldest one's age, dead letters (the
   * oldest listed, each with a retry button). */
  function webhookQueue(appId, q) {
    const dead = Array.isArray(q.dead_letters) ? q.dead_letters : [];
    const out = el('p', { class: 'muted queue-result', role: 'status' });
    const retryAll = el('button', { type: 'button', class: 'retry-all' }, 'Retry all dead letters');
    retryAll.addEventListener('click', () => queueAction(appId, 'retry', out));
    return el('section', { class: 'webhook-queue', dataset: { queue: appId } },
      el('h4', null, 'Webhook queue'),
      el('dl', { class: 'stats' },
        stat('Pending', q.pending ?? 0, 'queue-pending'),
        stat('Oldest pending', q.oldest_pending_ms ? ago(q.oldest_pending_ms) : '—', 'queue-oldest'),
        stat('Dead letters', q.dead ?? 0, 'queue-dead'),
        stat('Stored', limitText(q.bytes ?? 0, { bytes: true }), 'queue-bytes')),
      dead.length
        ? el('ul', { class: 'dead-letters' }, dead.map((d) => {
          const retry = el('button', { type: 'button', class: 'retry' }, 'Retry');
          retry.addEventListener('click', () => queueAction(appId, `${encodeURIComponent(d.id)}/retry`, out));
          return el('li', { class: 'dead-letter', dataset: { id: d.id } },
            el('code', null, d.id), ' ',
            el('span', { class: 'muted' },
              `${(d.channels ?? []).join(', ')} · ${plural(d.attempts ?? 0, 'attempt')} · `,
              `${d.last_error ?? (d.last_status ? `status ${d.last_status}` : 'no answer')} · `,
              `dead ${d.dead_ms ? ago(d.dead_ms) : ''} · ${d.url ?? ''}`),
            ' ', retry);
        }))
        : null,
      dead.length ? retryAll : null,
      dead.length < (q.dead ?? 0) ? el('p', { class: 'muted' }, `The oldest ${dead.length} are listed: herald webhooks list pages through all.`) : null,
      out);
  }

  function stat(label, value, key) {
    return el('div', { dataset: { stat: key } }, el('dt', null, label), el('dd', null, value));
  }

  function channelItem(appId, ch, open) {
    const members = ch.members ?? [];
    const isPresence = ch.name.startsWith('presence-');
    const counts = [plural(ch.subscribers ?? 0, 'subscriber')];
    if (isPresence) counts.push(plural(members.length, 'member'));
    const key = `${appId}\n${ch.name}\ncache`;
    return el('li', { class: 'channel', dataset: { channel: ch.name } },
      el('div', { class: 'channel-head' },
        el('span', { class: 'channel-name' }, ch.name),
        el('span', { class: 'count' }, counts.join(' · '))),
      members.length
        ? el('ul', { class: 'members' }, members.map((m) => {
          const info = m.user_info === undefined || m.user_info === null ? '' : JSON.stringify(m.user_info);
          return el('li', { class: 'member', dataset: { user: m.user_id } },
            el('span', { class: 'member-id' }, m.user_id),
            info && el('span', { class: 'member-info', title: info }, info));
        }))
        : null,
      typeof ch.cache === 'string'
        ? el('details', { class: 'cache', dataset: { key }, open: open(key, false) },
          el('summary', null, 'Cached event data'),
          el('pre', null, pretty(ch.cache)))
        : null,
      historyItem(appId, ch.name, open));
  }

  /** The history pages the reader opened, by their details' key: a re-render shows them again. */
  const histories = new Map();

  /** A channel's last events (the history API's page), newest first, or why there are none. */
  function historyItem(appId, channel, open) {
    const key = `${appId}\n${channel}\nhistory`;
    const box = el('div', null, historyList(key));
    const details = el('details', { class: 'history', dataset: { key }, open: open(key, false) },
      el('summary', null, 'History (the last 50 events)'), box);
    // Read again each time it is opened: the history moves on.
    details.addEventListener('toggle', () => {
      if (details.open) loadHistory(appId, channel, key, box);
    });
    return details;
  }

  function historyList(key) {
    const shown = histories.get(key);
    if (!shown) return el('p', { class: 'muted' }, 'Loading…');
    if (shown.error) return el('p', { class: 'muted' }, shown.error);
    if (!shown.events.length) return el('p', { class: 'muted' }, 'No events kept.');
    return el('ol', { class: 'history-events' }, [...shown.events].reverse().map((e) => {
      const data = typeof e.data === 'string' ? e.data : JSON.stringify(e.data);
      return el('li', { dataset: { serial: e.serial } },
        el('span', { class: 'count' }, `#${e.serial} · ${clock(e.published_at_ms)}`), ' ',
        el('strong', null, e.event), e.user_id ? ` (${e.user_id})` : '', ' ',
        el('code', { title: data }, data.length > 200 ? `${data.slice(0, 200)}…` : data));
    }));
  }

  async function loadHistory(appId, channel, key, box) {
    try {
      const query = `app=${encodeURIComponent(appId)}&channel=${encodeURIComponent(channel)}`;
      const res = await fetch(`${BASE}api/history?${query}`, { cache: 'no-store', credentials: 'same-origin' });
      const body = await res.json().catch(() => ({}));
      histories.set(key, res.ok
        ? { events: Array.isArray(body.events) ? body.events : [] }
        : { error: body.error ?? `HTTP ${res.status}` });
    } catch (error) {
      histories.set(key, { error: `Not read: ${error.message}` });
    }
    box.replaceChildren(historyList(key));
  }

  /** Puts `ids` in `select` as options (after the fixed first ones), keeping the choice. */
  function fillAppSelect(select, ids, keepFirst) {
    const chosen = select.value;
    const fixed = keepFirst ? [...select.options].slice(0, keepFirst) : [];
    const wanted = [...fixed.map((o) => o.value), ...ids];
    const have = [...select.options].map((o) => o.value);
    if (wanted.length === have.length && wanted.every((v, i) => v === have[i])) return;
    select.replaceChildren(...fixed, ...ids.map((id) => el('option', { value: id }, `App ${id}`)));
    if (wanted.includes(chosen)) select.value = chosen;
  }

  /** Apps seen in the state or in the log, for the log's app filter. */
  function noteApp(id) {
    if (id === undefined || id === null) return;
    const key = String(id);
    if (knownApps.has(key)) return;
    knownApps.add(key);
    fillAppSelect($('filter-app'), [...knownApps].sort(), 1);
  }

  // ---------------------------------------------------------------------------------------
  // Live log
  // ---------------------------------------------------------------------------------------

  const log = $('log');
  const rowData = new WeakMap();
  const filters = { app: '', channel: '', kind: '' };
  let paused = false;
  let waiting = []; // rows that came while paused, oldest first
  let lostWhilePaused = 0;
  let pending = []; // rows to put in on the next flush, oldest first
  let flushTimer = null;
  let droppedTotal = 0;

  function channelsOf(row) {
    if (Array.isArray(row.channels)) return row.channels.map(String);
    if (typeof row.channel === 'string') return [row.channel];
    return [];
  }

  function matches(row) {
    // A gap in the stream matters whatever the reader is looking at.
    if (row.kind === 'dropped' || row.local) return true;
    if (filters.app && String(row.app) !== filters.app) return false;
    if (filters.kind && row.kind !== filters.kind) return false;
    if (filters.channel) {
      const needle = filters.channel.toLowerCase();
      if (!channelsOf(row).some((c) => c.toLowerCase().includes(needle))) return false;
    }
    return true;
  }

  /** A data preview as the row shows it, marked when the server cut it. */
  function preview(row) {
    const data = row.data === undefined || row.data === null ? '' : String(row.data);
    return row.truncated ? `${data}… (truncated)` : data;
  }

  /** The one-line summary of a row, by kind. */
  function describe(row) {
    switch (row.kind) {
      case 'connection_opened':
        return `socket ${row.socket_id}`;
      case 'connection_closed':
        return `socket ${row.socket_id}${row.code === undefined || row.code === null ? '' : ` · code ${row.code}`}`;
      case 'subscribed':
      case 'unsubscribed':
        return `${row.channel} · socket ${row.socket_id}`;
      case 'api_publish': {
        const except = row.socket_id ? ` · except ${row.socket_id}` : '';
        return `${row.event} → ${channelsOf(row).join(', ')}${except} · ${preview(row)}`;
      }
      case 'client_event':
        return `${row.event} → ${row.channel} · from ${row.socket_id} · ${preview(row)}`;
      case 'webhook': {
        const status = row.status === null || row.status === undefined ? 'no answer' : `HTTP ${row.status}`;
        const events = Array.isArray(row.events) ? row.events.join(', ') : '';
        return `${row.outcome} · ${status} · attempt ${row.attempt} · ${events} · ${row.url}`;
      }
      case 'refused':
        return `limit ${row.limit}${row.socket_id ? ` · socket ${row.socket_id}` : ''}`;
      case 'dropped':
        return `${plural(Number(row.count) || 0, 'row')} dropped: this tab fell behind the server`;
      default:
        return row.message ?? '';
    }
  }

  function rowElement(row) {
    const kind = String(row.kind ?? 'unknown');
    const time = Number(row.time_ms ?? row.arrived_ms);
    const when = Number.isFinite(time) ? new Date(time) : null;
    const bad = kind === 'webhook' && row.outcome && row.outcome !== 'delivered' && row.outcome !== 'retry';
    const classes = ['row', `kind-${kind.replace(/[^a-z_]/g, '')}`];
    if (bad) classes.push('bad');
    if (row.local) classes.push('local');
    const details = el('details', {
      class: classes.join(' '),
      dataset: {
        kind,
        app: row.app === undefined || row.app === null ? '' : String(row.app),
        channels: channelsOf(row).join('\n'),
      },
    },
    el('summary', null,
      el('time', when ? { datetime: when.toISOString(), title: when.toLocaleString() } : null, when ? clock(time) : '—'),
      el('span', { class: 'row-app' }, row.app === undefined || row.app === null ? '' : `app ${row.app}`),
      el('span', { class: 'kind' }, row.local ? 'console' : kind),
      el('span', { class: 'what' }, describe(row))));
    rowData.set(details, row);
    details.hidden = !matches(row);
    return details;
  }

  // The full JSON is built when a row is first opened: 2,000 closed rows stay light.
  log.addEventListener('toggle', (event) => {
    const details = event.target;
    if (!details.open || details.querySelector('pre')) return;
    const row = rowData.get(details);
    details.append(el('pre', { class: 'json' }, JSON.stringify(row, null, 2)));
    // Event data is JSON text inside the JSON: shown once more, parsed, when it parses whole.
    if (typeof row.data === 'string' && !row.truncated) {
      try {
        const parsed = JSON.parse(row.data);
        details.append(el('p', { class: 'data-label' }, 'data, parsed'), el('pre', { class: 'data' }, JSON.stringify(parsed, null, 2)));
      } catch {
        // Not JSON: the row's JSON above shows it as it is.
      }
    }
  }, true);

  function receive(row) {
    // When it came, for a row without time_ms of its own (the server's `dropped` rows);
    // not enumerable, so the row's JSON stays what the server sent.
    Object.defineProperty(row, 'arrived_ms', { value: Date.now(), enumerable: false });
    if (row.kind === 'dropped') {
      droppedTotal += Number(row.count) || 0;
      showNotice();
    }
    noteApp(row.app);
    if (paused) {
      waiting.push(row);
      if (waiting.length > MAX_ROWS) {
        lostWhilePaused += waiting.length - MAX_ROWS;
        waiting = waiting.slice(-MAX_ROWS);
      }
      updateCount();
      return;
    }
    queue([row]);
  }

  function queue(rows) {
    pending.push(...rows);
    if (pending.length > MAX_ROWS) pending = pending.slice(-MAX_ROWS);
    flushTimer ??= setTimeout(flush, 30);
  }

  /** Puts the pending rows in, newest first, and trims the oldest past MAX_ROWS. */
  function flush() {
    flushTimer = null;
    const fragment = document.createDocumentFragment();
    for (let i = pending.length - 1; i >= 0; i--) fragment.append(rowElement(pending[i]));
    pending = [];
    log.prepend(fragment);
    while (log.childElementCount > MAX_ROWS) log.lastElementChild.remove();
    updateCount();
  }

  function refilter() {
    for (const details of log.children) details.hidden = !matches(rowData.get(details));
    updateCount();
  }

  function updateCount() {
    const total = log.childElementCount;
    let shown = 0;
    for (const details of log.children) if (!details.hidden) shown++;
    const parts = [shown === total ? plural(total, 'row') : `${shown} of ${plural(total, 'row')}`];
    if (paused) parts.push(`paused, ${waiting.length} waiting`);
    $('log-count').textContent = parts.join(' · ');
    $('log-empty').hidden = total > 0;
  }

  function showNotice() {
    const notice = $('log-notice');
    const parts = [];
    if (droppedTotal) parts.push(`${plural(droppedTotal, 'row')} dropped by the server since this tab opened: it fell behind the stream.`);
    if (lostWhilePaused) parts.push(`${plural(lostWhilePaused, 'row')} not kept while paused (only the last ${MAX_ROWS} wait).`);
    notice.textContent = parts.join(' ');
    notice.hidden = parts.length === 0;
  }

  function setPaused(value) {
    paused = value;
    const button = $('log-pause');
    button.textContent = paused ? 'Resume' : 'Pause';
    button.setAttribute('aria-pressed', String(paused));
    if (!paused) {
      if (lostWhilePaused) {
        waiting.unshift({
          local: true, kind: 'console', time_ms: Date.now(),
          message: `${plural(lostWhilePaused, 'row')} not kept while paused`,
        });
      }
      const rows = waiting;
      waiting = [];
      queue(rows);
      showNotice();
    }
    updateCount();
  }

  $('log-pause').addEventListener('click', () => setPaused(!paused));
  $('log-clear').addEventListener('click', () => {
    log.replaceChildren();
    pending = [];
    waiting = [];
    lostWhilePaused = 0;
    droppedTotal = 0;
    showNotice();
    updateCount();
  });
  $('filter-app').addEventListener('change', (e) => { filters.app = e.target.value; refilter(); });
  $('filter-kind').addEventListener('change', (e) => { filters.kind = e.target.value; refilter(); });
  $('filter-channel').addEventListener('input', (e) => { filters.channel = e.target.value.trim(); refilter(); });
  $('filter-kind').append(...KINDS.map((k) => el('option', { value: k }, k)));

  // ---------------------------------------------------------------------------------------
  // The event stream
  // ---------------------------------------------------------------------------------------

  let source = null;

  function openStream() {
    const status = $('stream-status');
    source = new EventSource(`${BASE}api/events`);
    source.onopen = () => {
      document.body.dataset.stream = 'open';
      setPill(status, 'stream: live', 'ok');
    };
    source.onmessage = (event) => {
      let row;
      try {
        row = JSON.parse(event.data);
      } catch {
        row = { local: true, kind: 'console', time_ms: Date.now(), message: `unreadable row: ${event.data}` };
      }
      if (row && typeof row === 'object') receive(row);
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // An HTTP error (a missing token, say): EventSource gives up, so try again later.
        document.body.dataset.stream = 'closed';
        setPill(status, 'stream: closed, retrying', 'bad');
        source.close();
        setTimeout(openStream, 5000);
      } else {
        document.body.dataset.stream = 'reconnecting';
        setPill(status, 'stream: reconnecting…', 'warn');
      }
    };
  }

  // ---------------------------------------------------------------------------------------
  // Publish form
  // ---------------------------------------------------------------------------------------

  const form = $('publish');

  function result(tone, text) {
    const out = $('pub-result');
    out.className = tone;
    out.textContent = text;
  }

  function invalid(input, text) {
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    result('error', text);
  }

  form.addEventListener('input', (e) => e.target.removeAttribute('aria-invalid'));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const app = $('pub-app').value;
    const channels = $('pub-channels').value.split(',').map((c) => c.trim()).filter(Boolean);
    const name = $('pub-name').value.trim();
    const data = $('pub-data').value;
    const socketId = $('pub-socket').value.trim();
    if (!app) return result('error', 'No app to publish to.');
    if (!channels.length) return invalid($('pub-channels'), 'Name at least one channel.');
    if (!name) return invalid($('pub-name'), 'Give the event a name.');
    try {
      JSON.parse(data);
    } catch (error) {
      return invalid($('pub-data'), `Data is not valid JSON: ${error.message}`);
    }
    const button = $('pub-send');
    button.disabled = true;
    result('', 'Publishing…');
    try {
      const res = await fetch(`${BASE}api/publish`, {
        method: 'POST',
        credentials: 'same-origin',
        // The server refuses a write without this header: a page of another origin cannot
        // send it.
        headers: { 'content-type': 'application/json', 'x-herald-console': '1' },
        body: JSON.stringify({ app, channels, name, data, socket_id: socketId || null }),
      });
      const body = await res.json().catch(() => null);
      if (res.ok && body && body.ok) {
        result('ok', `Published ${name} to ${channels.join(', ')} (app ${app}).`);
      } else {
        const why = body && typeof body.error === 'string' ? body.error : res.statusText;
        result('error', `Not published (HTTP ${res.status}): ${why}`);
      }
    } catch (error) {
      result('error', `Not published: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  });

  updateCount();
  openStream();
  pollState();
})();
