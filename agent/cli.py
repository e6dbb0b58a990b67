"""The ``visage`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from agent.avatars import add_avatar_parsers
from agent.config import ConfigError, Settings, describe_settings, load_settings
from agent.inventory import add_models_parsers
from agent.stt_cli import add_bench_stt_parser, add_transcribe_parser
from agent.tts_commands import add_tts_parsers


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

    from agent.log_privacy import add_log_sink
    from agent.server.app import create_app
    from agent.server.gate import open_server_warning
    from pipelines.conversation import check_engines
    from pipelines.stages.stt import STTEngineError
    from pipelines.stages.tts import TTSEngineError
    from renderer.frames.factory import build_drawer

    settings = _settings(args, host=args.host, port=args.port)
    if args.avatar:
        settings.avatar.face = args.avatar
    logger.remove()
    # Written to whatever sys.stderr is at each record, so a serve that returns early (in
    # process, as tests run it) leaves no sink on a stream that is later closed.
    add_log_sink(lambda message: sys.stderr.write(message), settings.server.log_level)
    try:
        check_engines(settings.stt, settings.llm, settings.tts)
        build_drawer(settings.avatar)  # a missing portrait fails now, not on the first call
    except (STTEngineError, TTSEngineError, ValueError) as exc:
        print(f"visage serve: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, long_running=True)
    if warning := open_server_warning(settings.server):
        logger.warning(warning)
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


def render_bench_runs(threads: int | None, device: str | None) -> list[tuple[str, int]]:
    """(device, threads) to time: those asked for, else one CPU thread, all CPU threads,
    and CUDA when torch sees it."""
    import os

    import torch

    if threads is not None or device is not None:
        return [(device or "cpu", threads or 1)]
    runs = [("cpu", 1)]
    if (os.cpu_count() or 1) > 1:
        runs.append(("cpu", os.cpu_count() or 1))
    if torch.cuda.is_available():
        runs.append(("cuda", 1))
    return runs


def cmd_bench_render(args: argparse.Namespace) -> int:
    """Time the face drawer (``--avatar``, default ``avatar.face`` of the settings)."""
    from renderer.bench import bench_frames, format_table

    avatar = _settings(args).avatar
    face = args.avatar or avatar.face
    width = args.size or args.width
    height = args.size or args.height
    if not 16 <= width <= 4096 or not 16 <= height <= 4096:
        return _fail(f"the frame size must be 16 to 4096 pixels, got {width}x{height}")
    results = []
    try:
        for device, threads in render_bench_runs(args.threads, args.device):
            results.append(
                bench_frames(
                    avatars_dir=avatar.dir,
                    width=width,
                    height=height,
                    frames=args.frames,
                    threads=threads,
                    device=device,
                    face=face,
                    batch=args.batch,
                )
            )
    except ValueError as exc:
        return _fail(str(exc))
    print(f"{face} drawer, the bench's motion sweep (every channel moving):")
    print(format_table(results))
    _write_json(args.json, {"runs": results})
    return 0


def cmd_bench_e2e(args: argparse.Namespace) -> int:
    """Measure end of user speech -> first reply audio in a real headless browser."""
    from agent.browser import run_e2e_bench

    result = run_e2e_bench(turns=args.turns, settings=_settings(args))
    _print_table(result)
    _write_json(args.json, result)
    return 0 if result.get("turns_measured") else 1


def _server_flags(args: argparse.Namespace) -> list[str]:
    """The ``--config``/``--set`` flags of this command, for a ``visage serve`` it starts."""
    from agent.served import config_flags

    return config_flags(args.config, args.set or [])


#: Other processes' CPU use (% of a core) during a load run above which it is flagged.
BUSY_MACHINE_PERCENT = 25.0


def cmd_bench_load(args: argparse.Namespace) -> int:
    """N concurrent callers: per call fps, audio, end-to-end, server stage p95s; or the
    most calls this machine holds (``--find-capacity``)."""
    from agent.capacity import default_capacity_file, new_record, save_record
    from agent.load import format_capacity, format_run, run_bench_load, run_find_capacity

    settings = _settings(args)
    if args.seconds <= 0:
        return _fail("--seconds must be positive")
    common = {
        "seconds": args.seconds,
        "url": args.url,
        "flags": _server_flags(args),
        "strict": args.strict,
    }
    if not args.find_capacity:
        if args.sessions is None or args.sessions < 1:
            return _fail("give --sessions N (at least 1), or --find-capacity")
        report = run_bench_load(sessions=args.sessions, settings=settings, **common)
        print(format_run(report))
        _write_json(args.json, report)
        return 0 if report["ok"] else 1
    if not 1 <= args.most <= 256:
        return _fail("--most must be between 1 and 256")
    result = run_find_capacity(most=args.most, settings=settings, **common)
    for run in result["runs"]:
        print(format_run(run), end="\n\n")
    print(format_capacity(result))
    others = max(run["other_cpu_percent"] for run in result["runs"])
    if others > BUSY_MACHINE_PERCENT:
        print(
            f"other processes took up to {others:.0f}% of a core during a run: this capacity "
            "is lower than the machine's own; measure again when it is quiet"
        )
    if args.url or args.no_save:
        why = "--url measures another server" if args.url else "--no-save"
        print(f"not saved ({why}); the server's default max_sessions is unchanged")
    else:
        path = args.capacity_file or default_capacity_file()
        at_capacity = [r for r in result["runs"] if r["sessions"] == result["capacity"]]
        summary = {
            "seconds": args.seconds,
            "tried": [r["sessions"] for r in result["runs"]],
            "first_failing": result["first_failing"],
            "server_cpu_percent": at_capacity[0]["server_cpu_percent"] if at_capacity else None,
            "other_cpu_percent_max": others,
            "end_to_end_budget_ms": settings.budgets.end_to_end,
            "strict": args.strict,
        }
        record = new_record(settings, result["capacity"], "visage " + " ".join(args.argv), summary)
        save_record(record, path)
        result["saved"] = {"path": str(path), **record.as_dict()}
        print(f"saved in {path} for {record.key.describe()}")
        admits = max(1, result["capacity"])
        print(f"an unset server.max_sessions now admits {admits} call{'s' * (admits > 1)} here")
    _write_json(args.json, result)
    return 0


def cmd_bench_cycles(args: argparse.Namespace) -> int:
    """Connect and hang up ``--cycles`` times; the server's RSS, threads and fds."""
    from agent.cycles import format_cycles, run_bench_cycles

    if args.cycles < 1:
        return _fail("--cycles must be at least 1")
    _settings(args)  # a settings mistake fails here, not in the server it starts
    report = run_bench_cycles(cycles=args.cycles, url=args.url, flags=_server_flags(args))
    print(format_cycles(report))
    _write_json(args.json, report)
    summary = report["summary"]
    return 1 if summary["failed"] or summary.get("rss_stopped_growing") is False else 0


