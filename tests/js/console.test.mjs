// The live console (/console on the admin listener) in a real headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core) against a real `herald serve`: the page
// shows a pusher-js client's connection, subscription and presence membership, publishes
// from its own form to that client, and works behind the admin token. One node, apps in the
// config file (node_suite.rs runs this file in no other mode). The rate charts and an app's
// limits and webhooks are checked on a third node, whose app has limits and a webhook
// receiver of its own; that page is the screenshot docs/operations.md shows (docs/console.png).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { existsSync, mkdirSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import {
  startNode, wsClient, restClient, connected, subscribed, once, sleep,
} from './harness.mjs';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const CHROMIUM = '/usr/bin/chromium';
// The flags of this machine's notes (see browser.test.mjs).
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic',
];
const TOKEN = 'console-test-admin-token';
// A zone 5 h 45 min off UTC: a time shown in it is plainly not UTC, nor the machine's own.
const ZONE = 'Asia/Kathmandu';
// The committed screenshot is rewritten only on request (its times and socket ids change
// every run): HERALD_CONSOLE_SCREENSHOT=1 cargo test -p herald-cli --test node_suite console.
const SCREENSHOT = process.env.HERALD_CONSOLE_SCREENSHOT
  ? fileURLToPath(new URL('../../docs/console.png', import.meta.url))
  : join(mkdtempSync(join(tmpdir(), 'herald-console-')), 'console.png');

let browser;
let open;
let locked;
let charted;
let hooks;
const clients = [];

// The charted node's app: limits of its own and a webhook whose URL carries a password.
const CHART_APP = { appId: '7', key: 'chart-key', secret: 'chart-secret' };
const HOOK_PASSWORD = 'hunter2-not-for-the-page';
const chartedConfig = (hookPort) => `admin_port = 0
webhook_vacated_delay_ms = 100
webhook_allowed_networks = ["127.0.0.1/32"]
[[apps]]
id = "${CHART_APP.appId}"
key = "${CHART_APP.key}"
secret = "${CHART_APP.secret}"
max_connections = 50
publishes_per_second = 4
client_events_per_second = 3
[[apps.webhooks]]
url = "http://hooks:${HOOK_PASSWORD}@127.0.0.1:${hookPort}/pusher"
event_types = ["channel_occupied", "channel_vacated"]
channel_prefix = "chart-"
`;

