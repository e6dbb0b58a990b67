"""Build the train/val/test splits on disk and load them back.

Each split is one compressed ``<split>.npz`` holding every utterance's arrays end to
end, with offsets (no pickles), next to a ``manifest.json`` recording the seed, sizes,
generator version and feature settings, so a cached dataset is reused only when it
matches. Every random choice comes from a generator seeded by (seed, split, index,
copy), so the dataset is the same for any worker count; only espeak-ng's own audio may
differ by a few samples between runs.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from renderer.motion.data import augment
from renderer.motion.data.sentences import sentences
from renderer.motion.data.synth import speak
from renderer.motion.data.targets import SAMPLES_PER_FRAME, make_targets, n_frames_for
from renderer.motion.data.voices import Split, pick_voice
from renderer.motion.features import (
    F_MAX,
    F_MIN,
    HOP,
    LOG_FLOOR,
    LOG_MEAN,
    LOG_STD,
    MELS_PER_FRAME,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WIN,
    log_mel,
)
from renderer.motion.space import MOTION_DIM, MOTION_FPS, MOTION_NAMES

GENERATOR_VERSION = "2"  # bump whenever generated content changes
SPLITS: tuple[Split, ...] = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
MANIFEST = "manifest.json"


@dataclass(slots=True)
class Utterance:
    """One utterance: features, motion targets and what produced them.

    ``mel`` is (4T, N_MELS) float32, ``motion`` (T, MOTION_DIM) float32, ``speech_mask``
    (T,) bool, ``audio`` int16 at 16 kHz with exactly ``T * 640`` samples (None for train
    utterances when the dataset was built without train audio). ``phonemes`` holds
    (ipa, start_s, end_s) speech spans and ``pauses`` (start_s, end_s) silences, both in
    the (possibly speed-changed) audio's time.
    """

    id: str
    split: str
    text: str
    voice: str
    rate: int
    pitch: int
    mel: np.ndarray
    motion: np.ndarray
    speech_mask: np.ndarray
    audio: np.ndarray | None
    phonemes: list[tuple[str, float, float]]
    pauses: list[tuple[float, float]]
    augmentation: str = ""  # empty for clean audio

    @property
    def n_frames(self) -> int:
        """Motion frames T."""
        return len(self.motion)

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.n_frames / MOTION_FPS


@dataclass(slots=True)
class DatasetInfo:
    """What a built (or reused) dataset holds."""

    out_dir: Path
    seed: int
    counts: dict[str, int]
    hours: dict[str, float]
    voices: dict[str, list[str]]
    build_seconds: float
    reused: bool = False
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Job:
    split: Split
    index: int
    text: str
    seed: int
    copies: int
    augment: bool
    keep_audio: bool
    piper_share: float = 0.0


def _params(
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int,
    train_copies: int,
    train_audio: bool,
    piper_share: float = 0.0,
) -> dict[str, Any]:
    """Everything that decides the dataset's content; a cached copy must match all of it."""
    # Only when used, so espeak-only datasets built before Piper keep matching.
    piper: dict[str, Any] = {}
    if piper_share:
        from speech.piper import MARKS_VERSION

        piper = {"piper_share": piper_share, "piper_marks_version": MARKS_VERSION}
    return {
        **piper,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "train_copies": train_copies,
        "train_audio": train_audio,
        "features": {
            "sample_rate": SAMPLE_RATE,
            "hop": HOP,
            "win": WIN,
            "n_fft": N_FFT,
            "n_mels": N_MELS,
            "mels_per_frame": MELS_PER_FRAME,
            "f_min": F_MIN,
            "f_max": F_MAX,
            "log_floor": LOG_FLOOR,
            "log_mean": LOG_MEAN,
            "log_std": LOG_STD,
        },
        "motion_fps": MOTION_FPS,
        "motion_names": list(MOTION_NAMES),
    }


def _jobs(
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int,
    copies: int,
    train_audio: bool,
    piper_share: float = 0.0,
) -> list[_Job]:
    """Sentences for each split: val's are distinct from train's, test's from another pool."""
    pool = sentences(seed, "train")
    train_val = [next(pool) for _ in range(n_train + n_val)]
    test_pool = sentences(seed, "test", exclude=set(train_val))
    test = [next(test_pool) for _ in range(n_test)]
    jobs = [
        _Job("train", i, s, seed, copies, True, train_audio, piper_share)
        for i, s in enumerate(train_val[:n_train])
    ]
    jobs += [
        _Job("val", i, s, seed, 1, False, True, piper_share)
        for i, s in enumerate(train_val[n_train:])
    ]
    jobs += [_Job("test", i, s, seed, 1, False, True, piper_share) for i, s in enumerate(test)]
    return jobs


