// Starts a real `herald serve` (the binary named by HERALD_BIN) and builds official clients
// pointed at it. Nothing here imitates the server: tests talk to the real process.
//
// HERALD_CLUSTER=N: each server is N nodes sharing a fresh redis-server (or the Redis
// HERALD_TEST_REDIS_URL names, under a prefix of their own).
// HERALD_APPS_DB=postgres|mysql: each server's apps live in a fresh database on the local
// PostgreSQL (127.0.0.1:5432, user postgres) or MariaDB (127.0.0.1:3306, root), created with
// psql or mariadb, filled by the real `herald apps migrate` and `herald apps import`, and
// dropped when the server stops.
import { execFile, spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { after } from 'node:test';
import assert from 'node:assert/strict';

const require = createRequire(import.meta.url);
export const PusherJs = require('pusher-js');
export const PusherServer = require('pusher');

export const KEY = 'app-key';
export const SECRET = 'app-secret';
export const MASTER_KEY = Buffer.alloc(32, 7).toString('base64');

/**
 * Starts a server with the given TOML config; resolves once it prints its address. With
 * HERALD_CLUSTER=N (N > 1) the "server" is N nodes sharing a fresh redis-server behind a
 * round-robin TCP load balancer, so the same tests run against a cluster. With
 * HERALD_APPS_DB=postgres|mysql the config's apps live in a fresh database instead (see
 * startNodes).
 */
export async function startServer(configToml = '') {
  const nodes = Number(process.env.HERALD_CLUSTER ?? 1);
  return nodes > 1 ? startCluster(configToml, nodes) : startNode(configToml);
}

/**
 * Starts one node (exported for tests that address nodes one by one). `port` 0 takes a
 * free one; a node started on the port of one that has exited stands in for a restart.
 */
export async function startNode(configToml = '', { port = 0 } = {}) {
  return (await startNodes(configToml, 1, { port }))[0];
}

/**
 * Starts `n` nodes with one config, one after the other. With HERALD_APPS_DB set they share
 * one fresh database holding the config's apps (or the default app), and the file they
 * serve keeps everything but the apps; the database is dropped once every node has exited
 * (in the background: stop() does not wait for it). `port` (0: a free one each) is for
 * one node.
 */
export async function startNodes(configToml, n, { port = 0 } = {}) {
  const db = APPS_DB ? await appsDatabase(configToml) : null;
  const config = db ? db.serveToml : configToml;
  const nodes = [];
  try {
    for (let i = 0; i < n; i++) nodes.push(await launch(config, port));
  } catch (e) {
    for (const node of nodes) node.child.kill('SIGKILL');
    await Promise.all(nodes.map((node) => node.exited));
    await db?.drop();
    throw e;
  }
  if (!db) return nodes;
  Promise.all(nodes.map((node) => node.exited)).then(() => db.drop()).catch(() => {});
  return nodes.map((node) => ({
    ...node,
    // The drop goes on behind the next test: PostgreSQL's DROP DATABASE takes 0.5-5 s
    // (a checkpoint), which a file starting servers one after the other paid each time.
    // The exit hook drops whatever is still named when the file ends.
    stop() {
      return node.stop();
    },
  }));
}

async function launch(configToml, listenPort = 0) {
  const bin = process.env.HERALD_BIN;
  if (!bin) throw new Error('HERALD_BIN must name the herald binary');
  const scratch = scratchDir();
  const configPath = join(scratch, 'herald.toml');
  writeFileSync(configPath, configToml);
  // Each node its own webhook queue (the data directory is locked by one process).
  const child = spawn(bin, ['serve', '--port', String(listenPort), '--config', configPath], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HERALD_DATA_DIR: join(scratch, 'data') },
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  // The banner's first line names the public address and its last the admin listener's
  // (`admin listening on ADDR`, where the console is); both come once the node is ready.
  const { port, admin } = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr}`)), 10000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on \S+:(\d+)/);
      const a = out.match(/admin listening on (\S+)/);
      if (m && a) { clearTimeout(timer); resolve({ port: Number(m[1]), admin: a[1] }); }
    });
    child.on('exit', (code) => reject(new Error(`server exited with ${code}: ${stderr}`)));
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    port,
    admin,
    child,
    exited,
    stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

const scratchDir = () => mkdtempSync(join(tmpdir(), 'herald-js-'));

// ---- Apps in a database (HERALD_APPS_DB) ----

const APPS_DB = process.env.HERALD_APPS_DB || '';
if (APPS_DB && APPS_DB !== 'postgres' && APPS_DB !== 'mysql') {
  throw new Error(`HERALD_APPS_DB must be "postgres" or "mysql", not '${APPS_DB}'`);
}

/** The app the tests expect when their config names none: the server's embedded default. */
const DEFAULT_APP = '[[apps]]\nid = "1"\nkey = "app-key"\nsecret = "app-secret"\n';

/**
 * Splits a TOML config at its table headers: `apps` holds the `[[apps]]` and
 * `[[apps.webhooks]]` tables (what `herald apps import` copies into the database), `rest`
 * everything else (top-level keys and tables such as `[plans.*]`), in their order. Line
 * based, which is enough for the configs in these tests: a header is a line that is only
 * `[name]` or `[[name]]` (and perhaps a comment).
 */
export function splitApps(toml) {
  const rest = [];
  const apps = [];
  let into = rest;
  for (const line of toml.split('\n')) {
    const header = line.match(/^\s*\[\[?\s*([A-Za-z_"'][^\]]*?)\s*\]\]?\s*(#.*)?$/);
    if (header) {
      const name = header[1].replace(/\s*\.\s*/g, '.');
      into = name === 'apps' || name.startsWith('apps.') ? apps : rest;
    }
    into.push(line);
  }
  return { apps: apps.join('\n'), rest: rest.join('\n') };
}

const dbNames = new Set();
let dbCounter = 0;

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, (error, stdout, stderr) => {
      if (error) reject(new Error(`${cmd} ${args.join(' ')} failed (${error.code}): ${stderr}${stdout}`));
      else resolve(stdout);
    });
  });
}

/** The client command line that runs `sql` as the database's superuser. */
function adminSql(sql) {
  return APPS_DB === 'postgres'
    ? ['psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', 'postgres', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', sql]]
    : ['mariadb', ['-h', '127.0.0.1', '-uroot', '-e', sql]];
}

const dropSql = (name) => (APPS_DB === 'postgres'
  ? `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`
  : `DROP DATABASE IF EXISTS ${name}`);

// A file that ends without stopping its servers (a failed before(), --test-force-exit)
// still drops its databases.
process.on('exit', () => {
  for (const name of dbNames) {
    const [cmd, args] = adminSql(dropSql(name));
    spawnSync(cmd, args, { stdio: 'ignore' });
  }
});

/**
 * A fresh database with `configToml`'s apps (or the default app) in it, put there by the
 * real CLI: `herald apps migrate`, then `herald apps import FILE`, both given the config
 * the nodes serve (`serveToml`): `apps_url` first, then `configToml` without its apps.
 */
async function appsDatabase(configToml) {
  const bin = process.env.HERALD_BIN;
  if (!bin) throw new Error('HERALD_BIN must name the herald binary');
  const name = `herald_js_${process.pid}_${++dbCounter}_${Math.random().toString(36).slice(2, 8)}`;
  const url = APPS_DB === 'postgres'
    ? `postgres://postgres@127.0.0.1:5432/${name}`
    : `mysql://root@127.0.0.1:3306/${name}`;
  // Named before it exists, so that the exit hook drops it however far this got.
  dbNames.add(name);
  const [cmd, args] = adminSql(`CREATE DATABASE ${name}`);
  await run(cmd, args);
  let dropping;
  const drop = () => {
    dropping ??= (async () => {
      const [c, a] = adminSql(dropSql(name));
      await run(c, a);
      dbNames.delete(name);
    })();
    return dropping;
  };
  try {
    const { apps, rest } = splitApps(configToml);
    const serveToml = `apps_url = "${url}"\n${rest}\n`;
    const dir = scratchDir();
    const servePath = join(dir, 'herald.toml');
    const importPath = join(dir, 'apps.toml');
    writeFileSync(servePath, serveToml);
    writeFileSync(importPath, apps ? configToml : DEFAULT_APP);
    // With the served config: import checks plan names against its [plans.*].
    await run(bin, ['apps', '--config', servePath, 'migrate']);
    await run(bin, ['apps', '--config', servePath, 'import', importPath]);
    return { serveToml, drop };
  } catch (e) {
    await drop();
    throw e;
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** A fresh redis-server on a free port, keeping nothing on disk. */
export async function startRedis() {
  const port = await freePort();
  const redis = {
    port,
    child: null,
    async start() {
      redis.child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
        stdio: 'ignore',
      });
      for (let i = 0; i < 200; i++) {
        const up = await new Promise((resolve) => {
          const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
          s.on('error', () => resolve(false));
        });
        if (up) return;
        await new Promise((r) => setTimeout(r, 20));
      }
      redis.kill();
      throw new Error('redis-server did not start');
    },
    kill() {
      const { child } = redis;
      if (!child || child.exitCode !== null) return Promise.resolve();
      const gone = new Promise((r) => child.on('exit', r));
      child.kill('SIGKILL');
      return gone;
    },
    /** Kills the server and starts an empty one on the same port. */
    async restart() {
      await redis.kill();
      await redis.start();
    },
  };
  await redis.start();
  return redis;
}

