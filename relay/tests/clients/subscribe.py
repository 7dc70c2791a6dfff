"""A channel subscriber written with the third-party `websockets` package,
to check the relay's /pubsub against a client stampede did not write.

Usage: subscribe.py WS_URL CHANNEL COUNT

Connects to WS_URL (the relay's /pubsub), expects connection_established,
subscribes to CHANNEL, prints "ready <connection id>" once subscribed, then
receives COUNT messages of CHANNEL. Prints "received N in order" when their
sequence numbers were 1..N without gaps or repeats and their data were the
JSON objects {"n": seq}, otherwise "received N out of order: <seqs>".
Gives up after 20 s (printing "timed out") so a test never hangs on it."""

import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def run(url, channel, count):
    seqs = []
    async with connect(url) as ws:
        hello = json.loads(await ws.recv())
        assert hello["op"] == "connection_established", hello
        await ws.send(json.dumps({"op": "subscribe", "channel": channel}))
        reply = json.loads(await ws.recv())
        assert reply == {"op": "subscribed", "channel": channel, "seq": 0}, reply
        print(f"ready {hello['id']}", flush=True)
        in_order = True
        while len(seqs) < count:
            frame = json.loads(await ws.recv())
            assert frame["op"] == "message" and frame["channel"] == channel, frame
            seqs.append(frame["seq"])
            in_order = in_order and frame["data"] == {"n": frame["seq"]}
    if in_order and seqs == list(range(1, count + 1)):
        print(f"received {len(seqs)} in order", flush=True)
    else:
        print(f"received {len(seqs)} out of order: {seqs}", flush=True)


def main():
    url, channel, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    try:
        asyncio.run(asyncio.wait_for(run(url, channel, count), 20))
    except asyncio.TimeoutError:
        print("timed out", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
