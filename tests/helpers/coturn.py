"""A real coturn ``turnserver`` on loopback for a test, with the shared-secret (TURN REST
API) authentication that ``server.turn_secret`` derives credentials for."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aioice import stun

TURNSERVER = shutil.which("turnserver")
REALM = "visage.test"


@dataclass
class Coturn:
    """A running turnserver: where it listens, its secret, and its log."""

    port: int
    secret: str
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (turnserver listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


def _answers_stun(port: int) -> bool:
    """Whether something on 127.0.0.1:port answers a STUN binding request."""
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(bytes(request), ("127.0.0.1", port))
        try:
            data, _ = sock.recvfrom(2048)
        except OSError:  # a timeout, or refused: not listening yet
            return False
    return stun.parse_message(data).transaction_id == request.transaction_id


@contextlib.contextmanager
def running_coturn(workdir: Path, secret: str = "visage-test-secret") -> Iterator[Coturn]:
    """Run turnserver on a free loopback port until the block ends (then stop it).

    It relays only between loopback addresses (``--allow-loopback-peers``, off by default
    for safety), over UDP, with no TLS, no CLI, no config file and its state in
    ``workdir``.
    """
    if TURNSERVER is None:
        raise RuntimeError("turnserver (Debian's coturn) is not installed")
    port = _free_port()
    log = workdir / "turnserver.log"
    args = [
        TURNSERVER,
        "-n",  # no configuration file
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        f"--listening-port={port}",
        "--use-auth-secret",
        f"--static-auth-secret={secret}",
        f"--realm={REALM}",
        "--allow-loopback-peers",
        "--no-tls",
        "--no-dtls",
        "--no-tcp-relay",
        "--no-cli",
        "--no-rfc5780",
        f"--userdb={workdir / 'turndb'}",
        f"--pidfile={workdir / 'turnserver.pid'}",
        f"--log-file={log}",
        "--simple-log",
        "--no-stdout-log",
        "--verbose",
    ]
    stderr = workdir / "turnserver.stderr"
    with stderr.open("wb") as err:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 10
        while not _answers_stun(port):
            if process.poll() is not None:
                said = stderr.read_text(errors="replace").strip()
                raise RuntimeError(f"turnserver exited with {process.returncode}: {said}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"turnserver did not answer on port {port} within 10 s")
        yield Coturn(port, secret, log, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
