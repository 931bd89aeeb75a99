"""A TCP forwarder run as its own process: `python tcp_forwarder.py HOST PORT` listens on a
free loopback port, prints it, and relays every connection to HOST:PORT.

Stopped with SIGSTOP it is a stalled network path: its kernel still accepts connections and
acknowledges data, but nothing flows either way until SIGCONT."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from sqlalchemy.engine import make_url


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _main(host: str, port: int) -> None:
    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


class Forwarder:
    """tests/storage/tcp_forwarder.py as a process of its own, relaying to TARGET_URL."""

    def __init__(self, target_url: str) -> None:
        target = make_url(target_url)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, target.host or "127.0.0.1", str(target.port or 5432)],
            stdout=subprocess.PIPE,
            text=True,
        )
        port = int(self.proc.stdout.readline())
        self.url = target.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)

    def stall(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        self.proc.kill()  # a stopped process is killed all the same
        self.proc.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2])))
