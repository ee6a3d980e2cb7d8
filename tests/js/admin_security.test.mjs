// The admin plane against a browser attacker (issue 26), in a real headless Chromium
// (Debian's /usr/bin/chromium, driven by playwright-core) against a real `herald serve`
// with no admin_token (the loopback default, the worst case):
// - a page of another origin (a tiny HTTP server of this test, on another port) tries a
//   no-cors fetch, a form POST with enctype=text/plain and a fetch with the console's own
//   header to the console's publish, and a read of the state: no event is published and
//   nothing is read;
// - a page reached by a rebinding-style name (http://rebind.test:PORT, which Chromium
//   resolves to 127.0.0.1 through --host-resolver-rules, as a rebound DNS name would) is
//   refused the page, the state and the publish, although it is same-origin with them;
// - the console's own page still publishes from its form.
// One node, apps in the config file (node_suite.rs runs this file in no other mode).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import {
  startNode, wsClient, connected, subscribed, sleep,
} from './harness.mjs';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const CHROMIUM = '/usr/bin/chromium';
// The flags of this machine's notes (see browser.test.mjs), and the rebinding: the name
// resolves to the loopback address the admin listener is on.
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic',
  '--host-resolver-rules=MAP rebind.test 127.0.0.1',
];

let browser;
let node;
let attacker;
let attackerOrigin;
let client;
const received = [];

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing (Debian: apt-get install chromium)`);
  // The attacker's site: any page the operator happens to open.
  attacker = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>another site</title><iframe name="sink"></iframe>');
  });
  await new Promise((resolve) => attacker.listen(0, '127.0.0.1', resolve));
  attackerOrigin = `http://127.0.0.1:${attacker.address().port}`;
  // launch() gives every run a fresh temporary profile, removed on close.
  [browser, node] = await Promise.all([
    chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS }),
    startNode('admin_port = 0\n'),
  ]);
  client = wsClient(node.port);
  await connected(client);
  const news = await subscribed(client, 'news');
  news.bind_global((event, data) => {
    if (!event.startsWith('pusher:')) received.push(event);
  });
});

after(async () => {
  client?.disconnect();
  await browser?.close();
  await new Promise((resolve) => attacker?.close(resolve));
  if (node) assert.equal((await node.stop()).code, 0, 'server exits 0 on SIGTERM');
});

async function newPage(t) {
  const context = await browser.newContext();
  t.after(() => context.close());
  return context.newPage();
}

const forged = (name) => JSON.stringify({ app: '1', channels: ['news'], name, data: '{}' });

test('a page of another origin can neither publish through the console nor read it', async (t) => {
  const page = await newPage(t);
  await page.goto(`${attackerOrigin}/`);
  const admin = `http://${node.admin}`;
  const outcome = await page.evaluate(async ({ admin, bodies }) => {
    const result = {};
    // The attack of issue 26: a "simple" request, sent with no preflight.
    await fetch(`${admin}/console/api/publish`, { method: 'POST', mode: 'no-cors', body: bodies.fetch })
      .then(() => { result.noCors = 'sent'; }, (e) => { result.noCors = `failed: ${e.message}`; });
    // The console's own header forces a preflight, which the admin listener never grants.
    await fetch(`${admin}/console/api/publish`, {
      method: 'POST', headers: { 'x-herald-console': '1', 'content-type': 'application/json' }, body: bodies.header,
    }).then((r) => { result.header = r.status; }, (e) => { result.header = `failed: ${e.message}`; });
    // A plain HTML form with enctype=text/plain: the JSON is the field's name and value.
    const form = document.createElement('form');
    form.method = 'POST';
    form.action = `${admin}/console/api/publish`;
    form.enctype = 'text/plain';
    form.target = 'sink';
    const input = document.createElement('input');
    input.name = `${bodies.form.slice(0, -1)},"x":"`;
    input.value = '"}';
    form.append(input);
    document.body.append(form);
    form.submit();
    // A read of the state: the answer must not reach this page.
    await fetch(`${admin}/console/api/state`)
      .then(async (r) => { result.state = await r.text(); }, (e) => { result.state = `failed: ${e.message}`; });
    return result;
  }, { admin, bodies: { fetch: forged('forged-fetch'), header: forged('forged-header'), form: forged('forged-form') } });
  assert.match(String(outcome.header), /^failed/, 'the preflight is refused');
  assert.match(outcome.state, /^failed/, 'the state is not readable from another origin');
  // The form's answer lands in the frame; give every request time to arrive.
  await sleep(1000);
  assert.deepEqual(received.filter((e) => e.startsWith('forged')), [], 'nothing published');
});

test('a rebinding-style name reads and publishes nothing', async (t) => {
  const page = await newPage(t);
  const port = node.admin.split(':').pop();
  const rebound = `http://rebind.test:${port}`;
  const response = await page.goto(`${rebound}/console`);
  assert.equal(response.status(), 403, 'the page itself is refused');
  // Same-origin as far as the browser knows: only the Host check stands in the way.
  const outcome = await page.evaluate(async (body) => {
    const state = await fetch('/console/api/state');
    const publish = await fetch('/console/api/publish', {
      method: 'POST', headers: { 'x-herald-console': '1', 'content-type': 'application/json' }, body,
    });
    const events = await fetch('/console/api/events');
    return {
      state: state.status, stateBody: await state.text(), publish: publish.status, events: events.status,
    };
  }, forged('forged-rebound'));
  assert.equal(outcome.state, 403);
  assert.ok(!outcome.stateBody.includes('app-key'), outcome.stateBody);
  assert.equal(outcome.publish, 403);
  assert.equal(outcome.events, 403);
  await sleep(300);
  assert.deepEqual(received.filter((e) => e.startsWith('forged')), [], 'nothing published');
});

test('the console\'s own page still publishes', async (t) => {
  const page = await newPage(t);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(`http://${node.admin}/console`);
  await page.waitForFunction(
    () => document.body.dataset.stream === 'open' && document.body.dataset.state === 'ok',
    null,
    { timeout: 5000 },
  );
  await page.selectOption('#pub-app', '1');
  await page.fill('#pub-channels', 'news');
  await page.fill('#pub-name', 'from-console');
  await page.fill('#pub-data', '{"ok":true}');
  await page.click('#pub-send');
  await page.waitForFunction(() => document.querySelector('#pub-result').className === 'ok', null, { timeout: 5000 });
  for (let i = 0; i < 50 && !received.includes('from-console'); i++) await sleep(20);
  assert.ok(received.includes('from-console'), `the console's event arrived: ${received}`);
  // Its policy blocked nothing of its own.
  assert.deepEqual(errors.filter((e) => /Content Security Policy/i.test(e)), []);
});
