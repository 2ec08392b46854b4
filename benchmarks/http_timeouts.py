"""Slow clients against a running `fraudseq serve`: how many connections does it still hold?

    .venv/bin/python benchmarks/http_timeouts.py [--url http://127.0.0.1:8000]
        [--partial-headers 50] [--stalled-uploads 300] [--idle 20] [--at 5,15,30]

Opens, all at once:
- partial-header connections: a request line and one header, never the blank line that
  ends the headers (slowloris);
- stalled uploads: complete headers of a POST /v1/score announcing a 1,000-byte body, then
  10 bytes of it and nothing more;
- idle connections: connected, nothing sent.

Then, at each time of --at (seconds after they were opened), counts per kind how many the
server still holds open, how many it closed, and how many got a reply first (its status
line is shown). A server without read timeouts holds every one of them forever.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from collections import Counter
from urllib.parse import urlsplit


def open_connections(host: str, port: int, kind: str, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        sock = socket.create_connection((host, port), timeout=5)
        if kind == "partial-headers":
            sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\n")
        elif kind == "stalled-uploads":
            sock.sendall(
                b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + b'{"tx_id": '
            )
        sock.setblocking(False)
        out.append(sock)
    return out


def state(sock: socket.socket, replies: dict[int, bytes]) -> str:
    """open, closed, or replied (then closed or open); reads what the server sent."""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return "replied, open" if sock.fileno() in replies else "open"
        except (ConnectionResetError, OSError):
            return "replied, closed" if sock.fileno() in replies else "closed"
        if not data:
            return "replied, closed" if sock.fileno() in replies else "closed"
        replies[sock.fileno()] = replies.get(sock.fileno(), b"") + data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--partial-headers", type=int, default=50)
    parser.add_argument("--stalled-uploads", type=int, default=300)
    parser.add_argument("--idle", type=int, default=20)
    parser.add_argument("--at", default="5,15,30", help="seconds, comma-separated")
    args = parser.parse_args()
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    kinds = {
        "partial-headers": args.partial_headers,
        "stalled-uploads": args.stalled_uploads,
        "idle": args.idle,
    }
    socks = {k: open_connections(host, port, k, n) for k, n in kinds.items()}
    opened = time.monotonic()
    replies: dict[int, bytes] = {}
    report = []
    for at in sorted(float(t) for t in args.at.split(",")):
        time.sleep(max(0.0, opened + at - time.monotonic()))
        row = {"seconds": at}
        for kind, group in socks.items():
            row[kind] = dict(Counter(state(s, replies) for s in group))
        report.append(row)
        print(json.dumps(row), flush=True)
    statuses = Counter(
        data.split(b"\r\n", 1)[0].decode("latin-1") for data in replies.values() if data
    )
    print(json.dumps({"replies": dict(statuses)}), flush=True)
    for group in socks.values():
        for sock in group:
            sock.close()


if __name__ == "__main__":
    main()
