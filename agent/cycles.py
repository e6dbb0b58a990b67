"""`visage bench cycles`: connect and hang up many times; does the server give it all back?

Each cycle places a real aiortc call (:class:`~agent.load.LoadClient`), waits for its
first audio or video packet, hangs up, and waits until the server's ``/health`` counts no
call. The server runs as a child process (``visage serve``) or at ``--url``. For a child,
its RSS, threads (by name) and open fds (by kind), and its own child processes (each
call's pocketsphinx worker) with their RSS, are read from ``/proc`` before the first
cycle and after cycles 1, 10, 50, 100 and the last. The report says whether RSS stopped
growing (between the last two readings, at most :data:`RSS_TOLERANCE_MB` or
:data:`RSS_TOLERANCE_SHARE` of it) and which threads and fds the calls left behind
(last reading against the one after the first call, which loads the models).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from agent.load import CONNECT_TIMEOUT_S, LoadClient, Log, target_server
from agent.served import ServerProcess, wait_for_sessions

CHECKPOINTS = (0, 1, 10, 50, 100)
FIRST_MEDIA_TIMEOUT_S = 10.0
TEARDOWN_TIMEOUT_S = 30.0
SETTLE_S = 1.0  # after the server counts no call, before reading it
RSS_TOLERANCE_MB = 5.0
RSS_TOLERANCE_SHARE = 0.02


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def one_cycle(base: str) -> dict[str, Any]:
    """Call, wait for media, hang up, wait for the server to count no call."""
    start = time.monotonic()
    client = LoadClient(base)
    result: dict[str, Any] = {"error": None}
    try:
        await client.connect(CONNECT_TIMEOUT_S)
        result["connect_s"] = round(time.monotonic() - start, 3)
        deadline = time.monotonic() + FIRST_MEDIA_TIMEOUT_S
        while not (client.media.audio or client.media.frames):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no media within {FIRST_MEDIA_TIMEOUT_S:g} s")
            await asyncio.sleep(0.02)
        result["first_media_s"] = round(time.monotonic() - start, 3)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await client.close()
    took = await wait_for_sessions(base, 0, TEARDOWN_TIMEOUT_S)
    result["teardown_s"] = None if took is None else round(took, 3)
    if took is None and result["error"] is None:
        result["error"] = f"the server still counted the call {TEARDOWN_TIMEOUT_S:g} s later"
    return result


def _grown(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """What ``after`` has more of than ``before`` (thread names, fd kinds)."""
    diff = Counter(after)
    diff.subtract(Counter(before))
    return {name: n for name, n in sorted(diff.items()) if n != 0}


def summarise(readings: list[dict[str, Any]], cycles: list[dict[str, Any]]) -> dict[str, Any]:
    """Growth between readings, leftovers, and the cycles' timings and failures."""
    teardowns = [c["teardown_s"] for c in cycles if c["teardown_s"] is not None]
    summary: dict[str, Any] = {
        "cycles": len(cycles),
        "failed": sum(c["error"] is not None for c in cycles),
        "errors": sorted({c["error"] for c in cycles if c["error"]}),
        "teardown_p50_s": round(float(np.median(teardowns)), 3) if teardowns else None,
        "teardown_max_s": max(teardowns) if teardowns else None,
    }
    if len(readings) < 2 or "rss_mb" not in readings[-1]:
        return summary
    last, previous = readings[-1], readings[-2]
    # After the first call: the models and per-process pools it loads are no leak.
    warm = next((r for r in readings if r["cycles"] >= 1), readings[0])
    growth = last["rss_mb"] - previous["rss_mb"]
    tolerance = max(RSS_TOLERANCE_MB, RSS_TOLERANCE_SHARE * previous["rss_mb"])
    span = max(last["cycles"] - previous["cycles"], 1)
    summary |= {
        "rss_growth_mb": {"from": previous["cycles"], "to": last["cycles"], "mb": round(growth, 1)},
        "rss_growth_kb_per_cycle": round(1024 * growth / span, 1),
        "rss_stopped_growing": growth <= tolerance,
        "threads_over_first_call": last["threads"] - warm["threads"],
        "fds_over_first_call": last["fds"] - warm["fds"],
        "threads_left": _grown(last["thread_names"], warm["thread_names"]),
        "fds_left": _grown(last["fd_kinds"], warm["fd_kinds"]),
        "threads_over_start": last["threads"] - readings[0]["threads"],
        "fds_over_start": last["fds"] - readings[0]["fds"],
        "children_left": last["children"] - readings[0]["children"],
    }
    return summary


