"""A JSON-RPC 2.0 server over WebSocket, written with the third-party
`websockets` package: it answers {"jsonrpc":"2.0","id":N,"method":"ping"}
with {"jsonrpc":"2.0","id":N,"result":"pong"} and never echoes.

Options, so tests can face it as a real service would be set up:
  --cert FILE --key FILE   serve wss:// with this certificate chain and key
  --subprotocol NAME       require this subprotocol (a client that does not
                           offer it gets 400)
  --require-header N=V     answer 401 to an upgrade without header N = V

Listens on 127.0.0.1 on a free port, prints the port on its first line of
stdout, and exits when its stdin closes (so it dies with the test that
started it)."""

import argparse
import asyncio
import json
import ssl
import sys
from http import HTTPStatus

from websockets.asyncio.server import serve
from websockets.exceptions import NegotiationError


async def answer(ws):
    async for text in ws:
        request = json.loads(text)
        if request.get("method") == "ping":
            reply = {"jsonrpc": "2.0", "id": request["id"], "result": "pong"}
        else:
            reply = {"jsonrpc": "2.0", "id": request.get("id"), "error": {"code": -32601, "message": "Method not found"}}
        await ws.send(json.dumps(reply))


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--subprotocol")
    parser.add_argument("--require-header")
    args = parser.parse_args()

    options = {"ping_interval": None}
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        options["ssl"] = context
    if args.subprotocol:
        wanted = args.subprotocol

        def select(connection, offered):
            if wanted in offered:
                return wanted
            raise NegotiationError(f"subprotocol {wanted} required")

        options["subprotocols"] = [wanted]
        options["select_subprotocol"] = select
    if args.require_header:
        name, value = args.require_header.split("=", 1)

        def check(connection, request):
            if request.headers.get(name) != value:
                return connection.respond(HTTPStatus.UNAUTHORIZED, f"{name} required\n")
            return None

        options["process_request"] = check

    async with serve(answer, "127.0.0.1", 0, **options) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


asyncio.run(main())