/** A TCP load balancer: each new connection goes to the next node. */
function balancer(ports) {
  let next = 0;
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(ports[next++ % ports.length], '127.0.0.1');
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      sockets.add(a);
      a.on('error', () => b.destroy());
      a.on('close', () => { sockets.delete(a); b.destroy(); });
      a.pipe(b);
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({
      port: server.address().port,
      close() {
        for (const s of sockets) s.destroy();
        return new Promise((r) => server.close(() => r()));
      },
    }));
  });
}

/** The configuration of a cluster node: the test's own, joined to `redis`. */
export function clusterConfig(redis, configToml = '', extra = '') {
  // Top-level keys go before any table of the test's own config.
  return `adapter = "redis"\nredis_url = "redis://127.0.0.1:${redis.port}/0"\n${extra}\n${configToml}`;
}

/**
 * HERALD_TEST_REDIS_URL: the Redis a cluster's nodes share instead of a fresh redis-server (one
 * server, a Redis Cluster or sentinels, in the syntax of `redis_url`). Each cluster started
 * on it gets a prefix of its own, so the tests see none of each other's state.
 */
const SHARED_REDIS = process.env.HERALD_TEST_REDIS_URL;
/** HERALD_TEST_REDIS_CONFIG: more top-level keys for a shared Redis (its TLS files). */
const SHARED_REDIS_CONFIG = process.env.HERALD_TEST_REDIS_CONFIG ?? '';
let sharedStarts = 0;