async def bench_cycles(
    *, cycles: int, url: str | None, flags: list[str], log: Log = _stderr
) -> dict[str, Any]:
    """Run ``cycles`` connect/hang-up cycles; the report (see the module's docstring)."""
    from tqdm import tqdm

    checkpoints = sorted({c for c in CHECKPOINTS if c <= cycles} | {cycles})
    readings: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    async with target_server(url, flags, 4) as (base, server):

        def read(done: int) -> None:
            reading: dict[str, Any] = {"cycles": done, "at_s": round(time.monotonic() - t0, 1)}
            if isinstance(server, ServerProcess):
                reading |= server.figures().as_dict()
            readings.append(reading)

        t0 = time.monotonic()
        read(0)
        bar = tqdm(total=cycles, desc="connect/hang-up cycles", unit="call", file=sys.stderr)
        try:
            for done in range(1, cycles + 1):
                results.append(await one_cycle(base))
                bar.update()
                if results[-1]["error"]:
                    bar.write(f"cycle {done}: {results[-1]['error']}", file=sys.stderr)
                if done in checkpoints:
                    await asyncio.sleep(SETTLE_S)
                    read(done)
        finally:
            bar.close()
    return {"readings": readings, "summary": summarise(readings, results), "per_cycle": results}


def format_cycles(report: dict[str, Any]) -> str:
    """The readings as a table, then what grew."""
    rows = [["cycles", "rss_mb", "threads", "fds", "children", "children_mb", "cpu_s", "at_s"]]
    for r in report["readings"]:
        rows.append(
            [
                str(r["cycles"]),
                f"{r['rss_mb']:.1f}" if "rss_mb" in r else "-",
                str(r.get("threads", "-")),
                str(r.get("fds", "-")),
                str(r.get("children", "-")),
                f"{r['children_rss_mb']:.0f}" if "children_rss_mb" in r else "-",
                f"{r['cpu_s']:.1f}" if "cpu_s" in r else "-",
                f"{r['at_s']:.0f}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    s = report["summary"]
    lines.append("")
    lines.append(
        f"{s['cycles']} cycles, {s['failed']} failed; the server ended each call in "
        f"{s['teardown_p50_s']} s at p50, {s['teardown_max_s']} s at most"
    )
    for error in s["errors"]:
        lines.append(f"  error: {error}")
    if "rss_growth_mb" in s:
        g = s["rss_growth_mb"]
        verdict = "stopped growing" if s["rss_stopped_growing"] else "STILL GROWING"
        lines.append(
            f"RSS {g['from']} -> {g['to']} cycles: {g['mb']:+.1f} MB "
            f"({s['rss_growth_kb_per_cycle']:+.0f} KB per call): {verdict}"
        )
        lines.append(
            f"after the first call: threads {s['threads_over_first_call']:+d} "
            f"{s['threads_left'] or ''}, fds {s['fds_over_first_call']:+d} {s['fds_left'] or ''}"
            f"; child processes left: {s['children_left']}"
        )
    return "\n".join(lines)


def run_bench_cycles(**kwargs: Any) -> dict[str, Any]:
    """Blocking wrapper of :func:`bench_cycles` for the CLI."""
    return asyncio.run(bench_cycles(**kwargs))
