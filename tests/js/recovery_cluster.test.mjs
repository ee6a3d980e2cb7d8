// Issue 27 in a cluster: three `herald serve` nodes sharing a real redis-server, a signed-in
// pusher-js client behind a TCP relay in this file that can stop forwarding without closing
// anything (no FIN), and that sends the client's next connection to ANOTHER node. The
// recovery entry is in Redis, the missed events in the channel's Redis history, so the
// client gets every event wherever it comes back.
//
// pusher-js's timers are shortened as in recovery.test.mjs (1.5 s each) so that it notices
// the dead link within the outage.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startRedis, startNodes, clusterConfig, restClient, wsClient, connected, subscribed, sleep,
} from './harness.mjs';
import {
  relay, until, checkOrder, echoMember, outage10s, reconnection,
} from './relay.mjs';

const CONFIG = `
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
history_max_events = 500
`;

const redis = await startRedis();
const nodes = await startNodes(clusterConfig(redis, CONFIG), 3);
const clients = [];
const stopped = new Set();
after(async () => {
  for (const c of clients) c.disconnect();
  for (const node of nodes) {
    if (!stopped.has(node)) assert.equal((await node.stop()).code, 0, 'a node exits 0 on SIGTERM');
  }
  await redis.kill();
});

const client = (port, opts) => {
  const c = wsClient(port, { activityTimeout: 1500, pongTimeout: 1500, ...opts });
  clients.push(c);
  return c;
};


test('a client cut without a FIN on one node comes back on another and gets every event, in order', async () => {
  const [a, b, c3] = nodes;
  const link = await relay(a.port);
  const c = client(link.port, { user: { id: 'ana' } });
  c.signin();
  const { backAfter, lastAfter, tail } = await outage10s(c, link, restClient(c3.port), b.port);
  console.log(`cluster: back on another node ${backAfter} ms after the cut; every event ${lastAfter} ms after the reconnect at most; unconfirmed tail replayed: ${tail} event(s)`);
  link.close();
});

test('a Laravel Echo presence member (no sign-in: its identity is its user_id) comes back on another node and gets every event', async () => {
  const [a, b, c3] = nodes;
  const signer = restClient(c3.port);
  const link = await relay(a.port);
  const echo = echoMember(link.port, signer, 'eve');
  clients.push(echo.connector.pusher);
  const got = [];
  const room = echo.join('room').listen('.n', (d) => got.push(d.n));
  await new Promise((resolve) => room.here(resolve));
  const publish = (n) => signer.trigger('presence-room', 'n', { n });
  await publish(0);
  await until(() => got.length === 1, 5000, 'the first event');
  const back = reconnection(echo.connector.pusher);
  link.cut();
  for (let n = 1; n <= 10; n++) {
    await publish(n);
    await sleep(300);
  }
  await sleep(3000);
  link.mend(b.port);
  await back;
  await until(() => got.includes(10), 8000, 'all 11 events').catch((e) => { throw new Error(`${e.message}: ${got}`); });
  const tail = checkOrder(got, 11);
  console.log(`Echo presence: back on another node; unconfirmed tail replayed: ${tail} event(s)`);
  link.close();
});

test('a node drained with SIGTERM under a publishing loop: its client reconnects to another node and misses nothing', async () => {
  const [, b, c3] = nodes;
  // A node of its own to drain, so the other tests keep theirs.
  const [d] = await startNodes(clusterConfig(redis, CONFIG), 1);
  const rest = restClient(c3.port);
  const link = await relay(d.port);
  const c = client(link.port, { user: { id: 'bo' } });
  c.signin();
  await connected(c);
  const feed = await subscribed(c, 'loop');
  const got = [];
  feed.bind('n', (x) => got.push(x.n));
  const failed = [];
  feed.bind('herald:recovery_failed', (x) => failed.push(x));
  const closes = [];
  c.connection.bind('error', (e) => closes.push(e?.error?.data?.code));
  let n = 0;
  let publishing = true;
  // A trigger every 20 ms or so through another node, until a second after the reconnect.
  const loop = (async () => {
    while (publishing) {
      await rest.trigger('loop', 'n', { n: n++ });
      await sleep(20);
    }
  })();
  await until(() => got.length >= 20, 5000, 'the first events');
  const back = reconnection(c);
  // The client's next connection is held for a second (a reconnect at once would miss
  // little to recover), then goes to another node.
  let held = false;
  c.connection.bind('state_change', ({ current }) => {
    if (current === 'connected' || held) return;
    held = true;
    link.cut();
    setTimeout(() => link.mend(b.port), 1000);
  });
  const exit = await d.stop();
  stopped.add(d);
  assert.equal(exit.code, 0, 'the drained node exits 0');
  await back;
  await sleep(1000);
  publishing = false;
  await loop;
  await until(() => got.includes(n - 1), 8000, `all ${n} events`);
  const tail = checkOrder(got, n);
  assert.ok(closes.includes(4200), `the drained node closed with 4200: ${closes.join(',')}`);
  console.log(`drain: ${n} events, unconfirmed tail replayed: ${tail} event(s); close codes seen: ${closes.join(',')}`);
  assert.deepEqual(failed, []);
  link.close();
});
