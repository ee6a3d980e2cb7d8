<?php

// config/broadcasting.php: the `pusher` connection pointed at Herald. Laravel's own file
// has more connections (reverb, ably, log, null); only this one matters here.

return [

    'default' => env('BROADCAST_CONNECTION', 'null'),

    'connections' => [

        'pusher' => [
            'driver' => 'pusher',
            'key' => env('PUSHER_APP_KEY'),
            'secret' => env('PUSHER_APP_SECRET'),
            'app_id' => env('PUSHER_APP_ID'),
            'options' => [
                // Herald ignores the cluster, but pusher-php-server wants one.
                'cluster' => env('PUSHER_APP_CLUSTER', 'mt1'),
                // Herald's address: without a host the library calls Pusher's own servers.
                'host' => env('PUSHER_HOST', '127.0.0.1'),
                'port' => env('PUSHER_PORT', 6001),
                'scheme' => env('PUSHER_SCHEME', 'http'),
                // https only when Herald serves TLS (tls_cert and tls_key).
                'useTLS' => env('PUSHER_SCHEME', 'http') === 'https',
            ],
            'client_options' => [
                // Guzzle options, e.g. 'verify' => '/path/to/herald-ca.pem' for a private CA.
            ],
        ],

    ],

];