DEFAULT_MOTION_DATA = Path("artifacts/motion-data")
# The held-out test sentences spoken by the Piper voice (visage motion eval --voice piper).
DEFAULT_PIPER_MOTION_DATA = Path("artifacts/motion-data-piper")
# The training mix of the shipped weights: this share of every split spoken by Piper.
SHIPPED_PIPER_SHARE = 0.35
DEFAULT_MIX_MOTION_DATA = Path("artifacts/motion-data-mix")


def _motion_dataset(data: Path, workers: int = 1, **build: Any) -> Any:
    """Build the motion dataset at ``data``, or reuse it when its manifest matches."""
    from renderer.motion.data import build_dataset

    info = build_dataset(data, workers=workers, **build)
    state = "reusing" if info.reused else f"built in {info.build_seconds:.0f} s:"
    print(f"{state} motion dataset {data} ({info.counts}, {info.hours} h)", flush=True)
    return info


def _fail(message: str) -> int:
    print(f"visage: {message}", file=sys.stderr)
    return 2


def cmd_motion_train(args: argparse.Namespace) -> int:
    """Train the MotionDiT motion model and save a checkpoint."""
    import torch

    from renderer.motion.checkpoint import DEFAULT_CHECKPOINT
    from renderer.motion.data import load_split
    from renderer.motion.train import TrainConfig, train

    if args.epochs is not None and args.steps is not None:
        return _fail("give --steps or --epochs, not both")
    out = args.out or DEFAULT_CHECKPOINT
    cfg = TrainConfig(
        size=args.size,
        steps=args.steps if args.steps is not None else TrainConfig.steps,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        init=str(args.init) if args.init else None,
        quiet_mouth_weight=(
            TrainConfig.quiet_mouth_weight
            if args.quiet_mouth_weight is None
            else args.quiet_mouth_weight
        ),
    )
    if not 0.0 <= args.piper_share <= 1.0:
        return _fail(f"--piper-share must be between 0 and 1, got {args.piper_share}")
    if args.data is None:
        args.data = DEFAULT_MIX_MOTION_DATA if args.piper_share else DEFAULT_MOTION_DATA
    info = _motion_dataset(args.data, args.workers, piper_share=args.piper_share)
    train_utts, val_utts = load_split(args.data, "train"), load_split(args.data, "val")
    meta = {
        "command": "visage " + " ".join(getattr(args, "argv", [])),
        "data": {
            "dir": str(args.data),
            "counts": info.counts,
            "hours": info.hours,
            "params": info.params,
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": str(torch.__version__),
    }
    try:
        summary = train(train_utts, val_utts, out, cfg, meta=meta)
    except ValueError as exc:
        return _fail(str(exc))
    _print_table(
        {
            "checkpoint": str(out),
            "params": summary["params"],
            "steps": summary["steps"],
            "train_minutes": summary["train_seconds"] / 60.0,
            "final_train_loss": summary["final_train_loss"],
            "final_val_loss": summary["history"][-1]["val_loss"] if summary["history"] else "-",
        }
    )
    return 0


def cmd_motion_calibrate(args: argparse.Namespace) -> int:
    """Re-calibrate a checkpoint's eyelid temperature on the validation split, in place."""
    from renderer.motion.checkpoint import (
        DEFAULT_CHECKPOINT,
        CheckpointError,
        load_model,
        read_checkpoint,
        save_checkpoint,
    )
    from renderer.motion.data import load_split
    from renderer.motion.train import calibration_meta

    path = args.checkpoint or DEFAULT_CHECKPOINT
    try:
        model, meta = load_model(path), read_checkpoint(path)["meta"]
    except CheckpointError as exc:
        return _fail(str(exc))
    _motion_dataset(args.data, args.workers)
    utts = load_split(args.data, "val")[: args.utterances]
    meta["calibration"] = calibration_meta(model, utts, steps=args.steps, seed=args.seed)
    meta["calibration"]["command"] = "visage " + " ".join(getattr(args, "argv", []))
    save_checkpoint(path, model, meta)
    print(f"wrote {path}")
    return 0


def cmd_motion_eval(args: argparse.Namespace) -> int:
    """Score the learned model (streamed as live) beside the procedural baseline."""
    from renderer.motion.checkpoint import CheckpointError, load_model
    from renderer.motion.data import load_split
    from renderer.motion.evaluate import evaluate, format_table

    try:
        model = load_model(args.checkpoint)
    except CheckpointError as exc:
        return _fail(str(exc))
    if args.voice == "piper":  # the same held-out sentences, every one spoken by Piper
        args.data = args.data or DEFAULT_PIPER_MOTION_DATA
        _motion_dataset(args.data, args.workers, piper_share=1.0, splits=(args.split,))
    else:
        args.data = args.data or DEFAULT_MOTION_DATA
        _motion_dataset(args.data, args.workers)
    utts = load_split(args.data, args.split)
    if args.limit:
        utts = utts[: args.limit]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = evaluate(model, utts, steps=args.steps, seed=args.seed, log=print)
    print(format_table(result))
    print(f"(eval took {time.perf_counter() - start:.0f} s, {args.steps} steps, seed {args.seed})")
    _write_json(args.json, {"learned": result["learned"], "procedural": result["procedural"]})
    return 0


def cmd_motion_infer(args: argparse.Namespace) -> int:
    """Motion JSON for a WAV file, streamed as in a live session."""
    from renderer.config import MAX_MOTION_STEPS
    from renderer.motion.checkpoint import CheckpointError, load_model
    from renderer.motion.space import MOTION_FPS, MOTION_NAMES
    from renderer.motion.stream import generate
    from renderer.wavfile import read_wav

    try:
        audio, rate = read_wav(args.audio)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    try:
        model = load_model(args.checkpoint)
    except CheckpointError as exc:
        return _fail(str(exc))
    if not 1 <= args.steps <= MAX_MOTION_STEPS:
        return _fail(f"--steps must be between 1 and {MAX_MOTION_STEPS}, got {args.steps}")
    frames = generate(model, audio, rate, steps=args.steps, seed=args.seed, piece_s=0.05)
    data = {
        "fps": MOTION_FPS,
        "names": list(MOTION_NAMES),
        "frames": [[round(float(v), 5) for v in row] for row in frames],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data) + "\n")
    print(f"wrote {args.out}: {len(frames)} frames ({len(audio) / rate:.2f} s of audio)")
    return 0


