// The fault suite's workload (crates/herald-cli/tests/faults): official clients doing what an
// app does while the suite breaks processes and networks under them, and recording what they
// see for the suite to check. Nothing here judges: it numbers, sends and records.
//
// - publishers: one per node, the official `pusher` library triggering numbered events
//   ({p, s}) through that node only, in turn over the public channels, each awaited before
//   the next; what was answered 200 is recorded;
// - subscribers: pusher-js clients on every node, subscribed to every public channel,
//   recording each event in arrival order and every time their connection left `connected`;
// - presence: observers (members that never leave) and members that leave and join again,
//   on every node; observers record their member list and every member_added/removed;
// - client events: a pair per node on a private channel, the sender on that node and the
//   receiver on the next, numbered client events from one to the other;
// - a webhook sink: an HTTP server on the lab's gateway that checks each request's
//   signature with the official library and records its events; it can be told to hang or
//   to fail, as a broken receiver does.
//
// Commands come as JSON lines on stdin; answers go as JSON lines on stdout, each with the
// command's `id`. The process's config is the JSON in FAULTS_WORKLOAD.
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const PusherJs = require('pusher-js');
const PusherServer = require('pusher');

const cfg = JSON.parse(process.env.FAULTS_WORKLOAD);
const started = Date.now();
const now = () => Date.now() - started;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function say(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

// ---- The webhook sink ----

const hooks = [];
let sinkMode = 'ok';
const signer = new PusherServer({ appId: cfg.appId, key: cfg.key, secret: cfg.secret });
const stalled = [];
const sink = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (sinkMode === 'hang') { stalled.push(res); return; }
    if (sinkMode === 'fail') { res.writeHead(500); res.end(); return; }
    const rawBody = Buffer.concat(chunks).toString('utf8');
    const hook = signer.webhook({ headers: req.headers, rawBody });
    if (!hook.isValid()) { res.writeHead(401); res.end(); return; }
    const at = now();
    for (const e of hook.getEvents()) {
      hooks.push({ t: at, name: e.name, channel: e.channel, user_id: e.user_id ?? null });
    }
    res.writeHead(200);
    res.end();
  });
});

// ---- Clients ----

const nodes = [];
const subscribers = [];
const observers = [];
const members = [];
const pairs = [];
const publishers = [];
let running = false;

function client(node, user) {
  const pusher = new PusherJs(cfg.key, {
    cluster: 'mt1', wsHost: node.host, wsPort: node.port, forceTLS: false,
    enabledTransports: ['ws'], disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        try {
          const data = channelName.startsWith('presence-')
            ? { user_id: user, user_info: { node: node.name } } : undefined;
          cb(null, signer.authorizeChannel(socketId, channelName, data));
        } catch (e) { cb(e, null); }
      },
    },
  });
  // Each time the connection left `connected` after the first: when, and when it was back.
  const record = { node: node.name, drops: [] };
  let wasConnected = false;
  pusher.connection.bind('state_change', ({ current }) => {
    const open = record.drops.at(-1)?.back === null;
    if (current === 'connected') {
      wasConnected = true;
      if (open) record.drops.at(-1).back = now();
    } else if (wasConnected && !open) {
      record.drops.push({ at: now(), back: null });
    }
  });
  return { pusher, record };
}

