"""The synthetic motion dataset: alignment of visemes, pauses, splits, prior, augmentation."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from renderer.motion.data import augment, build_dataset, load_split
from renderer.motion.data.sentences import held_out_words, sentences
from renderer.motion.data.synth import Spoken, Timeline, speak
from renderer.motion.data.targets import (
    SAMPLES_PER_FRAME,
    _phoneme_segments,
    make_targets,
    mouth_track,
    n_frames_for,
)
from renderer.motion.data.voices import split_voices
from renderer.motion.features import MELS_PER_FRAME, N_MELS, SAMPLE_RATE
from renderer.motion.space import IDX, MOTION_DIM
from renderer.motion.visemes import VISEME_CHANNELS
from renderer.motion.visemes import _units as viseme_units

JAW, CLOSE, PUCKER = (VISEME_CHANNELS.index(n) for n in ("jawOpen", "mouthClose", "mouthPucker"))
_VOWEL_LETTERS = set("iɪeɛæaɑɒɔoʊuʌəɐɜɚɝ")


@pytest.fixture(scope="module")
def spoken() -> list[Spoken]:
    """Real espeak-ng utterances over train and test voices, rates and pitches."""
    from renderer.motion.data.voices import pick_voice

    texts = list(itertools.islice(sentences(11, "train"), 20))
    texts += list(itertools.islice(sentences(11, "test"), 10))
    out = []
    for i, text in enumerate(texts):
        rng = np.random.default_rng(i)
        out.append(speak(text, pick_voice(rng, "train" if i < 20 else "test"), rng))
    return out


def _targets(span_label: str) -> np.ndarray:
    """A phoneme's strongest target per viseme channel (diphthongs: over their parts)."""
    return np.max([s.target for s in _phoneme_segments(span_label, 0.0, 1.0)], axis=0)


def _neighbour_targets(tl: Timeline, k: int) -> list[np.ndarray]:
    """Targets of the two phonemes each side, a silence (zeros) cutting the chain."""
    ph = tl.phonemes
    out = []
    for step in (-1, 1):
        j = k
        for _ in range(2):
            nxt = j + step
            touching = 0 <= nxt < len(ph) and (
                abs(ph[nxt].end - ph[j].start) < 1e-9 or abs(ph[j].end - ph[nxt].start) < 1e-9
            )
            if not touching:
                out.append(np.zeros(len(VISEME_CHANNELS)))
                break
            out.append(_targets(ph[nxt].label))
            j = nxt
    return out


def test_visemes_peak_inside_their_phoneme(spoken: list[Spoken]) -> None:
    # Where a phoneme's target stands out from its neighbours (open vowels on the jaw,
    # rounded sounds on pucker), the track's peak around it lies inside its span.
    results: dict[int, list[bool]] = {JAW: [], PUCKER: []}
    for utt in spoken:
        tl = utt.timeline
        times = np.arange(0.0, tl.duration, 0.001)
        track = mouth_track(tl, times)
        for k, span in enumerate(tl.phonemes):
            units = viseme_units(span.label)
            if not units:
                continue
            own, others = _targets(span.label), _neighbour_targets(tl, k)
            checks = []
            if units[0][0] in _VOWEL_LETTERS:
                checks.append(JAW)
            if units[0] in ("u", "w", "ʊ", "o"):
                checks.append(PUCKER)
            for ch in checks:
                if own[ch] < max(o[ch] for o in others) + 0.15:
                    continue  # not a local peak of the targets themselves
                window = (times >= span.start - 0.06) & (times <= span.end + 0.06)
                peak_t = times[window][np.argmax(track[window, ch])]
                results[ch].append(span.start - 0.0015 <= peak_t <= span.end + 0.0015)
    assert len(results[JAW]) > 100 and len(results[PUCKER]) > 20
    # Very short vowels squeezed between strong neighbours may undershoot (that is
    # coarticulation); nearly all must peak in their own span.
    assert np.mean(results[JAW]) >= 0.97, np.mean(results[JAW])
    assert np.mean(results[PUCKER]) >= 0.95, np.mean(results[PUCKER])


def test_bilabials_close_the_lips_fully(spoken: list[Spoken]) -> None:
    count = 0
    for utt in spoken:
        tl = utt.timeline
        for span in tl.phonemes:
            if viseme_units(span.label)[:1] in (("p",), ("b",), ("m",)):
                times = np.linspace(span.start, span.end, 9)
                assert mouth_track(tl, times)[:, CLOSE].max() >= 0.99, span
                count += 1
    assert count > 30