def cmd_bench_motion(args: argparse.Namespace) -> int:
    """Time streamed motion generation: one session per step count, or batched sessions."""
    from renderer.frames.drawer import resolve_device
    from renderer.motion.bench import (
        bench_batched,
        bench_motion,
        format_batched_table,
        format_table,
    )
    from renderer.motion.checkpoint import CheckpointError, load_model

    try:
        model = load_model(args.checkpoint)
        device = resolve_device(args.device)
    except (CheckpointError, ValueError) as exc:
        return _fail(str(exc))
    if args.batch:
        if min(args.batch) < 1 or args.threads < 1:
            return _fail("--batch sizes and --threads must be positive")
        result = bench_batched(
            model.to(device), args.batch, seconds=args.seconds, threads=args.threads
        )
        print(format_batched_table(result))
    else:
        if device.type != "cpu":
            return _fail("the per-step table is a CPU figure; add --batch N for another device")
        result = bench_motion(model, seconds=args.seconds)
        print(format_table(result))
    _write_json(args.json, result)
    return 0


def _add_motion_parser(sub: Any) -> None:
    motion = sub.add_parser("motion", help="the learned motion model: train, eval, infer")
    motion_sub = motion.add_subparsers(dest="motion_command", required=True)

    train = motion_sub.add_parser("train", help="train MotionDiT on the synthetic dataset")
    train.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"dataset folder (default {DEFAULT_MIX_MOTION_DATA}, or {DEFAULT_MOTION_DATA} "
        "with --piper-share 0)",
    )
    train.add_argument("--out", type=Path, default=None, help="checkpoint to write")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimiser steps (default 12000, ~31 min on 2 cores)",
    )
    train.add_argument("--epochs", type=float, default=None, help="instead of --steps")
    train.add_argument("--batch", type=int, default=128)
    train.add_argument("--lr", type=float, default=6e-4)
    train.add_argument("--size", default="small", help="model size: tiny, small or base")
    train.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    train.add_argument("--workers", type=int, default=2, help="processes building the dataset")
    train.add_argument(
        "--piper-share",
        type=float,
        default=SHIPPED_PIPER_SHARE,
        help=f"share of utterances spoken by the Piper voice (default {SHIPPED_PIPER_SHARE}, "
        "as the shipped weights; 0: espeak-ng only)",
    )
    train.add_argument(
        "--quiet-mouth-weight",
        type=float,
        default=None,
        help="loss weight of the mouth channels on silent frames (keeps pauses shut; default 12)",
    )
    train.add_argument(
        "--init",
        type=Path,
        default=None,
        help="fine-tune from this checkpoint (keeps its size and normalisation)",
    )
    train.set_defaults(func=cmd_motion_train)

    ev = motion_sub.add_parser("eval", help="learned vs procedural metrics on the test split")
    ev.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"dataset folder (default {DEFAULT_MOTION_DATA}, or {DEFAULT_PIPER_MOTION_DATA} "
        "with --voice piper)",
    )
    ev.add_argument(
        "--voice",
        choices=["espeak", "piper"],
        default="espeak",
        help="who speaks the held-out sentences: the dataset's espeak-ng voices, or the "
        "embedded Piper voice (its own test set, built on first use)",
    )
    ev.add_argument("--checkpoint", type=Path, default=None, help="default: shipped weights")
    ev.add_argument("--json", type=Path, help="also write the metrics here")
    ev.add_argument("--steps", type=int, default=4, choices=range(1, 9), metavar="1-8")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--split", default="test", choices=["val", "test"])
    ev.add_argument("--limit", type=int, default=0, help="only the first N utterances")
    ev.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ev.add_argument("--workers", type=int, default=2, help="processes building the dataset")
    ev.set_defaults(func=cmd_motion_eval)

    cal = motion_sub.add_parser(
        "calibrate", help="re-fit a checkpoint's blink rate on the val split (train does this)"
    )
    cal.add_argument("--checkpoint", type=Path, default=None, help="default: shipped weights")
    cal.add_argument("--data", type=Path, default=DEFAULT_MOTION_DATA, help="dataset folder")
    cal.add_argument("--steps", type=int, default=4, choices=range(1, 9), metavar="1-8")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--utterances", type=int, default=100, help="val utterances to use")
    cal.add_argument("--workers", type=int, default=2, help="processes building the dataset")
    cal.set_defaults(func=cmd_motion_calibrate)

    infer = motion_sub.add_parser("infer", help="motion JSON for a WAV file")
    infer.add_argument("audio", type=Path, help="WAV file (any rate, mono or stereo)")
    infer.add_argument("--out", type=Path, required=True, help="motion JSON to write")
    infer.add_argument("--seed", type=int, default=0)
    infer.add_argument("--steps", type=int, default=4)
    infer.add_argument("--checkpoint", type=Path, default=None, help="default: shipped weights")
    infer.set_defaults(func=cmd_motion_infer)


