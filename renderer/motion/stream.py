"""MotionGenerator: streaming speech -> motion with MotionDiT, chunk by chunk, as audio arrives.

One generator follows one avatar's timeline of 25 fps frames. Audio pieces of any size
and rate go in with :meth:`MotionGenerator.push`; a chunk of ``cfg.chunk`` frames can be
computed as soon as the audio under it plus ``cfg.lookahead`` frames (and the 15 ms tail
of the last mel window) is there, and :meth:`take` hands frames out in order, computing
chunks lazily. The generator never needs an utterance's length.

:meth:`end` closes an utterance: from then on the timeline is silence, so the mouth
settles closed and :meth:`take` keeps producing idle/listening motion (blinks, head
sway) for as long as it is asked. New audio after an end starts right after the
utterance's last frame, or at the next frame to hand out if that is later: idle frames
computed ahead but not yet taken are dropped, so speech never queues behind silence.
:meth:`drop_pending` (interruption) forgets everything not yet taken; the history the
model conditions on is always the frames actually taken.

Each chunk draws its noise from one ``torch.Generator`` seeded at construction, so a
generator fed the same audio produces the same motion however the audio is split.

Silence gate: on a frame whose own 40 ms of audio is silent (below -60 dBFS, or below
-50 dBFS after a frame that was too), the mouth channels are halved toward the rest pose.
A frame's log-mel features reach 15 ms into the next frame, so the model cannot tell a
frame that ends just before a word from one that holds its onset, and sometimes opens
the jaw a frame early; the gate keeps the mouth from opening before there is any sound.
``visage motion eval`` reports the model with and without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import soxr
import torch

from renderer.config import MAX_MOTION_STEPS
from renderer.motion.batch import ChunkJob, sample_chunks
from renderer.motion.features import HOP, SAMPLE_RATE, WIN, log_mel
from renderer.motion.model import MotionDiT
from renderer.motion.sampler import FlowSampler, flow_times
from renderer.motion.space import MOTION_DIM, MOTION_FPS

SAMPLES_PER_FRAME = SAMPLE_RATE // MOTION_FPS  # 640 samples at 16 kHz
MEL_TAIL = WIN - HOP  # the last mel window of a frame reaches 240 samples past it
SILENCE_RMS = 10 ** (-60 / 20)  # a frame's own audio below -60 dBFS is silent
# So is a frame below -50 dBFS that follows one: the breath Piper draws before a word
# (-58 to -50 dBFS) ends a pause, where the model would open the jaw a frame early; a lone
# quiet frame inside a word (a stop's closure) keeps its mouth.
BREATH_RMS = 10 ** (-50 / 20)


class _Track:
    """Growable rows indexed by absolute position; old rows can be forgotten cheaply."""

    def __init__(self, row_shape: tuple[int, ...], capacity: int = 256) -> None:
        self._data = np.zeros((capacity, *row_shape), dtype=np.float32)
        self._off = 0  # index in _data of row ``start``
        self.start = 0
        self.end = 0

    def view(self, a: int, b: int) -> np.ndarray:
        """Rows [a, b) (absolute); a view, valid until the next append."""
        if a < self.start or b > self.end or a > b:
            raise IndexError(f"rows [{a}, {b}) outside the kept [{self.start}, {self.end})")
        return self._data[self._off + a - self.start : self._off + b - self.start]

    def append(self, rows: np.ndarray) -> None:
        """Add rows at the end."""
        n = len(rows)
        kept = self.end - self.start
        if self._off + kept + n > len(self._data):
            if kept + n > len(self._data) // 2:  # grow; otherwise compacting is enough
                grown = np.zeros((2 * (kept + n), *self._data.shape[1:]), dtype=np.float32)
                grown[:kept] = self._data[self._off : self._off + kept]
                self._data = grown
            else:
                self._data[:kept] = self._data[self._off : self._off + kept]
            self._off = 0
        self._data[self._off + kept : self._off + kept + n] = rows
        self.end += n

    def pad_to(self, end: int) -> None:
        """Append zero rows up to absolute position ``end``."""
        if end > self.end:
            self.append(np.zeros((end - self.end, *self._data.shape[1:]), dtype=np.float32))

    def truncate(self, end: int) -> None:
        """Forget rows from ``end`` on."""
        self.end = max(min(self.end, end), self.start)

    def forget_before(self, pos: int) -> None:
        """Forget rows before ``pos`` (the space is reused on a later append)."""
        if pos >= self.end:  # nothing kept: the track restarts empty at ``pos``
            self.start = self.end = pos
            self._off = 0
        elif pos > self.start:
            self._off += pos - self.start
            self.start = pos


class MotionGenerator:
    """Streaming audio -> motion for one avatar timeline; see the module docstring."""

    def __init__(
        self,
        model: MotionDiT,
        *,
        steps: int = 4,
        seed: int = 0,
        shift: float = 1.0,
        silence_gate: bool = True,
    ) -> None:
        self.model = model.eval()
        self.silence_gate = silence_gate
        self.cfg = cfg = model.cfg
        self.steps = steps
        self.seed = seed
        self.shift = shift
        flow_times(steps, shift)  # a bad steps or shift fails here, not at the first chunk
        self._rng = torch.Generator().manual_seed(seed)
        silence = log_mel(np.zeros(SAMPLES_PER_FRAME + MEL_TAIL, dtype=np.float32))
        self._silence = torch.from_numpy(silence[:4].reshape(-1))  # (A,) a silent frame
        self._mean = model.motion_mean.detach().float().cpu()  # (M,)
        self._std = model.motion_std.detach().float().cpu()  # (M,)
        self._epoch = 0  # bumped whenever motion not yet taken is forgotten
        self._pcm = _Track((), capacity=SAMPLE_RATE * 4)  # timeline audio, 16 kHz
        self._feats = _Track((cfg.audio_dim,))  # per-frame log-mel features
        self._motion = _Track((cfg.motion_dim,))  # generated frames (space units)
        self._resampler: soxr.ResampleStream | None = None
        self._resampler_rate = 0
        self._taken = 0  # frames handed out
        self._open = False  # an utterance is streaming in
        self._seg_start = 0  # first frame of the current utterance
        self._end_frame = 0  # closed: the timeline is silence from this frame on
        self._last = np.zeros(MOTION_DIM, dtype=np.float32)  # last frame handed out
        self.chunks_computed = 0

    def set_steps(self, steps: int) -> None:
        """Sample the following chunks with ``steps`` sampler steps (1 to ``MAX_MOTION_STEPS``).

        Each chunk's noise is drawn the same way whatever the steps, so the stream's seeding
        is unchanged; the renderer's degradation ladder trades steps for time this way.
        """
        if not 1 <= steps <= MAX_MOTION_STEPS:
            raise ValueError(f"steps must be between 1 and {MAX_MOTION_STEPS}, got {steps}")
        self.steps = steps

    @property
    def sampler(self) -> FlowSampler:
        """The sampler the next chunk is drawn with (its steps follow ``set_steps``)."""
        return FlowSampler(self.model, steps=self.steps, shift=self.shift)

    # ----------------------------------------------------------------- input side

    @property
    def frames_taken(self) -> int:
        """Frames handed out so far (the timeline position)."""
        return self._taken

    @property
    def frames_generated(self) -> int:
        """Frames computed so far (handed out or pending)."""
        return self._motion.end

    @property
    def is_open(self) -> bool:
        """True between the first ``push`` of an utterance and its ``end``."""
        return self._open

    def push(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        """Add a piece of mono audio (int16, or float in [-1, 1]) at any sample rate."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        x = np.asarray(pcm).reshape(-1)
        if x.dtype == np.int16:
            x = x.astype(np.float32) * (1.0 / 32768.0)
        elif not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"PCM must be int16 or float, got {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if not self._open:
            self._reopen(max(self._end_frame, self._taken))
        if sample_rate != SAMPLE_RATE:
            if self._resampler is None or self._resampler_rate != sample_rate:
                self._flush_resampler()
                self._resampler = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, "float32")
                self._resampler_rate = sample_rate
            x = self._resampler.resample_chunk(x)
        else:
            self._flush_resampler()
        if x.size:
            self._pcm.append(x)

    def end(self, n_frames: int | None = None) -> None:
        """The utterance is complete; it spans ``n_frames`` frames (default: its audio,
        rounded up to whole frames). Silence follows it."""
        if not self._open:
            return
        self._flush_resampler()
        if n_frames is None:
            n_frames = math.ceil(
                (self._pcm.end - self._seg_start * SAMPLES_PER_FRAME) / SAMPLES_PER_FRAME
            )
        self._end_frame = self._seg_start + max(n_frames, 0)
        self._set_audio_end(self._end_frame)
        self._open = False

    def drop_pending(self) -> None:
        """Interruption: forget all audio and motion not yet handed out; silence follows.

        The one place where the generator drops pending work. The next chunk continues
        from the frames actually taken.
        """
        self._resampler = None
        self._rewind(self._taken)
        self._end_frame = self._taken
        self._open = False

    # ---------------------------------------------------------------- output side

    def frames_ready(self) -> int:
        """Frames that ``take`` can hand out now without more audio.

        While an utterance streams in, that is the pending frames plus every chunk whose
        audio and lookahead are in; once it has ended, the frames up to its end
        (silence beyond can always be generated on request).
        """
        if self._open:
            cfg = self.cfg
            usable = (self._pcm.end - MEL_TAIL) // SAMPLES_PER_FRAME - cfg.lookahead
            chunks = max(usable - self._motion.end, 0) // cfg.chunk
            return self._motion.end + chunks * cfg.chunk - self._taken
        return max(self._motion.end, self._end_frame) - self._taken

    def can_take(self) -> bool:
        """True when at least one frame can be handed out now."""
        return not self._open or self.frames_ready() > 0

    def take(self, n: int | None = None) -> np.ndarray:
        """Hand out up to ``n`` frames (default: all ready), (k, MOTION_DIM) float32.

        After ``end`` (or before any audio) the timeline is silence, so any ``n`` is met.
        """
        want = self.frames_ready() if n is None else n
        if self._open:
            want = min(want, self.frames_ready())
        while self._motion.end < self._taken + want:
            self._compute_chunk()
        out = self._motion.view(self._taken, self._taken + want).copy()
        self._taken += want
        if want:
            self._last = out[-1].copy()
        self._forget_old()
        return out

    def next_job(self) -> ChunkJob | None:
        """The inputs of the chunk the next frame to hand out needs, if its audio is in.

        The job can be sampled anywhere (another thread, a batch with other sessions'
        jobs: :func:`renderer.motion.batch.sample_chunks`) and handed back with
        :meth:`commit`. None when that frame's motion is already made or its audio is not
        in yet. Taking the job draws the chunk's noise.
        """
        if self._motion.end > self._taken or (self._open and self.frames_ready() <= 0):
            return None
        return self._cut_job()

    def is_current(self, job: ChunkJob) -> bool:
        """Whether ``job`` is still the next chunk (the timeline has not moved on)."""
        return job.epoch == self._epoch and job.start == self._motion.end

    def commit(self, job: ChunkJob, motion: np.ndarray) -> bool:
        """Add a sampled chunk (C, MOTION_DIM); False (and nothing changes) when the
        timeline moved on since the job was cut (an interruption, a new utterance)."""
        if not self.is_current(job):
            return False
        self._motion.append(motion)
        self.chunks_computed += 1
        return True

    def last_frame(self) -> np.ndarray:
        """The last frame handed out (neutral before the first)."""
        return self._last

    # ------------------------------------------------------------------ internals

    def _reopen(self, frame: int) -> None:
        """Start a new utterance at ``frame``: drop what was computed from there on."""
        self._rewind(frame)
        self._seg_start = frame
        self._open = True

    def _rewind(self, frame: int) -> None:
        """Forget motion and features from ``frame`` on; audio from there on is silence."""
        self._epoch += 1  # a chunk being sampled for the forgotten frames is stale
        self._motion.truncate(frame)
        self._feats.truncate(frame)
        self._set_audio_end(frame)

    def _set_audio_end(self, frame: int) -> None:
        self._pcm.truncate(frame * SAMPLES_PER_FRAME)
        self._pcm.pad_to(frame * SAMPLES_PER_FRAME)

    def _flush_resampler(self) -> None:
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            self._resampler = None
            if tail.size:
                self._pcm.append(tail)

    def _features(self, end: int) -> None:
        """Compute the log-mel features of frames up to ``end`` (silence past the audio)."""
        start = self._feats.end
        if end <= start:
            return
        a, b = start * SAMPLES_PER_FRAME, end * SAMPLES_PER_FRAME + MEL_TAIL
        have = min(self._pcm.end, b)
        pcm = np.zeros(b - a, dtype=np.float32)
        if have > a:
            pcm[: have - a] = self._pcm.view(a, have)
        mel = log_mel(pcm)[: 4 * (end - start)]  # (4n, 80)
        self._feats.append(mel.reshape(end - start, -1))  # (n, 320)

    def _compute_chunk(self) -> None:
        """Generate the next chunk of frames from the audio window and the history."""
        job = self._cut_job()
        self.commit(job, sample_chunks(self.model, [job])[0])

    def _cut_job(self) -> ChunkJob:
        """The model inputs of the next chunk: audio window, history, noise."""
        cfg = self.cfg
        g = self._motion.end
        k, c, la = cfg.history, cfg.chunk, cfg.lookahead
        self._features(g + c + la)
        first = max(g - k, self._feats.start, 0)
        pad = first - (g - k)  # history frames before the stream began (or forgotten)
        audio = torch.empty(cfg.window, cfg.audio_dim)  # (S, A)
        audio[:pad] = self._silence
        audio[pad:] = torch.from_numpy(self._feats.view(first, g + c + la))
        hist_first = max(first, self._motion.start)
        hpad = hist_first - (g - k)
        history = torch.zeros(k, cfg.motion_dim)  # (K, M) model units
        valid = torch.zeros(k, dtype=torch.bool)  # (K,)
        emitted = torch.from_numpy(self._motion.view(hist_first, g))
        history[hpad:] = (emitted - self._mean) / self._std
        valid[hpad:] = True
        noise = torch.randn((c, cfg.motion_dim), generator=self._rng)  # (C, M)
        if self.silence_gate:
            silent = torch.from_numpy(self._silent_frames(g, c))  # (C,)
        else:
            silent = torch.zeros(c, dtype=torch.bool)
        return ChunkJob(
            g, self._epoch, self.steps, self.shift, audio, history, valid, noise, silent
        )

    def _silent_frames(self, first: int, n: int) -> np.ndarray:
        """(n,) bool: frames first.. whose own audio is silent, or a breath after a quiet
        frame (see ``BREATH_RMS``; no audio counts as silent)."""
        a, b = (first - 1) * SAMPLES_PER_FRAME, (first + n) * SAMPLES_PER_FRAME
        pcm = np.zeros(b - a, dtype=np.float32)  # the frame before too: (n + 1) frames
        lo, hi = max(a, self._pcm.start), min(b, self._pcm.end)
        if hi > lo:
            pcm[lo - a : hi - a] = self._pcm.view(lo, hi)
        rms = np.sqrt(np.mean(np.square(pcm.reshape(n + 1, SAMPLES_PER_FRAME)), axis=1))
        quiet = rms < BREATH_RMS
        return (rms[1:] < SILENCE_RMS) | (quiet[1:] & quiet[:-1])

    def _forget_old(self) -> None:
        keep = self._taken - self.cfg.history
        self._motion.forget_before(keep)
        self._feats.forget_before(keep)
        self._pcm.forget_before(self._taken * SAMPLES_PER_FRAME)


