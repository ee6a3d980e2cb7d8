"""pysher on a server that pings after one second of silence and closes (4201) one second
after an unanswered ping (python.rs starts it with activity_timeout = 1, pong_timeout = 1).

pysher answers a server's `pusher:ping` with `{"event":"pusher:pong","data":""}`.
"""

import queue
import unittest

import harness
from harness import PysherClient, library, unique


class KeepAlive(unittest.TestCase):
    def test_pysher_answers_server_pings_and_stays_connected(self):
        client = PysherClient()
        pings = queue.Queue()
        client.client.connection.bind("pusher:ping", pings.put)
        client.connect()
        self.addCleanup(client.disconnect)
        socket_id = client.socket_id
        channel = unique("py-keepalive")
        client.subscribe(channel, "still-there")
        for _ in range(2):
            pings.get(timeout=harness.TIMEOUT)
        library().trigger(channel, "still-there", {})
        client.expect(channel, "still-there")
        # The same connection: a closed one would have come back with another socket id.
        self.assertEqual(client.socket_id, socket_id)
        self.assertEqual(client.client.connection.state, "connected")


if __name__ == "__main__":
    unittest.main()
