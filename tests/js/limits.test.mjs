// Plan limits seen through the official `pusher` library and pusher-js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fixture, restClient, once, connected, sleep } from './harness.mjs';

const { server, client } = fixture();

const planned = (plan, app = '') => `
[plans.tight]
${plan}
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
plan = "tight"
${app}
`;

const statusOf = (p) => p.then((r) => ({ status: r.status }), (e) => ({ status: e.status, body: e.body }));

test('publishes over the plan rate get 429 with Retry-After', async () => {
  const { port } = await server(planned('publishes_per_second = 2'));
  const rest = restClient(port);
  // Start at the beginning of a second so the three calls share one window.
  await sleep(1000 - (Date.now() % 1000) + 20);
  const results = [];
  for (let i = 0; i < 3; i++) results.push(await statusOf(rest.trigger('c', 'e', {})));
  assert.deepEqual(results.slice(0, 2).map((r) => r.status), [200, 200]);
  assert.equal(results[2].status, 429);
  assert.match(JSON.parse(results[2].body).error, /2 publishes per second/);

  const body = '{"name":"e","channel":"c","data":"{}"}';
  const qs = rest.createSignedQueryString({ method: 'POST', path: '/apps/1/events', body });
  const raw = await fetch(`http://127.0.0.1:${port}/apps/1/events?${qs}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body,
  });
  assert.equal(raw.status, 429, 'still the same second');
  assert.equal(raw.headers.get('retry-after'), '1');
  await sleep(1100);
  assert.equal((await statusOf(rest.trigger('c', 'e', {}))).status, 200, 'a new second has a new budget');
});

test('reads over the plan rate get 429; publishes are counted apart', async () => {
  const { port } = await server(planned('reads_per_second = 1'));
  const rest = restClient(port);
  await sleep(1000 - (Date.now() % 1000) + 20);
  assert.equal((await statusOf(rest.get({ path: '/channels' }))).status, 200);
  assert.equal((await statusOf(rest.get({ path: '/channels' }))).status, 429);
  assert.equal((await statusOf(rest.trigger('c', 'e', {}))).status, 200);
});

test('over the daily message quota: 403 that says so', async () => {
  const { port } = await server(planned('messages_per_day = 3'));
  const rest = restClient(port);
  const c = client(port);
  await connected(c);
  const ch = c.subscribe('quota');
  await once(ch, 'pusher:subscription_succeeded');
  // Each publish to a channel with one subscriber counts 2 (the publish and the delivery).
  assert.equal((await statusOf(rest.trigger('quota', 'e', {}))).status, 200);
  assert.equal((await statusOf(rest.trigger('quota', 'e', {}))).status, 200);
  const over = await statusOf(rest.trigger('quota', 'e', {}));
  assert.equal(over.status, 403);
  assert.match(JSON.parse(over.body).error, /daily message quota/);
});

test('a plan\'s max_connections refuses the extra socket with 4004, and the app can override it', async () => {
  const { port } = await server(planned('max_connections = 1'));
  const first = client(port);
  await connected(first);
  const second = client(port);
  const err = await once(second.connection, 'error');
  assert.equal(err?.data?.code ?? err?.error?.data?.code, 4004);

  const roomy = await server(planned('max_connections = 1', 'max_connections = 3'));
  const a = client(roomy.port);
  const b = client(roomy.port);
  await Promise.all([connected(a), connected(b)]);
});