def generate(
    model: MotionDiT,
    pcm: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    steps: int = 4,
    seed: int = 0,
    piece_s: float | None = None,
    rng: np.random.Generator | None = None,
    silence_gate: bool = True,
) -> np.ndarray:
    """Motion (T, MOTION_DIM) for a whole recording, streamed exactly as in a live session.

    ``T`` is the audio's length in frames, rounded up. The audio goes in as pieces of
    ``piece_s`` seconds, or of random sizes (10-200 ms) drawn from ``rng``, or whole.
    """
    gen = MotionGenerator(model, steps=steps, seed=seed, silence_gate=silence_gate)
    x = np.asarray(pcm).reshape(-1)
    frames = [gen.take()]
    pos = 0
    while pos < x.size:
        if piece_s is not None:
            size = max(1, round(piece_s * sample_rate))
        elif rng is not None:
            size = int(rng.integers(sample_rate // 100, sample_rate // 5 + 1))
        else:
            size = x.size
        gen.push(x[pos : pos + size], sample_rate)
        frames.append(gen.take())
        pos += size
    gen.end()
    total = math.ceil(x.size * MOTION_FPS / sample_rate)
    frames.append(gen.take(max(total - gen.frames_taken, 0)))
    return np.concatenate(frames)[:total]


def generate_batch(
    model: MotionDiT,
    recordings: Sequence[np.ndarray],
    sample_rate: int = SAMPLE_RATE,
    *,
    steps: int = 4,
    seeds: Sequence[int] | None = None,
    piece_s: float = 0.02,
    silence_gate: bool = True,
) -> list[np.ndarray]:
    """Motion for several recordings streamed side by side, as several live sessions.

    Each recording has its own generator (seeded ``seeds[i]``, default ``i``) and is fed in
    ``piece_s`` pieces; every round, the chunks that are due in all of them are sampled in
    one batch (:func:`~renderer.motion.batch.sample_chunks`). Recording ``i`` gets the
    motion ``generate(model, recordings[i], seed=seeds[i], piece_s=piece_s)`` gives.
    """
    seeds = list(range(len(recordings))) if seeds is None else list(seeds)
    if len(seeds) != len(recordings):
        raise ValueError(f"{len(recordings)} recordings but {len(seeds)} seeds")
    gens = [
        MotionGenerator(model, steps=steps, seed=seed, silence_gate=silence_gate) for seed in seeds
    ]
    audio = [np.asarray(x).reshape(-1) for x in recordings]
    outs: list[list[np.ndarray]] = [[] for _ in gens]
    piece = max(1, round(piece_s * sample_rate))
    for pos in range(0, max((x.size for x in audio), default=0), piece):
        for gen, x in zip(gens, audio, strict=True):
            if pos < x.size:
                gen.push(x[pos : pos + piece], sample_rate)
        _take_batched(model, gens, [gen.frames_ready() for gen in gens], outs)
    totals = [math.ceil(x.size * MOTION_FPS / sample_rate) for x in audio]
    for gen in gens:
        gen.end()
    wants = [max(total - gen.frames_taken, 0) for gen, total in zip(gens, totals, strict=True)]
    _take_batched(model, gens, wants, outs)
    return [
        np.concatenate(out)[:total] if out else np.zeros((0, MOTION_DIM), np.float32)
        for out, total in zip(outs, totals, strict=True)
    ]


def _take_batched(
    model: MotionDiT, gens: list[MotionGenerator], wants: list[int], outs: list[list[np.ndarray]]
) -> None:
    """Take ``wants[i]`` frames from each generator, sampling due chunks in batches."""
    left = list(wants)
    while True:
        jobs: list[tuple[MotionGenerator, ChunkJob]] = []
        for i, gen in enumerate(gens):
            made = gen.frames_generated - gen.frames_taken
            if left[i] and made > 0:
                outs[i].append(gen.take(min(left[i], made)))
                left[i] -= len(outs[i][-1])
            job = gen.next_job() if left[i] else None
            if job is not None:
                jobs.append((gen, job))
        if not jobs:
            return
        for (gen, job), motion in zip(
            jobs, sample_chunks(model, [j for _, j in jobs]), strict=True
        ):
            gen.commit(job, motion)
