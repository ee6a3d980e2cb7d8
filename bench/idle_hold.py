#!/usr/bin/env python3
"""Opens N idle Pusher WebSocket connections to 127.0.0.1:PORT (the default app), prints
'ready N' once all are established, and holds them, answering the server's pusher:ping,
until killed. Used by bench/idle_cpu.sh. Sources are spread over 127.x.y.1 addresses so
that one address's ephemeral ports do not cap the count."""
import asyncio
import sys

N, PORT = int(sys.argv[1]), int(sys.argv[2])
REQUEST = (b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")
PONG = b'{"event":"pusher:pong","data":{}}'
# A masked text frame (mask key 0), as a client must send.
PONG_FRAME = bytes([0x81, 0x80 | len(PONG), 0, 0, 0, 0]) + PONG
held = []


async def connect(i):
    source = f"127.{1 + i % 200}.{i // 200 % 250 + 1}.1"
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT, local_addr=(source, 0))
    writer.write(REQUEST)
    seen = b""
    while b"connection_established" not in seen:
        data = await reader.read(1024)
        if not data:
            raise EOFError("closed before connection_established")
        seen += data
    held.append((reader, writer))


async def answer(reader, writer):
    while True:
        data = await reader.read(4096)
        if not data:
            return
        if b"pusher:ping" in data:
            writer.write(PONG_FRAME)


async def main():
    in_flight = asyncio.Semaphore(200)

    async def guarded(i):
        async with in_flight:
            await connect(i)

    await asyncio.gather(*(guarded(i) for i in range(N)))
    print("ready", len(held), flush=True)
    await asyncio.gather(*(answer(r, w) for r, w in held))


asyncio.run(main())
