// Three `herald serve` nodes sharing one real redis-server, each addressed directly, driven
// by pusher-js and the official `pusher` library: publish on one node and receive on
// another, presence members joining on different nodes, channel queries from each node,
// webhooks once per cluster, a node killed with SIGKILL, and a Redis restart.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
  startRedis, startNodes, clusterConfig, restClient, wsClient, once, connected, subscribed,
  sleep, collect,
} from './harness.mjs';

const clients = [];
const stoppers = [];
after(async () => {
  for (const c of clients) c.disconnect();
  for (const stop of stoppers.reverse()) {
    const exit = await stop();
    if (exit?.code !== undefined) assert.equal(exit.code, 0, 'a live node exits 0 on SIGTERM');
  }
});

function client(port, opts) {
  const c = wsClient(port, opts);
  clients.push(c);
  return c;
}

async function waitFor(check, what, ms = 8000) {
  for (let waited = 0; waited < ms; waited += 50) {
    if (await check()) return;
    await sleep(50);
  }
  assert.fail(`not within ${ms} ms: ${what}`);
}

/** A webhook receiver recording every event. */
async function receiver() {
  const events = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      events.push(...JSON.parse(body).events);
      res.writeHead(200).end('{}');
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  stoppers.push(() => new Promise((r) => srv.close(r)));
  return { url: `http://127.0.0.1:${srv.address().port}/hook`, events };
}

/** A cluster of `n` nodes; the nodes are stopped (or already dead) after the file. */
async function cluster(n, webhookUrl) {
  const redis = await startRedis();
  stoppers.push(() => redis.kill());
  // With HERALD_APPS_DB the app is a database's, whose webhook reaches loopback only when
  // the operator allows it.
  const apps = `
webhook_vacated_delay_ms = 100
webhook_allowed_networks = ["127.0.0.1/32"]
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
client_events = true
${webhookUrl ? `[[apps.webhooks]]\nurl = "${webhookUrl}"` : ''}
`;
  const config = clusterConfig(redis, apps, 'node_timeout = 2');
  // One after the other; with HERALD_APPS_DB they share one database of apps.
  const nodes = await startNodes(config, n);
  for (const node of nodes) {
    stoppers.push(() => (node.child.exitCode === null && node.child.signalCode === null ? node.stop() : null));
  }
  return { redis, nodes };
}

const names = (events, name) => events.filter((e) => e.name === name).map((e) => e.user_id ?? e.channel);

test('events, presence, queries and webhooks behave as one server across three nodes', async () => {
  const hook = await receiver();
  const { nodes: [a, b, c] } = await cluster(3, hook.url);

  // Publish on A, receive on B and C.
  const onB = client(b.port);
  const onC = client(c.port);
  const [chB, chC] = await Promise.all([subscribed(onB, 'news'), subscribed(onC, 'news')]);
  const got = Promise.all([once(chB, 'flash'), once(chC, 'flash')]);
  const res = await restClient(a.port).trigger('news', 'flash', { n: 1 });
  assert.equal(res.status, 200);
  assert.deepEqual(await got, [{ n: 1 }, { n: 1 }]);

  // Presence members joining on different nodes see each other.
  const ann = client(a.port, { userId: 'ann', userInfo: { name: 'Ann' } });
  const ben = client(b.port, { userId: 'ben', userInfo: { name: 'Ben' } });
  const roomA = await subscribed(ann, 'presence-room');
  const annSawBen = once(roomA, 'pusher:member_added');
  const roomB = await subscribed(ben, 'presence-room');
  assert.deepEqual((await annSawBen).info, { name: 'Ben' });
  assert.equal(roomB.members.count, 2);
  assert.deepEqual(roomB.members.get('ann').info, { name: 'Ann' });

  // Client events cross nodes.
  const wave = once(roomB, 'client-wave');
  roomA.trigger('client-wave', { from: 'ann' });
  assert.deepEqual(await wave, { from: 'ann' });

  // Every node answers queries for the cluster, through the official library.
  for (const node of [a, b, c]) {
    const rest = restClient(node.port);
    const users = await (await rest.get({ path: '/channels/presence-room/users' })).json();
    assert.deepEqual(users.users.map((u) => u.id).sort(), ['ann', 'ben']);
    const info = await (await rest.get({ path: '/channels/news', params: { info: 'subscription_count' } })).json();
    assert.deepEqual(info, { occupied: true, subscription_count: 2 });
    const list = await (await rest.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })).json();
    assert.deepEqual(list, { channels: { 'presence-room': { user_count: 2 } } });
  }

  // Ben leaves on B: Ann (on A) sees member_removed; one webhook each for the cluster.
  const annSawBenGo = once(roomA, 'pusher:member_removed');
  ben.unsubscribe('presence-room');
  assert.equal((await annSawBenGo).id, 'ben');
  await waitFor(() => names(hook.events, 'member_removed').includes('ben'), 'member_removed webhook');
  await sleep(400);
  assert.deepEqual(names(hook.events, 'member_added').sort(), ['ann', 'ben']);
  assert.deepEqual(names(hook.events, 'member_removed'), ['ben']);
  assert.deepEqual(names(hook.events, 'channel_occupied').sort(), ['news', 'presence-room']);
});