function subscribed(channel, ms = 15000) {
  if (channel.subscribed) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out subscribing to ${channel.name}`)), ms);
    const ok = () => { clearTimeout(timer); channel.unbind('pusher:subscription_succeeded', ok); resolve(); };
    channel.bind('pusher:subscription_succeeded', ok);
  });
}

const publicChannels = () => Array.from({ length: cfg.channels }, (_, i) => `faults-${i}`);

async function start(nodeList) {
  nodes.push(...nodeList);
  const waits = [];
  for (const node of nodes) {
    for (let k = 0; k < cfg.subscribersPerNode; k++) {
      const { pusher, record } = client(node, `sub-${node.name}-${k}`);
      const sub = { id: `sub-${node.name}-${k}`, pusher, ...record, got: {} };
      for (const name of publicChannels()) {
        sub.got[name] = [];
        const channel = pusher.subscribe(name);
        channel.bind('ev', (data) => sub.got[name].push([data.p, data.s]));
        waits.push(subscribed(channel));
      }
      subscribers.push(sub);
    }
    const observer = client(node, `obs-${node.name}`);
    const obs = { id: `obs-${node.name}`, pusher: observer.pusher, ...observer.record, log: [] };
    // The frames as the server sent them (pusher-js hides a member_removed for a member
    // it does not know, and re-adds one it knows).
    observer.pusher.connection.bind('message', ({ event, channel, data }) => {
      if (channel !== 'presence-faults') return;
      const body = typeof data === 'string' ? JSON.parse(data) : data;
      if (event === 'pusher_internal:subscription_succeeded') {
        obs.log.push({ t: now(), kind: 'init', ids: [...body.presence.ids].sort() });
      } else if (event === 'pusher_internal:member_added') {
        obs.log.push({ t: now(), kind: 'add', id: body.user_id });
      } else if (event === 'pusher_internal:member_removed') {
        obs.log.push({ t: now(), kind: 'remove', id: body.user_id });
      }
    });
    const presence = observer.pusher.subscribe('presence-faults');
    obs.channel = presence;
    waits.push(subscribed(presence));
    observers.push(obs);
    for (let k = 0; k < cfg.membersPerNode; k++) {
      const id = `mem-${node.name}-${k}`;
      const { pusher, record } = client(node, id);
      const member = { id, pusher, ...record, joins: 0, leaves: 0 };
      member.channel = pusher.subscribe('presence-faults');
      waits.push(subscribed(member.channel));
      members.push(member);
    }
  }
  nodes.forEach((node, i) => {
    const to = nodes[(i + 1) % nodes.length];
    const name = `private-pair-${node.name}`;
    const sender = client(node, `send-${node.name}`);
    const receiver = client(to, `recv-${to.name}`);
    const pair = {
      channel: name, from: node.name, to: to.name, sent: [], got: [],
      sender: sender.pusher, receiver: receiver.pusher,
      senderDrops: sender.record.drops, receiverDrops: receiver.record.drops,
    };
    pair.out = sender.pusher.subscribe(name);
    const inbound = receiver.pusher.subscribe(name);
    inbound.bind('client-tick', (data) => pair.got.push(data.s));
    waits.push(subscribed(pair.out), subscribed(inbound));
    pairs.push(pair);
  });
  await Promise.all(waits);
  running = true;
  nodes.forEach((node, p) => publishers.push(publish(node, p)));
  for (const member of members) churn(member);
  for (const pair of pairs) tick(pair);
}

// One publisher: a trigger at a time through its node, every `publishEveryMs`.
function publish(node, p) {
  const api = new PusherServer({
    appId: cfg.appId, key: cfg.key, secret: cfg.secret, host: node.host, port: String(node.port),
    useTLS: false, timeout: 5000,
  });
  const record = { node: node.name, p, ok: {}, failed: 0, last: 0 };
  for (const name of publicChannels()) record.ok[name] = [];
  record.done = (async () => {
    let s = 0;
    while (running) {
      s += 1;
      const name = `faults-${s % cfg.channels}`;
      const begun = Date.now();
      try {
        const res = await api.trigger(name, 'ev', { p, s });
        if (res.status === 200) record.ok[name].push(s); else record.failed += 1;
      } catch {
        record.failed += 1;
      }
      record.last = s;
      await sleep(Math.max(0, cfg.publishEveryMs - (Date.now() - begun)));
    }
  })();
  return record;
}

// A member leaves and joins again, over and over, until the workload quiets down.
function churn(member) {
  member.done = (async () => {
    await sleep(Math.random() * cfg.churnEveryMs);
    while (running) {
      member.pusher.unsubscribe('presence-faults');
      member.leaves += 1;
      await sleep(cfg.churnEveryMs / 4);
      member.channel = member.pusher.subscribe('presence-faults');
      member.joins += 1;
      await sleep(cfg.churnEveryMs * (0.75 + Math.random() / 2));
    }
  })();
}

function tick(pair) {
  pair.done = (async () => {
    let s = 0;
    while (running) {
      s += 1;
      if (pair.out.subscribed && pair.sender.connection.state === 'connected'
        && pair.out.trigger('client-tick', { s })) {
        pair.sent.push(s);
      }
      await sleep(cfg.clientEventEveryMs);
    }
  })();
}

// Stops publishing, churning and sending; every member ends subscribed.
async function quiesce() {
  running = false;
  await Promise.all([...publishers.map((p) => p.done), ...members.map((m) => m.done),
    ...pairs.map((p) => p.done)]);
  const waits = [];
  for (const member of members) {
    if (!member.pusher.channel('presence-faults')) {
      member.channel = member.pusher.subscribe('presence-faults');
    }
    waits.push(subscribed(member.pusher.channel('presence-faults'), 30000));
  }
  await Promise.all(waits);
}

function connectedMembers() {
  return [...observers, ...members]
    .filter((m) => m.pusher.connection.state === 'connected')
    .map((m) => ({ id: m.id, node: m.node }));
}

function report() {
  return {
    publishers: publishers.map(({ node, p, ok, failed, last }) => ({ node, p, ok, failed, last })),
    subscribers: subscribers.map(({ id, node, drops, got }) => ({ id, node, drops, got })),
    observers: observers.map(({ id, node, drops, log, channel }) => {
      const view = [];
      channel.members.each((m) => view.push(m.id));
      return { id, node, drops, log, view: view.sort() };
    }),
    members: connectedMembers(),
    pairs: pairs.map(({ channel, from, to, sent, got, senderDrops, receiverDrops }) => (
      { channel, from, to, sent, got, senderDrops, receiverDrops })),
    hooks,
  };
}

function closeAll() {
  for (const c of [...subscribers, ...observers, ...members]) c.pusher.disconnect();
  for (const pair of pairs) { pair.sender.disconnect(); pair.receiver.disconnect(); }
}

// ---- Commands ----

const commands = {
  async start({ nodes: list }) { await start(list); return {}; },
  async quiesce() { await quiesce(); return {}; },
  async members() {
    // Each connected observer's member list as pusher-js holds it.
    const views = observers
      .filter((o) => o.pusher.connection.state === 'connected')
      .map((o) => {
        const view = [];
        o.channel.members.each((m) => view.push(m.id));
        return view.sort();
      });
    return { members: connectedMembers(), views };
  },
  async report() { return report(); },
  async sink({ mode }) {
    sinkMode = mode;
    if (mode !== 'hang') for (const res of stalled.splice(0)) res.destroy();
    return {};
  },
  async close() { closeAll(); return {}; },
};

sink.listen(0, cfg.sinkHost, () => {
  say({ sink: sink.address().port });
  const lines = createInterface({ input: process.stdin });
  lines.on('line', async (line) => {
    const command = JSON.parse(line);
    try {
      const answer = await commands[command.cmd](command);
      say({ id: command.id, ok: true, ...answer });
    } catch (e) {
      say({ id: command.id, ok: false, error: String(e?.stack ?? e) });
    }
  });
  lines.on('close', () => { closeAll(); process.exit(0); });
});