/** A webhook receiver that answers 200 and counts what it got. */
async function hookReceiver() {
  const got = { posts: 0 };
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => { got.posts++; res.writeHead(200).end('{}'); });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, got, port: server.address().port };
}

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing (Debian: apt-get install chromium)`);
  hooks = await hookReceiver();
  // admin_port = 0: a free admin port each, whatever else runs on this machine.
  [browser, open, locked, charted] = await Promise.all([
    chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS }),
    startNode('admin_port = 0\n'),
    startNode(`admin_port = 0\nadmin_token = "${TOKEN}"\n`),
    startNode(chartedConfig(hooks.port)),
  ]);
});

after(async () => {
  for (const c of clients) c.disconnect();
  await browser?.close();
  hooks?.server.close();
  for (const node of [open, locked, charted]) {
    if (node) assert.equal((await node.stop()).code, 0, 'server exits 0 on SIGTERM');
  }
});

function client(port, opts) {
  const c = wsClient(port, opts);
  clients.push(c);
  return c;
}

/**
 * A page of a fresh browser context (closed after test `t`) at 1280×800 in ZONE. It keeps
 * its uncaught errors (`page.errors`) and every URL it asked for that is not `origin`'s
 * (`page.elsewhere`): the console must fetch nothing from anywhere else.
 */
async function newPage(t, origin) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, timezoneId: ZONE, colorScheme: 'light' });
  t.after(() => context.close());
  const page = await context.newPage();
  page.errors = [];
  page.elsewhere = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  page.on('request', (r) => {
    const url = r.url();
    if (!url.startsWith(`${origin}/`) && !url.startsWith('data:')) page.elsewhere.push(url);
  });
  return page;
}

/** Opens the console at `url` and waits until its stream is open and its state shown. */
async function openConsole(page, url) {
  await page.goto(url);
  await page.waitForFunction(
    () => document.body.dataset.stream === 'open' && document.body.dataset.state === 'ok',
    null,
    { timeout: 5000 },
  );
}

/** The log's rows as the page shows them: kind, app and summary text, newest first. */
const logRows = (page) => page.$$eval('#log .row', (rows) => rows.map((r) => ({
  kind: r.dataset.kind, app: r.dataset.app, hidden: r.hidden, text: r.querySelector('summary').textContent,
})));

/**
 * Waits for a log row of `kind` whose summary contains every one of `texts`; returns its
 * summary text. On a timeout the error lists the whole log.
 */
async function logRow(page, kind, ...texts) {
  try {
    const handle = await page.waitForFunction(
      ({ kind, texts }) => [...document.querySelectorAll('#log .row')]
        .map((r) => r.dataset.kind === kind && r.querySelector('summary').textContent)
        .find((text) => text && texts.every((t) => text.includes(t))),
      { kind, texts },
      { timeout: 5000 },
    );
    return await handle.jsonValue();
  } catch (e) {
    const rows = await logRows(page).catch(() => []);
    throw new Error(`${e.message}\nwaiting for a ${kind} row with ${JSON.stringify(texts)}; the log:\n`
      + `${rows.map((r) => JSON.stringify(r)).join('\n')}\nerrors: ${page.errors.join('; ')}`);
  }
}

/** Clicks the publish button and waits for the form's result; returns [tone, text]. */
async function publish(page) {
  const before = await page.$eval('#pub-result', (o) => o.textContent);
  await page.click('#pub-send');
  await page.waitForFunction(
    (before) => {
      const out = document.querySelector('#pub-result');
      return out.className && out.className !== '' && out.textContent !== before && out.textContent !== 'Publishing…';
    },
    before,
    { timeout: 5000 },
  );
  return page.$eval('#pub-result', (o) => [o.className, o.textContent]);
}

/** HH:MM:SS.mmm of `ms` in ZONE, worked out here rather than by the page. */
function inZone(ms) {
  const hms = new Intl.DateTimeFormat('en-GB', {
    timeZone: ZONE, hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
  }).format(ms);
  return `${hms}.${String(ms % 1000).padStart(3, '0')}`;
}

test('the console shows a client\'s connection, subscription and presence, and publishes to it from its form', async (t) => {
  const origin = `http://${open.admin}`;
  const page = await newPage(t, origin);
  await openConsole(page, `${origin}/console`);

  // A pusher-js client (Node), signed in and a member of a presence channel.
  const alice = client(open.port, {
    userId: 'alice', userInfo: { name: 'Alice' }, user: { id: 'alice', user_info: { name: 'Alice' } },
  });
  await connected(alice);
  const socketId = alice.connection.socket_id;
  alice.signin();
  const room = await subscribed(alice, 'presence-room');
  await subscribed(alice, 'news');
  // A cache channel holding an event, for the state view's cache contents (the state
  // lists occupied channels only).
  await restClient(open.port).trigger('cache-prices', 'price', { eur: 1.08 });
  await subscribed(alice, 'cache-prices');

  // (2) the log shows the connection and the subscriptions as they happened.
  await logRow(page, 'connection_opened', socketId);
  await logRow(page, 'subscribed', 'presence-room', socketId);
  await logRow(page, 'subscribed', 'news', socketId);

  // (3) the state view: the member with its info, the connection, the channel's
  // subscriber, the signed-in user and the cached event.
  const app = '#apps [data-app="1"]';
  const member = await page.waitForSelector(`${app} [data-channel="presence-room"] .member[data-user="alice"]`, { timeout: 5000 });
  assert.equal(await member.textContent(), 'alice{"name":"Alice"}');
  await page.waitForSelector(`${app} .users [data-user="alice"]`, { timeout: 5000 });
  await page.waitForSelector(`${app} [data-channel="cache-prices"] details.cache`, { timeout: 5000 });
  assert.equal(await page.textContent(`${app} [data-stat="connections"] dd`), '1');
  assert.match(await page.textContent(`${app} [data-channel="presence-room"] .count`), /^1 subscriber · 1 member$/);
  const cached = JSON.parse(await page.$eval(`${app} [data-channel="cache-prices"] pre`, (p) => p.textContent));
  assert.deepEqual(cached, { eur: 1.08 });

  // (1) an event published from the console's form reaches the client.
  const data = { message: 'hello from the console', n: 1 };
  const got = once(room, 'greeting', 5000);
  await page.selectOption('#pub-app', '1');
  await page.fill('#pub-channels', 'presence-room, news');
  await page.fill('#pub-name', 'greeting');
  await page.fill('#pub-data', JSON.stringify(data));
  assert.deepEqual(await publish(page), ['ok', 'Published greeting to presence-room, news (app 1).']);
  assert.deepEqual(await got, data);
  const summary = await logRow(page, 'api_publish', 'greeting', 'presence-room, news');
  assert.ok(summary.includes(JSON.stringify(data)), summary);

  // A row opens to the full JSON the server sent, and shows its time in the local zone.
  const publishRow = page.locator('#log .row[data-kind="api_publish"]').first();
  await publishRow.locator('summary').click();
  const row = JSON.parse(await publishRow.locator('pre.json').textContent());
  assert.equal(row.kind, 'api_publish');
  assert.equal(row.app, '1');
  assert.equal(row.event, 'greeting');
  assert.deepEqual(row.channels, ['presence-room', 'news']);
  assert.equal(row.data, JSON.stringify(data));
  assert.deepEqual(JSON.parse(await publishRow.locator('pre.data').textContent()), data);
  assert.equal(await publishRow.locator('time').textContent(), inZone(row.time_ms));

  // Nothing came from elsewhere.
  assert.deepEqual(page.elsewhere, []);
  assert.deepEqual(page.errors, []);

  // At phone width the layout is one column with no sideways scroll.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForFunction(() => innerWidth === 390);
  const phone = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth,
    columns: getComputedStyle(document.querySelector('.layout')).gridTemplateColumns.split(' ').length,
  }));
  assert.ok(phone.scrollWidth <= phone.innerWidth, `no horizontal scroll at 390 px: ${JSON.stringify(phone)}`);
  assert.equal(phone.columns, 1);

  // The screenshot for the docs, back at laptop width, from the top.
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.waitForFunction(() => innerWidth === 1280);
  const laptop = await page.evaluate(() => {
    window.scrollTo(0, 0);
    return {
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth,
      columns: getComputedStyle(document.querySelector('.layout')).gridTemplateColumns.split(' ').length,
    };
  });
  assert.ok(laptop.scrollWidth <= laptop.innerWidth, JSON.stringify(laptop));
  assert.equal(laptop.columns, 2);
});

