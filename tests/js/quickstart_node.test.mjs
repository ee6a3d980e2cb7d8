// The Node quickstart (docs/quickstart/node) run as written: a real `herald serve` with its
// embedded default app, then `node server.js` and `node client.js` unmodified, given only
// the environment variables the quickstart names (ports, since these are free ones), with
// the `pusher` and `pusher-js` packages of tests/js. Then the quickstart's own curl steps,
// done with fetch, must reach the client.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startServer } from './harness.mjs';

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const QUICKSTART = here('../../docs/quickstart/node/');
const children = [];
after(() => { for (const c of children) c.kill('SIGKILL'); });

/**
 * Runs `node FILE` in the quickstart's directory with `env` on top of this process's, the
 * quickstart's packages taken from tests/js. Its stdout lines are kept in `lines`;
 * `line(re)` waits for one matching `re`.
 */
function run(file, env) {
  const child = spawn(process.execPath, [file], {
    cwd: QUICKSTART,
    env: { ...process.env, NODE_PATH: here('./node_modules'), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const lines = [];
  let stderr = '';
  let partial = '';
  const waiters = [];
  child.stdout.setEncoding('utf8').on('data', (d) => {
    const parts = (partial + d).split('\n');
    partial = parts.pop();
    for (const l of parts) {
      lines.push(l);
      for (const w of [...waiters]) w(l);
    }
  });
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const line = (re, ms = 5000) => {
    const seen = lines.find((l) => re.test(l));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${file}: no line matching ${re} in ${ms} ms; stdout ${JSON.stringify(lines)}, stderr ${stderr}`)),
        ms,
      );
      const w = (l) => {
        if (!re.test(l)) return;
        clearTimeout(timer);
        waiters.splice(waiters.indexOf(w), 1);
        resolve(l);
      };
      waiters.push(w);
    });
  };
  return { child, lines, line, stderr: () => stderr };
}

async function post(url, form) {
  const res = await fetch(url, { method: 'POST', body: new URLSearchParams(form) });
  return { status: res.status, body: await res.json() };
}

test('the quickstart pins the client versions these tests run', () => {
  const mine = JSON.parse(readFileSync(here('./package.json'), 'utf8')).dependencies;
  const theirs = JSON.parse(readFileSync(`${QUICKSTART}package.json`, 'utf8')).dependencies;
  for (const [name, version] of Object.entries(theirs)) assert.equal(version, mine[name], name);
});

test('the quickstart\'s README names every variable this test sets', () => {
  const table = readFileSync(`${QUICKSTART}README.md`, 'utf8').split('\n').filter((l) => l.startsWith('| `'));
  for (const name of ['PUSHER_URL', 'PORT', 'PUSHER_HOST', 'PUSHER_PORT', 'APP_URL']) {
    assert.ok(table.some((row) => row.split('|')[1].includes(`\`${name}\``)), `${name} is in the settings table`);
  }
});

test('server.js authorizes and publishes; client.js signs in, subscribes and receives', async () => {
  const herald = await startServer();
  try {
    // PUSHER_URL as `herald serve` prints it, with the test's free port.
    const app = run('server.js', {
      PUSHER_URL: `http://app-key:app-secret@127.0.0.1:${herald.port}/apps/1`,
      PORT: '0',
    });
    const appUrl = (await app.line(/^app listening on /)).replace('app listening on ', '');
    const client = run('client.js', {
      PUSHER_HOST: '127.0.0.1',
      PUSHER_PORT: String(herald.port),
      APP_URL: appUrl,
    });
    await client.line(/^connected as \d+\.\d+$/);
    await client.line(/^subscribed to private-chat$/);

    // The quickstart's `curl -d text=... $APP_URL/messages`.
    assert.deepEqual(await post(`${appUrl}/messages`, { text: 'hello from the quickstart' }), { status: 200, body: { ok: true } });
    await client.line(/^message: hello from the quickstart$/);

    // sendToUser reaches the signed-in user; the client's sign-in may finish after its
    // subscription, so send until it arrives.
    for (let i = 0; ; i++) {
      assert.equal((await post(`${appUrl}/notices`, { text: 'just for you' })).status, 200);
      try {
        await client.line(/^notice: just for you$/, 500);
        break;
      } catch (e) {
        if (i === 8) throw e;
      }
    }

    // The endpoint refuses a channel the app does not allow, and Herald then refuses the
    // subscription without it.
    const form = { socket_id: '1.1', channel_name: 'private-admin' };
    assert.equal((await post(`${appUrl}/pusher/auth`, form)).status, 403);
    assert.equal(client.stderr(), '', 'client.js wrote no errors');
    assert.equal(app.stderr(), '', 'server.js wrote no errors');
  } finally {
    await herald.stop();
  }
});
