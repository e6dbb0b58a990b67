"""A Visage server in a process of its own, for the benchmarks that load it.

Running ``visage serve`` as a child process keeps the server's CPU time, memory, threads
and open files apart from the benchmark's own (its callers): both are read from
``/proc``. The server's own child processes (each call's pocketsphinx worker) count as
the server's: their CPU time in its CPU time, their number and memory beside its own.
:class:`ServerProcess` starts it on a free loopback port, waits for ``/health``, reads
its figures, and stops it (SIGINT, then SIGKILL if it hangs).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agent.browser import free_port

#: Clock ticks per second of /proc/PID/stat's CPU times.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


def config_flags(config: Path | None, sets: Sequence[str]) -> list[str]:
    """The ``--config``/``--set`` flags that give a child ``visage`` these settings."""
    flags = ["--config", str(config)] if config else []
    for pair in sets:
        flags += ["--set", pair]
    return flags


@dataclass
class ProcessFigures:
    """One reading of a process from /proc: memory, threads, open files, CPU so far."""

    rss_mb: float
    threads: int
    fds: int
    cpu_s: float  # with its child processes'
    thread_names: dict[str, int]
    fd_kinds: dict[str, int]
    children: int = 0  # live descendant processes
    children_rss_mb: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "rss_mb": round(self.rss_mb, 1),
            "threads": self.threads,
            "fds": self.fds,
            "children": self.children,
            "children_rss_mb": round(self.children_rss_mb, 1),
            "cpu_s": round(self.cpu_s, 2),
            "thread_names": dict(sorted(self.thread_names.items())),
            "fd_kinds": dict(sorted(self.fd_kinds.items())),
        }


def descendants(pid: int) -> list[int]:
    """The live child processes of ``pid``, and theirs."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    found += [int(child), *descendants(int(child))]
    return found


def _stat(pid: int) -> list[str]:
    # The fields after the command name, which may hold spaces and parentheses.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) the process ``pid`` has used, all its threads, with
    its child processes: those that ended (reaped) and those still running."""
    fields = _stat(pid)
    total = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            total += sum(int(f) for f in _stat(child)[11:13])
    return total / CLOCK_TICKS


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _fd_kind(link: str) -> str:
    """``socket:[123]`` -> ``socket``; ``anon_inode:[eventfd]`` -> ``anon_inode:[eventfd]``;
    a path -> its folder's last part or the path (``/dev/null``)."""
    if link.startswith(("socket:", "pipe:")):
        return link.split(":", 1)[0]
    if link.startswith("anon_inode:"):
        return link
    if link.startswith("/dev/"):
        return link
    return "file"


def read_figures(pid: int) -> ProcessFigures:
    """Read ``pid``'s RSS, threads (by name), open fds (by kind) and CPU time."""
    threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
    children_rss = 0.0
    children = descendants(pid)
    for child in children:
        with contextlib.suppress(OSError):
            children_rss += _rss_mb(child)
    names: collections.Counter[str] = collections.Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            names[(task / "comm").read_text().strip()] += 1
    kinds: collections.Counter[str] = collections.Counter()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            kinds[_fd_kind(os.readlink(fd))] += 1
    return ProcessFigures(
        rss_mb=_rss_mb(pid),
        threads=threads,
        fds=sum(kinds.values()),
        cpu_s=cpu_seconds(pid),
        thread_names=dict(names),
        fd_kinds=dict(kinds),
        children=len(children),
        children_rss_mb=children_rss,
    )


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU seconds the whole machine has spent (all cores; ``/proc/stat``): busy running
    its processes, and stolen by the hypervisor (a virtual machine's CPU given to others)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    fields += [0] * (10 - len(fields))
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) / CLOCK_TICKS, steal / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """CPU seconds this process (the benchmark and its callers, all threads) has used."""
    times = os.times()
    return times.user + times.system


class ServerProcess:
    """``visage serve`` in a child process on 127.0.0.1 (see the module's docstring)."""

    def __init__(self, flags: Sequence[str], max_sessions: int, log_level: str = "WARNING"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._flags = [
            *flags,
            "--set",
            f"server.max_sessions={max_sessions}",
            "--set",
            f"server.log_level={log_level}",
        ]
        self._log = tempfile.NamedTemporaryFile(  # closed in stop()
            prefix="visage-served-", suffix=".log", delete=False
        )
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output (its log)."""
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def start(self) -> None:
        """Start the server and wait until ``/health`` answers."""
        command = [sys.executable, "-m", "agent.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), *self._flags]
        self.proc = await asyncio.create_subprocess_exec(
            *command, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(
                        f"visage serve exited with status {self.proc.returncode}:\n"
                        + self.log_tail()
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}/health")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"visage serve did not answer in {START_TIMEOUT_S:.0f} s")

    async def stop(self) -> None:
        """Stop the server gracefully (SIGINT); kill it if it does not stop in time."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    def figures(self) -> ProcessFigures:
        """The server's figures now (see :func:`read_figures`)."""
        return read_figures(self.pid)

    def cpu_seconds(self) -> float:
        """CPU seconds the server has used so far."""
        return cpu_seconds(self.pid)


@contextlib.asynccontextmanager
async def server_process(
    flags: Sequence[str], max_sessions: int, log_level: str = "WARNING"
) -> AsyncIterator[ServerProcess]:
    """A started :class:`ServerProcess` for the duration of the block."""
    server = ServerProcess(flags, max_sessions, log_level)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


async def session_count(http: httpx.AsyncClient, base: str) -> int:
    """The calls the server says are running (``GET /health``)."""
    response = await http.get(f"{base}/health")
    response.raise_for_status()
    return int(response.json()["sessions"])


async def wait_for_sessions(base: str, count: int, timeout_s: float) -> float | None:
    """Wait until the server runs ``count`` calls; seconds it took, None on timeout."""
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=5.0) as http:
        while time.monotonic() - start < timeout_s:
            with contextlib.suppress(httpx.HTTPError):
                if await session_count(http, base) == count:
                    return time.monotonic() - start
            await asyncio.sleep(0.1)
    return None