/** The legend of `series` in chart `chart` of app `app`: its latest and peak values. */
const legend = (page, app, chart, series) => page.$eval(
  `#charts [data-app="${app}"] [data-chart="${chart}"] [data-series="${series}"]`,
  (l) => ({ now: Number(l.dataset.now), peak: Number(l.dataset.peak), text: l.textContent }),
);

test('the charts show an app\'s rates as they happen, and its limits and webhooks are shown without credentials', async (t) => {
  const origin = `http://${charted.admin}`;
  const page = await newPage(t, origin);
  await openConsole(page, `${origin}/console`);
  const app = CHART_APP.appId;
  // Before any traffic the charts are there, flat.
  await page.waitForSelector(`#charts [data-app="${app}"] [data-chart="messages"] svg`, { timeout: 5000 });
  assert.equal((await legend(page, app, 'messages', 'in')).peak, 0);

  // Traffic over a few polls: two pusher-js clients on channels the webhook covers (each
  // occupied and vacated: webhook attempts), HTTP publishes to them (messages in and out),
  // and more publishes a second than the app allows (refusals).
  const rest = restClient(charted.port, CHART_APP);
  const a = client(charted.port, { key: CHART_APP.key, signer: rest });
  const b = client(charted.port, { key: CHART_APP.key, signer: rest });
  await Promise.all([connected(a), connected(b)]);
  let delivered = 0;
  for (const c of [a, b]) (await subscribed(c, 'chart-room')).bind('tick', () => { delivered++; });
  let accepted = 0;
  let refused = 0;
  for (let round = 0; round < 4; round++) {
    await subscribed(a, `chart-extra-${round}`);
    const sent = await Promise.allSettled(
      Array.from({ length: 6 }, (_, i) => rest.trigger('chart-room', 'tick', { round, i })),
    );
    for (const s of sent) {
      if (s.status === 'fulfilled') accepted++;
      else if (s.reason?.status === 429) refused++;
      else throw s.reason;
    }
    a.unsubscribe(`chart-extra-${round}`);
    await sleep(1600);
  }
  assert.ok(accepted > 0 && refused > 0, `some publishes accepted (${accepted}), some refused (${refused})`);
  assert.ok(delivered > 0 && hooks.got.posts > 0, `deliveries ${delivered}, webhooks ${hooks.got.posts}`);

  const peaks = async () => ({
    connections: await legend(page, app, 'connections', 'open'),
    in: await legend(page, app, 'messages', 'in'),
    out: await legend(page, app, 'messages', 'out'),
    attempts: await legend(page, app, 'webhooks', 'attempts'),
    refused: await legend(page, app, 'refusals', 'refused'),
  });
  try {
    await page.waitForFunction((app) => ['messages', 'webhooks', 'refusals'].every((chart) => {
      const l = document.querySelector(`#charts [data-app="${app}"] [data-chart="${chart}"] .legend`);
      return l && Number(l.dataset.peak) > 0;
    }), app, { timeout: 8000 });
  } catch (e) {
    throw new Error(`${e.message}: ${JSON.stringify(await peaks())}`);
  }
  const seen = await peaks();
  assert.equal(seen.connections.now, 2, JSON.stringify(seen));
  assert.match(seen.connections.text, /^open 2$/);
  for (const name of ['in', 'out', 'attempts', 'refused']) assert.ok(seen[name].peak > 0, `${name}: ${JSON.stringify(seen)}`);
  // Out: each accepted publish went to two subscribers, on top of the publishes in.
  assert.ok(seen.out.peak >= seen.in.peak / 2, JSON.stringify(seen));
  // The lines are drawn: a polyline per series with points across the plot.
  const drawn = await page.$$eval(`#charts [data-app="${app}"] polyline`, (ls) => ls.map((l) => l.getAttribute('points').split(' ').length));
  assert.ok(drawn.length >= 5 && drawn.some((n) => n >= 3), JSON.stringify(drawn));
  assert.match(await page.textContent('#charts-span'), /^the last \d+ s, from this tab's polls$/);

  // The app's limits and webhook, as configured; the URL without its password.
  const card = `#apps [data-app="${app}"]`;
  const limit = (name) => page.textContent(`${card} [data-limit="${name}"] dd`);
  assert.equal(await limit('max_connections'), '50');
  assert.equal(await limit('publishes_per_second'), '4');
  assert.equal(await limit('client_events_per_second'), '3');
  assert.equal(await limit('reads_per_second'), 'unlimited');
  assert.equal(await limit('max_event_data_bytes'), '100 KiB');
  assert.equal(
    await page.textContent(`${card} .webhook[data-webhook="0"] .webhook-url`),
    `http://hooks:<redacted>@127.0.0.1:${hooks.port}/pusher`,
  );
  assert.equal(
    await page.textContent(`${card} .webhook[data-webhook="0"] .webhook-filter`),
    'channel_occupied, channel_vacated · channels starting chart-',
  );
  assert.ok(!(await page.content()).includes(HOOK_PASSWORD), 'the webhook password is not on the page');
  assert.ok(!(await page.content()).includes(CHART_APP.secret), 'the app secret is not on the page');
  assert.deepEqual(page.elsewhere, []);
  assert.deepEqual(page.errors, []);

  // Polls that change only the counters move the charts but leave the apps view as it is
  // (a reader's selection in it survives): the same element after two more polls.
  await page.$eval(card, (c) => { c.dataset.marked = 'yes'; });
  const samples = Number(await page.$eval(`#charts [data-app="${app}"]`, (c) => c.dataset.samples));
  await page.waitForFunction(({ app, samples }) => Number(document.querySelector(`#charts [data-app="${app}"]`).dataset.samples) >= samples + 2, { app, samples }, { timeout: 6000 });
  assert.equal(await page.$eval(card, (c) => c.dataset.marked), 'yes');

  // At phone width the charts fit: no sideways scroll.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForFunction(() => innerWidth === 390);
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= innerWidth));

  // The screenshot for the docs, at laptop width, from the top.
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.waitForFunction(() => innerWidth === 1280);
  await page.evaluate(() => window.scrollTo(0, 0));
  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });
  assert.ok(statSync(SCREENSHOT).size > 10000, 'a real screenshot');
});