def cmd_render(args: argparse.Namespace) -> int:
    """Render an offline clip: the avatar saying --audio or --text, as an MP4."""
    import torch
    from loguru import logger

    from renderer import clip

    if not 64 <= args.size <= 2048 or args.size % 2:
        return _fail(f"--size must be an even number of pixels from 64 to 2048, got {args.size}")
    if not 5 <= args.fps <= 60:
        return _fail(f"--fps must be between 5 and 60, got {args.fps}")
    settings = _settings(args)
    avatar = settings.avatar.model_dump()
    avatar.update(width=args.size, height=args.size, fps=args.fps)
    if args.avatar:
        avatar["face"] = args.avatar  # the drawer factory resolves the name
    said_by = ""
    try:
        clip.check_output(args.out)
        if args.audio is not None:
            speech = clip.speech_from_wav(args.audio)
        else:
            from agent.tts_commands import speech_for_clip

            speech, said_by = speech_for_clip(args.text, settings.tts)
        avatar_settings = type(settings.avatar).model_validate(avatar)
        torch.set_num_threads(avatar_settings.torch_threads)  # as the server sets it
        report = clip.render_clip(speech, avatar_settings, args.out, progress=not args.quiet)
    except clip.ClipError as exc:
        return _fail(str(exc))
    except Exception as exc:  # ours, not the user's: the traceback goes to the log
        logger.opt(exception=exc).error(f"visage render failed: {exc}")
        print(f"visage: {args.out} was not written: {exc}", file=sys.stderr)
        return 1
    print(report.describe() + (f"; said by {said_by}" if said_by else ""))
    return 0