def make_utterances(job: _Job) -> list[dict[str, Any]]:
    """Synthesise one sentence and turn it into ``job.copies`` records (arrays + metadata)."""
    code = _SPLIT_CODE[job.split]
    rng = np.random.default_rng([job.seed, code, job.index])
    setting = pick_voice(rng, job.split, job.piper_share)
    spoken = speak(job.text, setting, rng)
    out = []
    for copy in range(job.copies):
        crng = np.random.default_rng([job.seed, code, job.index, copy + 1])
        audio, timeline, described = spoken.audio, spoken.timeline, ""
        if job.augment:
            aug = augment.draw(crng)
            audio, timeline = augment.apply(audio, timeline, aug, crng)
            described = aug.describe()
        n = n_frames_for(len(audio))
        audio = audio[: n * SAMPLES_PER_FRAME]
        targets = make_targets(timeline, n, crng)
        pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
        out.append(
            {
                "id": f"{job.split}-{job.index:05d}-{copy}",
                "text": job.text,
                "voice": setting.voice,
                "rate": setting.rate,
                "pitch": setting.pitch,
                # Features of the int16 audio that is stored, so they match it exactly.
                "mel": log_mel(pcm.astype(np.float32) / 32768.0).astype(np.float16),
                "motion": targets.motion,
                "speech_mask": targets.speech_mask,
                "audio": pcm if job.keep_audio else None,
                "phonemes": [(p.label, p.start, p.end) for p in timeline.phonemes],
                "pauses": list(timeline.pauses),
                "augmentation": described,
            }
        )
    return out


def _offsets(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _concat(
    records: list[dict[str, Any]], key: str, empty: tuple[int, ...], dtype: type
) -> np.ndarray:
    if not records:
        return np.zeros(empty, dtype=dtype)
    return np.concatenate([r[key] for r in records]).astype(dtype, copy=False)


def _times(spans: list[Any]) -> np.ndarray:
    """(n, 2) float64 start/end seconds."""
    return np.array(spans, dtype=np.float64).reshape(-1, 2)


def _write_split(path: Path, records: list[dict[str, Any]]) -> None:
    """All records of a split as concatenated arrays plus offsets in one .npz."""
    frames = [len(r["motion"]) for r in records]
    phonemes = [r["phonemes"] for r in records]
    pauses = [r["pauses"] for r in records]
    has_audio = all(r["audio"] is not None for r in records) and bool(records)
    arrays: dict[str, np.ndarray] = {
        "id": np.array([r["id"] for r in records], dtype=str),
        "text": np.array([r["text"] for r in records], dtype=str),
        "voice": np.array([r["voice"] for r in records], dtype=str),
        "rate": np.array([r["rate"] for r in records], dtype=np.int32),
        "pitch": np.array([r["pitch"] for r in records], dtype=np.int32),
        "augmentation": np.array([r["augmentation"] for r in records], dtype=str),
        "frame_offsets": _offsets(frames),
        "mel": _concat(records, "mel", (0, N_MELS), np.float16),
        "motion": _concat(records, "motion", (0, MOTION_DIM), np.float32),
        "speech_mask": _concat(records, "speech_mask", (0,), np.bool_),
        "phoneme_offsets": _offsets([len(p) for p in phonemes]),
        "phoneme_ipa": np.array([x[0] for p in phonemes for x in p], dtype=str),
        "phoneme_times": _times([x[1:] for p in phonemes for x in p]),
        "pause_offsets": _offsets([len(p) for p in pauses]),
        "pause_times": _times([x for p in pauses for x in p]),
    }
    if has_audio:
        arrays["audio"] = np.concatenate([r["audio"] for r in records])
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, allow_pickle=False, **arrays)
    tmp.replace(path)