test('the log filters by app, channel and kind; pauses, resumes and clears; the form checks its JSON and shows the server\'s errors', async (t) => {
  const origin = `http://${open.admin}`;
  const page = await newPage(t, origin);
  // Opened at /console/, it moves to /console, where its relative links resolve.
  await openConsole(page, `${origin}/console/`);
  assert.equal(page.url(), `${origin}/console`);
  assert.equal(await page.$eval('.layout', (l) => getComputedStyle(l).display), 'grid');
  const rest = restClient(open.port);
  await rest.trigger('alpha', 'first', { n: 1 });
  await rest.trigger('beta', 'second', { n: 2 });
  await logRow(page, 'api_publish', 'second', 'beta');

  const visible = async () => (await logRows(page)).filter((r) => !r.hidden).map((r) => r.text);
  await page.fill('#filter-channel', 'ALP');
  assert.deepEqual((await visible()).map((text) => text.includes('first → alpha')), [true]);
  await page.fill('#filter-channel', '');
  await page.selectOption('#filter-kind', 'subscribed');
  assert.deepEqual(await visible(), []);
  await page.selectOption('#filter-kind', 'api_publish');
  assert.equal((await visible()).length, 2);
  await page.selectOption('#filter-app', '1');
  assert.equal((await visible()).length, 2);
  await page.selectOption('#filter-kind', '');
  await page.selectOption('#filter-app', '');

  // Paused, rows wait (and are counted); resumed, they come in.
  await page.click('#log-pause');
  await rest.trigger('alpha', 'while-paused', {});
  await page.waitForFunction(() => document.querySelector('#log-count').textContent.includes('1 waiting'), null, { timeout: 5000 });
  assert.ok(!(await logRows(page)).some((r) => r.text.includes('while-paused')));
  await page.click('#log-pause');
  await logRow(page, 'api_publish', 'while-paused');
  await page.click('#log-clear');
  assert.deepEqual(await logRows(page), []);

  // Markup in what clients control (member info, event data) is shown as text: nothing
  // of it becomes an element, nothing of it runs.
  const markup = '<b>Mallory</b> & <img src=x onerror="window.pwned=1">';
  const mallory = client(open.port, { userId: 'mallory', userInfo: { name: markup } });
  await subscribed(mallory, 'presence-markup');
  await page.fill('#pub-channels', 'presence-markup');
  await page.fill('#pub-name', 'markup');
  await page.fill('#pub-data', JSON.stringify({ html: markup }));
  assert.equal((await publish(page))[0], 'ok');
  const shownData = await logRow(page, 'api_publish', 'markup');
  assert.ok(shownData.includes(JSON.stringify({ html: markup })), shownData);
  const member = await page.waitForSelector('#apps [data-channel="presence-markup"] .member[data-user="mallory"]', { timeout: 5000 });
  assert.equal(await member.textContent(), `mallory${JSON.stringify({ name: markup })}`);
  await page.locator('#log .row[data-kind="api_publish"]').first().locator('summary').click();
  await page.waitForSelector('#log .row pre.data');
  assert.deepEqual(await page.evaluate(() => [
    document.querySelectorAll('#log b, #log img, #apps b, #apps img').length, window.pwned,
  ]), [0, undefined]);

  // Data that is not JSON is refused by the page, without a request.
  let posts = 0;
  page.on('request', (r) => { if (r.url().endsWith('/console/api/publish')) posts++; });
  await page.fill('#pub-channels', 'alpha');
  await page.fill('#pub-name', 'bad');
  await page.fill('#pub-data', '{not json');
  const [tone, text] = await publish(page);
  assert.equal(tone, 'error');
  assert.match(text, /^Data is not valid JSON/);
  assert.equal(posts, 0);
  // The server's own refusal shows in the form.
  await page.fill('#pub-data', '{}');
  await page.fill('#pub-channels', 'not a channel name');
  const [badTone, badText] = await publish(page);
  assert.equal(badTone, 'error');
  assert.match(badText, /^Not published \(HTTP 4\d\d\): \S/);
  assert.equal(posts, 1);
  assert.deepEqual(page.errors, []);
});

