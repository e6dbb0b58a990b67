"""The ``visage`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.config import ConfigError, Settings, describe_settings, load_settings


def _parse_set(pairs: list[str]) -> dict[str, Any]:
    """Turn ``--set section.key=value`` flags into nested overrides."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set expects section.key=value, got {pair!r}")
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


def _settings(args: argparse.Namespace, **server: Any) -> Settings:
    overrides = _parse_set(getattr(args, "set", None) or [])
    given = {k: v for k, v in server.items() if v is not None}
    if given:
        overrides.setdefault("server", {}).update(given)
    return load_settings(args.config, overrides)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file (or $VISAGE_CONFIG)")
    parser.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set avatar.width=256 (repeatable)",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP + WebRTC server until interrupted."""
    import uvicorn
    from loguru import logger

    from agent.server.app import create_app

    settings = _settings(args, host=args.host, port=args.port)
    logger.remove()
    logger.add(sys.stderr, level=settings.server.log_level)
    app = create_app(settings)
    host = "localhost" if settings.server.host in ("127.0.0.1", "0.0.0.0") else settings.server.host
    print(f"Visage is serving the call page at http://{host}:{settings.server.port}/", flush=True)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level.lower().replace("trace", "debug"),
    )
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the effective settings."""
    print(describe_settings(_settings(args)), end="")
    return 0


def _print_table(rows: dict[str, Any]) -> None:
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path:
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}")


def cmd_bench_render(args: argparse.Namespace) -> int:
    """Time the frame renderer."""
    from renderer.bench import bench_frames

    result = bench_frames(
        width=args.width,
        height=args.height,
        frames=args.frames,
        threads=args.threads,
        device=args.device,
    )
    _print_table(result)
    _write_json(args.json, result)
    return 0


def cmd_bench_e2e(args: argparse.Namespace) -> int:
    """Measure end of user speech -> first reply audio in a real headless browser."""
    from agent.browser import run_e2e_bench

    result = run_e2e_bench(turns=args.turns, settings=_settings(args))
    _print_table(result)
    _write_json(args.json, result)
    return 0 if result.get("turns_measured") else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="visage", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the call page and WebRTC signalling")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 8080)")
    _add_config_flags(serve)
    serve.set_defaults(func=cmd_serve)

    config = sub.add_parser("config", help="inspect settings")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the effective settings")
    _add_config_flags(show)
    show.set_defaults(func=cmd_config_show)

    bench = sub.add_parser("bench", help="benchmarks that print a table and can write JSON")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    render = bench_sub.add_parser("render", help="avatar frame render time")
    render.add_argument("--width", type=int, default=512)
    render.add_argument("--height", type=int, default=512)
    render.add_argument("--frames", type=int, default=200)
    render.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    render.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    render.add_argument("--json", type=Path, help="also write the figures here")
    render.set_defaults(func=cmd_bench_render)
    e2e = bench_sub.add_parser("e2e", help="speech end -> first reply audio, in headless Chromium")
    e2e.add_argument("--turns", type=int, default=3)
    e2e.add_argument("--json", type=Path, help="also write the figures here")
    _add_config_flags(e2e)
    e2e.set_defaults(func=cmd_bench_e2e)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``visage`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"visage: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