def _add_render_parser(sub: Any) -> None:
    render = sub.add_parser(
        "render",
        help="render an offline clip (MP4) of the avatar saying a WAV file or a text",
        description="Goes through a live call's motion and drawing path, unpaced, at full "
        "quality; writes H.264 + AAC in MP4 with the speech muxed in.",
    )
    said = render.add_mutually_exclusive_group(required=True)
    said.add_argument("--audio", type=Path, help="speech to say: a WAV file (any rate, channels)")
    said.add_argument(
        "--text", help="words to say, spoken by the configured TTS (tts.engine; Piper by default)"
    )
    render.add_argument("--out", type=Path, required=True, help="MP4 file to write")
    render.add_argument(
        "--avatar", help="avatar name (sets avatar.face; default: the configured face)"
    )
    render.add_argument("--size", type=int, default=512, help="width and height (default 512)")
    render.add_argument("--fps", type=int, default=25, help="frames per second (default 25)")
    render.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_flags(render)
    render.set_defaults(func=cmd_render)


def cmd_profile(args: argparse.Namespace) -> int:
    """Profile a live call: per-stage p50/p95/max, A/V offset, barge-in, fps."""
    from agent.profile import format_table, plot_waterfall, run_profile

    if args.turns < 1:
        return _fail("--turns must be at least 1")
    if args.barge_in_every == 1 or args.barge_in_every < 0:
        return _fail("--barge-in-every must be 0 (never) or at least 2")
    report = run_profile(
        turns=args.turns,
        url=args.url,
        settings=_settings(args),
        barge_in_every=args.barge_in_every,
        user_voice=args.user_voice,
        server_flags=_server_flags(args),
    )
    print(format_table(report))
    _write_json(args.json, report)
    if args.plot:
        plot_waterfall(report, args.plot)
        print(f"wrote {args.plot}")
    return 1 if args.fail_on_budget and report["violations"] else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="visage", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the call page and WebRTC signalling")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 8080)")
    serve.add_argument(
        "--avatar", help="portrait avatar to use (sets avatar.face; see `visage avatar list`)"
    )
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
    render.add_argument("--size", type=int, help="square frame size (e.g. 256 or 512)")
    render.add_argument("--width", type=int, default=512)
    render.add_argument("--height", type=int, default=512)
    render.add_argument("--frames", type=int, default=200)
    render.add_argument("--batch", type=int, default=1, help="frames per call, as N sessions")
    render.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: one thread, then all, then CUDA if present)",
    )
    render.add_argument("--device", choices=["cpu", "cuda"], help="only this device")
    render.add_argument(
        "--avatar",
        "--face",
        dest="avatar",
        help="portrait avatar or face drawer (default: avatar.face of the settings)",
    )
    render.add_argument("--json", type=Path, help="also write the figures here")
    _add_config_flags(render)
    render.set_defaults(func=cmd_bench_render)
    e2e = bench_sub.add_parser("e2e", help="speech end -> first reply audio, in headless Chromium")
    e2e.add_argument("--turns", type=int, default=3)
    e2e.add_argument("--json", type=Path, help="also write the figures here")
    _add_config_flags(e2e)
    e2e.set_defaults(func=cmd_bench_e2e)
    bench_motion = bench_sub.add_parser("motion", help="motion model latency and real-time factor")
    bench_motion.add_argument("--checkpoint", type=Path, default=None, help="default: shipped")
    bench_motion.add_argument("--seconds", type=float, default=30.0, help="audio to stream")
    bench_motion.add_argument(
        "--batch",
        type=int,
        nargs="+",
        metavar="N",
        help="sample N sessions' chunks together, for each N given (e.g. --batch 1 8 32)",
    )
    bench_motion.add_argument(
        "--device", default="cpu", help="with --batch: cpu, cuda or auto (default cpu)"
    )
    bench_motion.add_argument(
        "--threads", type=int, default=1, help="with --batch: CPU threads for torch (default 1)"
    )
    bench_motion.add_argument("--json", type=Path, help="also write the figures here")
    bench_motion.set_defaults(func=cmd_bench_motion)

    load = bench_sub.add_parser(
        "load",
        help="N concurrent WebRTC callers: fps, audio, end-to-end and stage p95s per call",
        description="Without --url, starts `visage serve` as a child process on a free "
        "loopback port (with the same --config/--set) so the server's CPU use and the "
        "callers' are measured apart. --find-capacity doubles N from 1 while every call "
        "holds 24 fps, real-time audio (>= 95%, no gap over 200 ms), an answer to every "
        "question and budgets.end_to_end at p95 (speech end -> reply sent), then bisects; "
        "the capacity is saved for this machine and avatar in "
        "$XDG_CACHE_HOME/visage/capacity.json (~/.cache/visage/capacity.json), which an "
        "unset server.max_sessions then uses.",
    )
    load.add_argument("--sessions", type=int, help="concurrent calls (without --find-capacity)")
    load.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="keep asking questions this long after the greetings (default 60: 4 or 5 "
        "questions a call, the embedded persona's answers take 6 to 12 s)",
    )
    load.add_argument("--url", help="server to load (default: start one here)")
    load.add_argument("--json", type=Path, help="also write every figure here")
    load.add_argument(
        "--find-capacity", action="store_true", help="search for the most calls that hold up"
    )
    load.add_argument(
        "--strict",
        action="store_true",
        help="also fail a call whose stage p95s are over their [budgets] entries, and whose "
        "end-to-end time at the caller is over budgets.end_to_end (without it, a call must "
        "hold 24 fps, real-time audio, and the server's end-to-end p95 within the budget)",
    )
    load.add_argument(
        "--most", type=int, default=32, help="with --find-capacity: most calls to try (32)"
    )
    load.add_argument(
        "--no-save", action="store_true", help="with --find-capacity: do not save the result"
    )
    load.add_argument(
        "--capacity-file",
        type=Path,
        help="with --find-capacity: where to save it (default "
        "$XDG_CACHE_HOME/visage/capacity.json)",
    )
    _add_config_flags(load)
    load.set_defaults(func=cmd_bench_load)
    cycles = bench_sub.add_parser(
        "cycles",
        help="connect/hang-up cycles: the server's RSS, threads and fds",
        description="Each cycle places a real call, waits for its first media, hangs up and "
        "waits until /health counts no call. Without --url the server is a child process, "
        "read from /proc after 0, 1, 10, 50, 100 and the last cycle. Exits 1 when a cycle "
        "failed or RSS still grew between the last two readings.",
    )
    cycles.add_argument("--cycles", type=int, default=100, help="how many (default 100)")
    cycles.add_argument("--url", help="server to cycle (default: start one here; no /proc)")
    cycles.add_argument("--json", type=Path, help="also write every figure here")
    _add_config_flags(cycles)
    cycles.set_defaults(func=cmd_bench_cycles)
    add_bench_stt_parser(bench_sub, _add_config_flags, _settings)
    add_tts_parsers(sub, bench_sub, _add_config_flags, _settings)

    _add_motion_parser(sub)
    _add_render_parser(sub)
    add_avatar_parsers(sub, _add_config_flags, _settings)
    add_models_parsers(sub, _add_config_flags, _settings)
    add_transcribe_parser(sub, _add_config_flags, _settings)

    prof = sub.add_parser(
        "profile", help="play the user over WebRTC and time every stage of every turn"
    )
    prof.add_argument("--url", help="server to profile (default: start one here)")
    prof.add_argument("--turns", type=int, default=5, help="questions to ask (default 5)")
    prof.add_argument("--json", type=Path, help="also write the report here")
    prof.add_argument("--plot", type=Path, help="write a waterfall of the turns (PNG)")
    prof.add_argument(
        "--barge-in-every",
        type=int,
        default=5,
        metavar="N",
        help="talk over the replies of turns 2, 2+N, ... to interrupt them, and say 'hmm' "
        "over those of turns 1, 1+N, ... (must only pause them); 0: never (default 5)",
    )
    prof.add_argument(
        "--user-voice",
        choices=("piper", "espeak"),
        default="piper",
        help="the voice the profiler asks its questions in (default piper: smart-turn "
        "hears espeak-ng's flat questions as unfinished and waits them out)",
    )
    prof.add_argument(
        "--fail-on-budget", action="store_true", help="exit 1 when a stage's p95 is over budget"
    )
    _add_config_flags(prof)
    prof.set_defaults(func=cmd_profile)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``visage`` console script."""
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"visage: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
