// A pusher-js client that signs in as a user and subscribes to a private channel, with
// its authorization signed by server.js. In a browser the options are the same (load
// pusher-js with a <script> tag or your bundler instead of require).
//
// PUSHER_HOST and PUSHER_PORT say where Herald listens; APP_URL where server.js does.
const Pusher = require('pusher-js');

const appUrl = process.env.APP_URL ?? 'http://127.0.0.1:3000';

const pusher = new Pusher(process.env.PUSHER_APP_KEY ?? 'app-key', {
  cluster: 'mt1', // pusher-js 8 requires one; Herald ignores it
  wsHost: process.env.PUSHER_HOST ?? '127.0.0.1',
  wsPort: Number(process.env.PUSHER_PORT ?? 6001),
  forceTLS: false, // true (with wssPort) when Herald serves TLS
  enabledTransports: ['ws', 'wss'],
  // private- and presence- channels: pusher-js POSTs socket_id and channel_name here.
  channelAuthorization: { endpoint: `${appUrl}/pusher/auth`, transport: 'ajax' },
  // pusher.signin(): pusher-js POSTs socket_id here.
  userAuthentication: { endpoint: `${appUrl}/pusher/user-auth`, transport: 'ajax' },
});

pusher.connection.bind('connected', () => console.log(`connected as ${pusher.connection.socket_id}`));
pusher.connection.bind('error', (e) => console.error('connection error', JSON.stringify(e)));

// Sign in, so the server can reach this user with sendToUser (POST /notices).
pusher.signin();
pusher.user.bind('notice', (data) => console.log(`notice: ${data.text}`));

const chat = pusher.subscribe('private-chat');
chat.bind('pusher:subscription_succeeded', () => console.log('subscribed to private-chat'));
chat.bind('pusher:subscription_error', (e) => console.error('cannot subscribe', JSON.stringify(e)));
chat.bind('message', (data) => console.log(`message: ${data.text}`));