def test_frames_follow_phonemes(spoken: list[Spoken]) -> None:
    # At 25 fps, for vowels at least two frames long the jaw's frame peak is in the span.
    hits = []
    for i, utt in enumerate(spoken):
        n = n_frames_for(len(utt.audio))
        jaw = make_targets(utt.timeline, n, np.random.default_rng(i)).motion[:, IDX["jawOpen"]]
        for k, span in enumerate(utt.timeline.phonemes):
            if span.duration < 0.08 or viseme_units(span.label)[:1] not in (("a",), ("ɑ",), ("æ",)):
                continue
            if (
                _targets(span.label)[JAW]
                < max(o[JAW] for o in _neighbour_targets(utt.timeline, k)) + 0.15
            ):
                continue
            lo, hi = int(span.start * 25) - 2, int(span.end * 25) + 3
            peak = lo + int(np.argmax(jaw[lo:hi]))
            hits.append(span.start - 0.04 <= (peak + 0.5) / 25 <= span.end + 0.04)
    assert hits and np.mean(hits) >= 0.95


def test_pauses_close_the_mouth_and_silence_is_marked(spoken: list[Spoken]) -> None:
    checked = 0
    for i, utt in enumerate(spoken):
        n = n_frames_for(len(utt.audio))
        t = make_targets(utt.timeline, n, np.random.default_rng(i))
        assert t.motion.shape == (n, MOTION_DIM) and t.motion.dtype == np.float32
        for start, end in t.pauses:
            if end - start < 0.3:
                continue
            f0, f1 = int(np.ceil((start + 0.1) * 25)), int(np.floor((end - 0.1) * 25))
            if f1 > f0:
                assert t.motion[f0:f1, IDX["jawOpen"]].max() <= 0.05
                assert not t.speech_mask[f0:f1].any()
                checked += 1
        # Leading and trailing silence of 0.3-1.0 s: the mask is off there.
        assert not t.speech_mask[:7].any() and not t.speech_mask[-7:].any()
        assert t.speech_mask.any()
    assert checked >= 2 * len(spoken)


def test_jaw_is_deterministic_and_prior_is_seeded(spoken: list[Spoken]) -> None:
    utt = spoken[0]
    n = n_frames_for(len(utt.audio))
    a = make_targets(utt.timeline, n, np.random.default_rng(1)).motion
    b = make_targets(utt.timeline, n, np.random.default_rng(2)).motion
    c = make_targets(utt.timeline, n, np.random.default_rng(1)).motion
    mouth = [IDX[n] for n in VISEME_CHANNELS]
    np.testing.assert_array_equal(a[:, mouth], b[:, mouth])  # no randomness on the mouth
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a[:, IDX["headYaw"]], b[:, IDX["headYaw"]])


def test_test_split_voices_and_sentences_are_unseen() -> None:
    assert not set(split_voices("test")) & set(split_voices("train"))
    assert set(split_voices("val")) == set(split_voices("train"))
    train = set(itertools.islice(sentences(0, "train"), 3000))
    test = list(itertools.islice(sentences(0, "test"), 300))
    assert not train & set(test)
    assert all(held_out_words(s) for s in test)  # each holds a word train never uses
    assert not any(held_out_words(s) for s in itertools.islice(train, 500))


def test_sentence_generator_is_seeded() -> None:
    a = list(itertools.islice(sentences(5), 200))
    assert a == list(itertools.islice(sentences(5), 200))
    assert a != list(itertools.islice(sentences(6), 200))
    assert len(set(a)) == len(a)
    assert any("," in s for s in a) and any(s.endswith("?") for s in a)
    lengths = [len(s.split()) for s in a]
    assert min(lengths) <= 2 and max(lengths) >= 20