test('dropped rows are announced, and the log keeps the newest 2,000 rows', async (t) => {
  const origin = `http://${open.admin}`;
  const page = await newPage(t, origin);
  // The stream is replaced by one of 2,100 rows whose newest end carries a `dropped` row
  // (a real one needs a tab that falls 1,024 rows behind) and a channel name with markup.
  const rows = [];
  for (let i = 0; i < 2100; i++) {
    rows.push({ time_ms: 1733070000000 + i, node_id: 1, app: '1', kind: 'subscribed', socket_id: `1.${i}`, channel: `room-${i}` });
  }
  rows.push({ kind: 'dropped', count: 5, node_id: 1 });
  rows.push({ time_ms: 1733070009999, node_id: 1, app: '1', kind: 'client_event', socket_id: '1.1', channel: '<b>x</b>', event: 'client-x', data: '<i>y</i>' });
  const body = `retry: 3600000\n\n${rows.map((r) => `data: ${JSON.stringify(r)}\n\n`).join('')}`;
  await page.route('**/console/api/events', (route) => route.fulfill({
    status: 200, headers: { 'content-type': 'text/event-stream' }, body,
  }));
  await page.goto(`${origin}/console`);
  await logRow(page, 'client_event', '<b>x</b>', '<i>y</i>');
  const shown = await logRows(page);
  assert.equal(shown.length, 2000);
  assert.match(shown[0].text, /client-x/);
  assert.equal(shown[1].kind, 'dropped');
  assert.match(shown[1].text, /5 rows dropped/);
  assert.match(shown.at(-1).text, /room-102 · /, 'the oldest 102 went');
  assert.match(await page.textContent('#log-notice'), /^5 rows dropped/);
  assert.ok(await page.isVisible('#log-notice'));
  assert.equal(await page.evaluate(() => document.querySelectorAll('#log b, #log i').length), 0);
  assert.deepEqual(page.errors, []);
});

