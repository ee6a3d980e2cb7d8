// The official Node library triggers an event whose signed body is larger than the
// server's `max_request_body_bytes`, sending it the way it always does (node-fetch writes
// the whole body, then reads the answer). Prints one JSON line: the status the library
// reports (`status`), or the error it got instead of an answer (`error`, e.g. EPIPE when the
// server closed while the body was still being sent). Used by the Rust black-box tests
// (crates/herald-cli/tests/support: `oversized_body`).
//
//   node oversized_body.mjs HOST:PORT MEBIBYTES
//
// With PROBE_TLS=1 it uses https:// (`useTLS`); a private CA is trusted through
// NODE_EXTRA_CA_CERTS.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const Pusher = require('pusher');

const [addr, mebibytes = '20'] = process.argv.slice(2);
const port = Number(addr.split(':').pop());
const host = addr.slice(0, addr.lastIndexOf(':'));
const pusher = new Pusher({
  appId: '1', key: 'app-key', secret: 'app-secret', host, port, useTLS: process.env.PROBE_TLS === '1', timeout: 20000,
});
const data = 'x'.repeat(Number(mebibytes) * 1024 * 1024);

try {
  const response = await pusher.trigger('big', 'ev', data);
  console.log(JSON.stringify({ status: response.status }));
} catch (e) {
  const cause = e.error;
  console.log(JSON.stringify({
    status: e.status ?? null,
    body: e.body ?? null,
    error: cause ? `${cause.code ?? ''} ${cause.message ?? cause}`.trim() : null,
  }));
}
