// Cache channels and subscription counts, seen through pusher-js and the `pusher` library.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fixture, restClient, once, subscribed, sleep, collect } from './harness.mjs';

const { server, client } = fixture();

test('a cache channel replays the last event to new subscribers, or sends cache_miss', async () => {
  const { port } = await server('');
  const rest = restClient(port);
  const first = client(port);
  const ch = first.subscribe('cache-scores');
  await once(ch, 'pusher:cache_miss');

  await rest.trigger('cache-scores', 'score', { home: 1 });
  await rest.trigger('cache-scores', 'score', { home: 2 });
  const late = client(port);
  const lateCh = late.subscribe('cache-scores');
  const replayed = collect(lateCh, 'score');
  const misses = collect(lateCh, 'pusher:cache_miss');
  await once(lateCh, 'pusher:subscription_succeeded');
  for (let i = 0; i < 40 && replayed.length === 0; i++) await sleep(25);
  assert.deepEqual(replayed.map((r) => r.data), [{ home: 2 }], 'only the last event, once');
  assert.equal(misses.length, 0);

  const info = await (await rest.get({ path: '/channels/cache-scores', params: { info: 'cache' } })).json();
  assert.equal(info.occupied, true);
  assert.equal(info.cache.data, JSON.stringify({ home: 2 }));
  assert.ok(info.cache.ttl > 1700 && info.cache.ttl <= 1800, `ttl ${info.cache.ttl}`);
});

test('cached events expire after cache_ttl', async () => {
  const { port } = await server(`
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
cache_ttl = 1
`);
  const rest = restClient(port);
  await rest.trigger('cache-short', 'ev', { v: 1 });
  await sleep(1200);
  const c = client(port);
  const ch = c.subscribe('cache-short');
  await once(ch, 'pusher:cache_miss');
  const info = await (await rest.get({ path: '/channels/cache-short', params: { info: 'cache' } })).json();
  assert.equal(info.cache, null);
});

test('subscription_count events when the app enables them', async () => {
  const { port } = await server(`
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
subscription_count = true
`);
  const a = client(port);
  const chA = await subscribed(a, 'counted');
  for (let i = 0; i < 40 && chA.subscriptionCount !== 1; i++) await sleep(25);
  assert.equal(chA.subscriptionCount, 1);
  const two = once(chA, 'pusher:subscription_count');
  const b = client(port);
  await subscribed(b, 'counted');
  assert.deepEqual(await two, { subscription_count: 2 });
  const one = once(chA, 'pusher:subscription_count');
  b.unsubscribe('counted');
  assert.deepEqual(await one, { subscription_count: 1 });
});

test('no subscription_count events by default', async () => {
  const { port } = await server('');
  const a = client(port);
  const ch = await subscribed(a, 'quiet');
  const counts = collect(ch, 'pusher:subscription_count');
  await subscribed(client(port), 'quiet');
  await sleep(200);
  assert.equal(counts.length, 0);
});
