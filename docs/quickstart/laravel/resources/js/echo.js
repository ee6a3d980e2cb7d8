// resources/js/echo.js: Laravel Echo on pusher-js, pointed at Herald by the VITE_PUSHER_*
// lines of .env. Import it from resources/js/app.js (`import './echo';`).
import Echo from 'laravel-echo';
import Pusher from 'pusher-js';

window.Pusher = Pusher;

window.Echo = new Echo({
    broadcaster: 'pusher',
    key: import.meta.env.VITE_PUSHER_APP_KEY,
    cluster: import.meta.env.VITE_PUSHER_APP_CLUSTER,
    wsHost: import.meta.env.VITE_PUSHER_HOST,
    wsPort: import.meta.env.VITE_PUSHER_PORT ?? 80,
    wssPort: import.meta.env.VITE_PUSHER_PORT ?? 443,
    forceTLS: (import.meta.env.VITE_PUSHER_SCHEME ?? 'https') === 'https',
    enabledTransports: ['ws', 'wss'],
    // Private and presence channels are authorized by Laravel's own /broadcasting/auth
    // (routes/channels.php), on the page's origin: nothing to set here.
});