def _run(jobs: list[_Job], workers: int, progress: bool) -> Iterator[list[dict[str, Any]]]:
    """Records of each job in order, from a process pool when ``workers > 1``."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="motion dataset", unit="utt", disable=not progress)
    try:
        if workers <= 1:
            for job in jobs:
                yield make_utterances(job)
                bar.update()
            return
        # spawn: each worker loads its own libespeak-ng (it is not re-entrant, nor fork-safe).
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for records in pool.imap(make_utterances, jobs, chunksize=8):
                yield records
                bar.update()
    finally:
        bar.close()


def _read_manifest(out_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data


def _info(out_dir: Path, manifest: dict[str, Any], reused: bool) -> DatasetInfo:
    return DatasetInfo(
        out_dir=out_dir,
        seed=int(manifest["params"]["seed"]),
        counts=dict(manifest["counts"]),
        hours=dict(manifest["hours"]),
        voices={k: list(v) for k, v in manifest["voices"].items()},
        build_seconds=float(manifest["build_seconds"]),
        reused=reused,
        params=dict(manifest["params"]),
    )


def build_dataset(
    out_dir: Path,
    *,
    n_train: int = 2400,
    n_val: int = 200,
    n_test: int = 200,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    train_copies: int = 1,
    train_audio: bool = False,
    force: bool = False,
    piper_share: float = 0.0,
    splits: tuple[Split, ...] = SPLITS,
) -> DatasetInfo:
    """Generate (or reuse, if the manifest matches) the three splits under ``out_dir``.

    Train utterances are augmented, ``train_copies`` times each with different
    augmentations and prior draws; val and test are clean. ``train_audio`` also stores
    the (augmented) train audio, which is large. ``piper_share`` of the utterances (of
    every split) are spoken by the embedded Piper voice instead of espeak-ng. ``splits``
    builds only those (with the same sentences as a full build, e.g. a test set).
    """
    out_dir = Path(out_dir)
    params = _params(n_train, n_val, n_test, seed, train_copies, train_audio, piper_share)
    if tuple(splits) != SPLITS:
        params["splits"] = list(splits)
    manifest = _read_manifest(out_dir)
    if (
        not force
        and manifest is not None
        and manifest.get("params") == params
        and all((out_dir / f"{s}.npz").is_file() for s in splits)
    ):
        return _info(out_dir, manifest, reused=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # a half-built dataset must never look valid
    start = time.perf_counter()
    jobs = _jobs(n_train, n_val, n_test, seed, train_copies, train_audio, piper_share)
    jobs = [job for job in jobs if job.split in splits]
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in splits}
    for job, records in zip(jobs, _run(jobs, workers, progress), strict=True):
        by_split[job.split] += records
    for split, records in by_split.items():
        _write_split(out_dir / f"{split}.npz", records)
    manifest = {
        "params": params,
        "counts": {s: len(r) for s, r in by_split.items()},
        "hours": {
            s: round(sum(len(x["motion"]) for x in r) / MOTION_FPS / 3600.0, 4)
            for s, r in by_split.items()
        },
        "voices": {s: sorted({x["voice"] for x in r}) for s, r in by_split.items()},
        "build_seconds": round(time.perf_counter() - start, 2),
        "files": {s: (out_dir / f"{s}.npz").stat().st_size for s in splits},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return _info(out_dir, manifest, reused=False)


def load_split(out_dir: Path, split: str) -> list[Utterance]:
    """Every utterance of ``split`` ("train", "val" or "test") from a built dataset."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = Path(out_dir) / f"{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"no {split} split at {path}; build it first with build_dataset({str(out_dir)!r})"
        )
    with np.load(path) as z:
        a = {k: z[k] for k in z.files}
    fo, po, qo = a["frame_offsets"], a["phoneme_offsets"], a["pause_offsets"]
    out = []
    for i in range(len(a["id"])):
        f0, f1 = int(fo[i]), int(fo[i + 1])
        p0, p1 = int(po[i]), int(po[i + 1])
        q0, q1 = int(qo[i]), int(qo[i + 1])
        audio = None
        if "audio" in a:
            audio = a["audio"][f0 * SAMPLES_PER_FRAME : f1 * SAMPLES_PER_FRAME].copy()
        out.append(
            Utterance(
                id=str(a["id"][i]),
                split=split,
                text=str(a["text"][i]),
                voice=str(a["voice"][i]),
                rate=int(a["rate"][i]),
                pitch=int(a["pitch"][i]),
                mel=a["mel"][f0 * MELS_PER_FRAME : f1 * MELS_PER_FRAME].astype(np.float32),
                motion=a["motion"][f0:f1].copy(),
                speech_mask=a["speech_mask"][f0:f1].copy(),
                audio=audio,
                phonemes=[
                    (str(ipa), float(s), float(e))
                    for ipa, (s, e) in zip(
                        a["phoneme_ipa"][p0:p1], a["phoneme_times"][p0:p1], strict=True
                    )
                ],
                pauses=[(float(s), float(e)) for s, e in a["pause_times"][q0:q1]],
                augmentation=str(a["augmentation"][i]),
            )
        )
    return out


def info_dict(info: DatasetInfo) -> dict[str, Any]:
    """A JSON-friendly view of ``info``."""
    d = asdict(info)
    d["out_dir"] = str(info.out_dir)
    return d