test('a node killed with SIGKILL is cleaned up by the survivors, with events and webhooks', async () => {
  const hook = await receiver();
  const { nodes: [a, b] } = await cluster(2, hook.url);
  const stays = client(a.port, { userId: 'stays' });
  const room = await subscribed(stays, 'presence-ops');
  const doomed = client(b.port, { userId: 'doomed' });
  const joined = once(room, 'pusher:member_added');
  await subscribed(doomed, 'presence-ops');
  await subscribed(doomed, 'only-on-b');
  await joined;
  const rest = restClient(a.port);
  const occupied = async () => (await (await rest.get({ path: '/channels/only-on-b' })).json()).occupied;
  assert.equal(await occupied(), true);

  const removed = once(room, 'pusher:member_removed', 10000);
  b.child.kill('SIGKILL');
  assert.equal((await removed).id, 'doomed');
  await waitFor(async () => !(await occupied()), 'only-on-b vacated');
  await waitFor(() => names(hook.events, 'channel_vacated').includes('only-on-b'), 'channel_vacated webhook');
  await waitFor(() => names(hook.events, 'member_removed').includes('doomed'), 'member_removed webhook');
  assert.equal(room.members.count, 1);
});

test('nodes keep serving through a Redis restart and share events again afterwards', async () => {
  const { redis, nodes: [a, b] } = await cluster(2);
  const onA = client(a.port);
  const onB = client(b.port, { userId: 'bea' });
  const chA = await subscribed(onA, 'room');
  const chB = await subscribed(onB, 'room');
  await subscribed(onB, 'presence-lobby');
  const seenByB = collect(chB, 'ev');

  await redis.kill();
  await sleep(300);
  const local = once(chA, 'ev');
  assert.equal((await restClient(a.port).trigger('room', 'ev', 'during')).status, 200);
  assert.equal(await local, 'during', 'A still serves its own sockets');

  await redis.start();
  await waitFor(() => seenByB.some((e) => e.data === 'during'), 'the held event reaches B');
  const rest = restClient(a.port);
  // Asked again until the node has restated its members into the new Redis.
  await waitFor(async () => {
    const r = await rest.get({ path: '/channels/presence-lobby/users' }).catch(() => null);
    return r?.status === 200 && (await r.json()).users.some((u) => u.id === 'bea');
  }, 'presence restated into the new Redis');
  const after = once(chB, 'ev2');
  await rest.trigger('room', 'ev2', 'after');
  assert.equal(await after, 'after');
  assert.equal(onA.connection.state, 'connected');
  assert.equal(onB.connection.state, 'connected');
});