function sharedRedis() {
  const prefix = `t${process.pid}x${sharedStarts++}`;
  return {
    toml: (configToml) =>
      `adapter = "redis"\nredis_url = "${SHARED_REDIS}"\nredis_prefix = "${prefix}"\n${SHARED_REDIS_CONFIG}\n${configToml}`,
    kill: () => Promise.resolve(),
  };
}

async function startCluster(configToml, n) {
  const redis = SHARED_REDIS
    ? sharedRedis()
    : Object.assign(await startRedis(), { toml(c) { return clusterConfig(this, c); } });
  let nodes;
  try {
    nodes = await startNodes(redis.toml(configToml), n);
  } catch (e) {
    await redis.kill();
    throw e;
  }
  const lb = await balancer(nodes.map((node) => node.port));
  let stopped;
  return {
    port: lb.port,
    nodes,
    stop() {
      stopped ??= (async () => {
        const exits = await Promise.all(nodes.map((node) => node.stop()));
        await lb.close();
        await redis.kill();
        return exits.find((e) => e.code !== 0) ?? exits[0];
      })();
      return stopped;
    },
  };
}

/** The official Node server library, pointed at `port`. */
export function restClient(port, opts = {}) {
  return new PusherServer({
    appId: '1', key: KEY, secret: SECRET, host: '127.0.0.1', port: String(port), useTLS: false,
    encryptionMasterKeyBase64: MASTER_KEY, ...opts,
  });
}