def test_blink_rate_and_head_motion_over_a_long_sample(spoken: list[Spoken]) -> None:
    blinks, frames = 0, 0
    speech, silence = [], []
    rng = np.random.default_rng(0)
    for _ in range(4):  # ~ several minutes of targets from the same timelines
        for utt in spoken:
            n = n_frames_for(len(utt.audio))
            t = make_targets(utt.timeline, n, rng)
            lid = t.motion[:, IDX["eyeBlinkLeft"]]
            np.testing.assert_array_equal(lid, t.motion[:, IDX["eyeBlinkRight"]])
            blinks += int(np.sum(np.diff((lid > 0.5).astype(int), prepend=0) == 1))
            frames += n
            head = t.motion[:, [IDX["headPitch"], IDX["headYaw"], IDX["headRoll"]]]
            speech.append(head[t.speech_mask])
            silence.append(head[~t.speech_mask])
            assert np.abs(head).max() <= 0.12 + 1e-6
            assert lid.max() <= 1.0
            # Every blink closes the eyes, except one the utterance's end cuts short.
            closing = np.flatnonzero(np.diff((lid > 0.01).astype(int), prepend=0, append=0))
            for start, stop in zip(closing[::2], closing[1::2], strict=True):
                assert stop == len(lid) or lid[start:stop].max() > 0.9, lid[start:stop]
    minutes = frames / 25 / 60
    assert minutes > 3
    assert 12 <= blinks / minutes <= 22, blinks / minutes
    sp, si = np.concatenate(speech).std(axis=0), np.concatenate(silence).std(axis=0)
    assert (sp > si).all() and (si > 0.004).all(), (sp, si)


def test_augmentation_keeps_audio_and_targets_in_step(spoken: list[Spoken]) -> None:
    utt = spoken[3]
    for seed in range(4):
        rng = np.random.default_rng(seed)
        aug = augment.draw(rng)
        audio, tl = augment.apply(utt.audio, utt.timeline, aug, rng)
        assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0
        assert abs(len(audio) / SAMPLE_RATE - tl.duration) < 1e-9
        assert abs(len(audio) - len(utt.audio) / aug.speed) <= 2
        ratio = tl.duration / utt.timeline.duration
        for before, after in zip(utt.timeline.phonemes, tl.phonemes, strict=True):
            assert after.start == pytest.approx(before.start * ratio)
        n = n_frames_for(len(audio))
        assert len(make_targets(tl, n, rng).motion) == n == len(audio) // SAMPLES_PER_FRAME
        # The speech is still where the timeline says: louder inside phonemes than in pauses.
        speech = np.concatenate(
            [audio[int(p.start * 16000) : int(p.end * 16000)] for p in tl.phonemes]
        )
        quiet = audio[: int(tl.pauses[0][1] * 16000) - 800]
        assert np.sqrt(np.mean(speech**2)) > 5 * np.sqrt(np.mean(quiet**2))


def test_tiny_dataset_round_trips(tmp_path: Path) -> None:
    info = build_dataset(tmp_path, n_train=6, n_val=2, n_test=2, progress=False)
    assert info.counts == {"train": 6, "val": 2, "test": 2} and not info.reused
    assert not set(info.voices["test"]) & set(split_voices("train"))
    splits = {s: load_split(tmp_path, s) for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [6, 2, 2]
    for split, utts in splits.items():
        for u in utts:
            t = u.n_frames
            assert u.mel.shape == (t * MELS_PER_FRAME, N_MELS) and u.mel.dtype == np.float32
            assert u.motion.shape == (t, MOTION_DIM) and u.speech_mask.shape == (t,)
            assert u.phonemes and all(s < e for _, s, e in u.phonemes)
            assert u.pauses[0][0] == 0.0
            if split == "train":
                assert u.audio is None and u.augmentation.startswith("speed=")
            else:
                assert u.audio is not None and len(u.audio) == t * SAMPLES_PER_FRAME
                assert u.augmentation == ""
    assert {u.text for u in splits["test"]}.isdisjoint({u.text for u in splits["train"]})
    # A second call with the same parameters reuses the cache; other parameters rebuild.
    again = build_dataset(tmp_path, n_train=6, n_val=2, n_test=2, progress=False)
    assert again.reused and again.counts == info.counts
    # Content is a function of the seed: sentences, voices and targets given timings agree.
    other = build_dataset(tmp_path / "b", n_train=6, n_val=2, n_test=2, progress=False)
    b = load_split(tmp_path / "b", "val")
    assert [(u.text, u.voice, u.rate, u.pitch) for u in b] == [
        (u.text, u.voice, u.rate, u.pitch) for u in splits["val"]
    ]
    assert other.counts == info.counts
    with pytest.raises(FileNotFoundError, match="build_dataset"):
        load_split(tmp_path / "missing", "train")