test('with admin_token the console needs the token: /console?token= sets a cookie the page then uses', async (t) => {
  const origin = `http://${locked.admin}`;
  for (const path of ['/console/api/state', '/console/api/events', '/console']) {
    const res = await fetch(`${origin}${path}`);
    assert.equal(res.status, 401, path);
    await res.body?.cancel();
  }
  const wrong = await fetch(`${origin}/console?token=not-the-token-at-all`, { redirect: 'manual' });
  assert.equal(wrong.status, 401);

  const page = await newPage(t, origin);
  await openConsole(page, `${origin}/console?token=${TOKEN}`);
  // The token left the address bar; the cookie that carries it is out of the page's reach.
  assert.equal(page.url(), `${origin}/console`);
  const [cookie] = await page.context().cookies();
  assert.equal(cookie.name, 'herald_console');
  assert.equal(cookie.httpOnly, true);
  assert.equal(await page.evaluate(() => document.cookie), '');

  await page.waitForSelector('#apps [data-app="1"]', { timeout: 5000 });
  const c = client(locked.port);
  await connected(c);
  await logRow(page, 'connection_opened', c.connection.socket_id);
  await page.fill('#pub-channels', 'locked-room');
  await page.fill('#pub-name', 'behind-the-token');
  assert.equal((await publish(page))[0], 'ok');
  await logRow(page, 'api_publish', 'behind-the-token');
  assert.deepEqual(page.errors, []);
  assert.deepEqual(page.elsewhere, []);
});