/**
 * pusher-js pointed at `port`. Channel auth is signed by the official server library
 * in-process (a customHandler), the same signature an app's auth endpoint would return.
 */
export function wsClient(port, { key = KEY, userId, userInfo, user, signer, ...opts } = {}) {
  const rest = signer ?? restClient(port);
  return new PusherJs(key, {
    cluster: 'mt1', wsHost: '127.0.0.1', wsPort: port, forceTLS: false,
    enabledTransports: ['ws'], disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        try {
          const data = channelName.startsWith('presence-') && userId !== undefined
            ? { user_id: userId, user_info: userInfo }
            : undefined;
          cb(null, rest.authorizeChannel(socketId, channelName, data));
        } catch (e) { cb(e, null); }
      },
    },
    // `user` is the user object a sign-in sends (pusher.signin()); signed like an app's
    // user-authentication endpoint would.
    userAuthentication: {
      customHandler: ({ socketId }, cb) => {
        try { cb(null, rest.authenticateUser(socketId, user)); } catch (e) { cb(e, null); }
      },
    },
    ...opts,
  });
}

/** Resolves with the first `event` emitted on `emitter` (a channel or connection). */
export function once(emitter, event, ms = 4000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), ms);
    const handler = (data) => {
      clearTimeout(timer);
      emitter.unbind(event, handler);
      resolve(data);
    };
    emitter.bind(event, handler);
  });
}

/** Resolves once `client` is connected. */
export function connected(client) {
  if (client.connection.state === 'connected') return Promise.resolve();
  return once(client.connection, 'connected');
}

/** Subscribes and resolves with the channel once the server confirmed it. */
export function subscribed(client, name, ms = 4000) {
  const channel = client.subscribe(name);
  return new Promise((resolve, reject) => {
    const finish = (fn, value) => {
      clearTimeout(timer);
      channel.unbind('pusher:subscription_succeeded', ok);
      channel.unbind('pusher:subscription_error', failed);
      fn(value);
    };
    const ok = () => finish(resolve, channel);
    const failed = (e) => finish(reject, new Error(`subscription to ${name} failed: ${JSON.stringify(e)}`));
    const timer = setTimeout(() => finish(reject, new Error(`timed out subscribing to ${name}`)), ms);
    channel.bind('pusher:subscription_succeeded', ok);
    channel.bind('pusher:subscription_error', failed);
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Collects everything bound to `event` on `emitter`. */
export function collect(emitter, event) {
  const got = [];
  emitter.bind(event, (data, meta) => got.push({ data, meta }));
  return got;
}

/**
 * Servers and clients started by one test file, all torn down after its tests; every
 * server must exit 0 on SIGTERM.
 */
export function fixture() {
  const servers = [];
  const clients = [];
  after(async () => {
    for (const c of clients) c.disconnect();
    for (const s of servers) assert.equal((await s.stop()).code, 0, 'server exits 0 on SIGTERM');
  });
  return {
    async server(config) {
      const s = await startServer(config);
      servers.push(s);
      return s;
    },
    client(port, opts) {
      const c = wsClient(port, opts);
      clients.push(c);
      return c;
    },
  };
}
