// What the recovery tests share: a TCP relay that can cut a link without a FIN, and the
// checks of what a recovering client received.
import assert from 'node:assert/strict';
import net from 'node:net';
import Echo from 'laravel-echo';
import { sleep, connected, subscribed, PusherJs, KEY } from './harness.mjs';

/**
 * Laravel Echo on `port` for the default app, joining presence channels as `userId` (signed
 * by `signer`, a `pusher` REST client), with no sign-in: the identity is the member's
 * user_id. pusher-js's timers are shortened (1.5 s each) so it notices a dead link quickly.
 */
export function echoMember(port, signer, userId) {
  return new Echo({
    broadcaster: 'pusher', key: KEY, Pusher: PusherJs, cluster: 'mt1',
    wsHost: '127.0.0.1', wsPort: port, forceTLS: false, enabledTransports: ['ws'],
    disableStats: true, activityTimeout: 1500, pongTimeout: 1500,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        cb(null, signer.authorizeChannel(socketId, channelName, { user_id: userId, user_info: {} }));
      },
    },
  });
}

/**
 * A TCP relay to `port`: `cut()` stops forwarding on every open link (no FIN: the bytes are
 * dropped) and holds new ones until `mend()`; `mend(to)` lets new links through again (to
 * the port `to` if given: another node of a cluster); `retarget(to)` sends new links to `to`
 * without cutting anything.
 */
export async function relay(port) {
  let target = port;
  const links = new Set();
  let waiting = null;
  const forward = (client) => {
    const upstream = net.connect(target, '127.0.0.1');
    const link = { client, upstream, cut: false };
    links.add(link);
    client.on('data', (d) => { if (!link.cut) upstream.write(d); });
    upstream.on('data', (d) => { if (!link.cut) client.write(d); });
    const end = () => { if (!link.cut) { client.destroy(); upstream.destroy(); } };
    client.on('close', end);
    upstream.on('close', end);
    upstream.on('error', () => {});
    client.resume();
  };
  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    client.on('error', () => {});
    // A link opened during the outage waits, its bytes unread, as a SYN would be retried
    // until the network is back.
    if (waiting) waiting.push(client);
    else forward(client);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    cut() {
      waiting = [];
      for (const link of links) link.cut = true;
    },
    retarget(to) {
      target = to;
    },
    mend(to = target) {
      target = to;
      const held = waiting ?? [];
      waiting = null;
      for (const client of held) if (!client.destroyed) forward(client);
    },
    close() {
      for (const { client, upstream } of links) { client.destroy(); upstream.destroy(); }
      for (const client of waiting ?? []) client.destroy();
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


/** Resolves with the time pusher-js `c` is connected again after having lost its connection. */
export function reconnection(c) {
  return new Promise((resolve) => {
    let lost = false;
    c.connection.bind('state_change', ({ current }) => {
      if (current !== 'connected') lost = true;
      else if (lost) resolve(Date.now());
    });
  });
}

/**
 * The 10 s outage: pusher-js `c` (signed in, through `link`) subscribes to `feed` and gets 10
 * events published through `rest`; the link is cut while 50 more are published over about
 * 8 s, then mended (to the port `mendTo` if given). Every event must arrive, in order, with
 * no failure event, and only events the client had before the cut may come twice. Returns
 * when the client was back after the cut, the time from then to the last event, and the
 * unconfirmed tail's length.
 */
export async function outage10s(c, link, rest, mendTo) {
  await connected(c);
  const feed = await subscribed(c, 'feed');
  const got = [];
  feed.bind('n', (d) => got.push(d.n));
  const failed = [];
  feed.bind('herald:recovery_failed', (d) => failed.push(d));
  const publish = (n) => rest.trigger('feed', 'n', { n });
  for (let n = 0; n < 10; n++) await publish(n);
  await until(() => got.length === 10, 5000, 'the first 10 events');
  const reconnected = reconnection(c);
  link.cut();
  const cutAt = Date.now();
  for (let n = 10; n < 60; n++) {
    await publish(n);
    await sleep(160);
  }
  await sleep(Math.max(0, 10000 - (Date.now() - cutAt)));
  link.mend(mendTo);
  const back = await reconnected;
  await until(() => got.length >= 60 && got.includes(59), 8000, 'all 60 events');
  const tail = checkOrder(got, 60);
  assert.deepEqual(failed, []);
  assert.ok(tail <= 10, `the unconfirmed tail is short: ${tail}`);
  return { backAfter: back - cutAt, lastAfter: Date.now() - back, tail };
}
