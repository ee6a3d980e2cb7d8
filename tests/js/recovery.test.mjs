// Issue 27: event recovery for unmodified pusher-js and Laravel Echo, on one node. The link
// between the client and the server goes through a TCP relay in this file that can stop
// forwarding without closing anything (no FIN, no RST: what a tunnel or a sleeping laptop
// does), so the server keeps a silent connection while the client reconnects on a new one.
//
// pusher-js notices the dead link on its own timers: it pings after `activityTimeout` of
// silence and gives up `pongTimeout` later. Both are shortened here (1.5 s each, pusher-js
// options) so that the client reconnects within the outage instead of two minutes later;
// the server's settings are its defaults but for history, which recovery needs.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startNode, restClient, wsClient, connected, subscribed, sleep } from './harness.mjs';

const CONFIG = `
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
history_max_events = 500
`;

/** A TCP relay to `port`: `cut()` stops forwarding on every open link and refuses new ones (no FIN, the bytes are dropped), `mend()` lets new links through again. */
export async function relay(port) {
  const links = new Set();
  let down = false;
  const server = net.createServer((client) => {
    if (down) {
      // A new link during the outage goes nowhere: held open, never forwarded.
      client.on('error', () => {});
      client.pause();
      links.add({ client, upstream: null, cut: true });
      return;
    }
    const upstream = net.connect(port, '127.0.0.1');
    const link = { client, upstream, cut: false };
    links.add(link);
    client.on('data', (d) => { if (!link.cut) upstream.write(d); });
    upstream.on('data', (d) => { if (!link.cut) client.write(d); });
    const end = () => { if (!link.cut) { client.destroy(); upstream.destroy(); } };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', () => {});
    upstream.on('error', () => {});
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    cut() {
      down = true;
      for (const link of links) link.cut = true;
    },
    mend() { down = false; },
    close() {
      for (const { client, upstream } of links) { client.destroy(); upstream?.destroy(); }
      server.close();
    },
  };
}

/** Resolves once `check()` holds, polling; fails after `ms`. */
export async function until(check, ms, what) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/**
 * Checks that `got` (the numbers received, in order) holds 0..n-1 in order but for one
 * step back (the replayed unconfirmed tail) and returns that tail's length.
 */
export function checkOrder(got, n) {
  let tail = 0;
  let next = 0;
  for (const x of got) {
    if (x === next) { next++; continue; }
    assert.ok(x < next, `event ${x} came before ${next}: ${got.join(',')}`);
    // A step back: the events from x on came again (the tail the old link left unconfirmed).
    assert.equal(tail, 0, `a second step back at ${x}: ${got.join(',')}`);
    tail = next - x;
    next = x + 1;
  }
  assert.equal(next, n, `every event arrives: ${got.join(',')}`);
  return tail;
}

const server = await startNode(CONFIG);
const rest = restClient(server.port);
const clients = [];
after(async () => {
  for (const c of clients) c.disconnect();
  assert.equal((await server.stop()).code, 0);
});

const client = (port, opts) => {
  const c = wsClient(port, { activityTimeout: 1500, pongTimeout: 1500, ...opts });
  clients.push(c);
  return c;
};

test('a signed-in pusher-js client gets every event published during a 10 s outage, in order', async () => {
  const link = await relay(server.port);
  const c = client(link.port, { user: { id: 'ana' } });
  c.signin();
  await connected(c);
  const feed = await subscribed(c, 'feed');
  const got = [];
  feed.bind('n', (d) => got.push(d.n));
  const failed = [];
  feed.bind('herald:recovery_failed', (d) => failed.push(d));
  const publish = (n) => rest.trigger('feed', 'n', { n });
  for (let n = 0; n < 10; n++) await publish(n);
  await until(() => got.length === 10, 5000, 'the first 10 events');
  const reconnected = new Promise((resolve) => {
    let lost = false;
    c.connection.bind('state_change', ({ current }) => {
      if (current !== 'connected') lost = true;
      else if (lost) resolve(Date.now());
    });
  });
  link.cut();
  const cutAt = Date.now();
  // 50 events over about 8 s of the 10 s outage.
  for (let n = 10; n < 60; n++) {
    await publish(n);
    await sleep(160);
  }
  await sleep(Math.max(0, 10000 - (Date.now() - cutAt)));
  link.mend();
  const back = await reconnected;
  await until(() => got.length >= 60 && got.includes(59), 8000, 'all 60 events');
  const tail = checkOrder(got, 60);
  console.log(`node: reconnected ${back - cutAt} ms after the cut; last recovered event ${Date.now() - back} ms after the reconnect at most; unconfirmed tail replayed: ${tail} event(s)`);
  assert.deepEqual(failed, []);
  assert.ok(tail <= 2, `the unconfirmed tail is short: ${tail}`);
  link.close();
});
