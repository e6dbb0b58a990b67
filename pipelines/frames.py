"""Frames Visage adds to pipecat's set."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipecat.frames.frames import DataFrame, OutputImageRawFrame, SystemFrame, TTSAudioRawFrame

from speech.phonemes import PhonemeMark


@dataclass
class PhonemeAudioRawFrame(TTSAudioRawFrame):
    """TTS audio that carries the phonemes spoken in it.

    Everything downstream treats it as ordinary TTS audio; the avatar stage also reads
    ``phonemes`` (offsets relative to the start of this frame's audio) to shape the mouth.
    """

    phonemes: list[PhonemeMark] = field(default_factory=list)


@dataclass
class ReplyAudioHoldFrame(SystemFrame):
    """The avatar paused its reply (the user may be talking over it).

    The output transport takes back the reply audio it has queued but not sent, in whole
    avatar frames of ``frame_samples``, and answers upstream with a
    :class:`ReplyAudioReturnedFrame`, so the listener stops hearing the reply at once and
    nothing of it is lost if it resumes. ``epoch`` ties the answer to this pause.
    """

    frame_samples: int = 0
    sample_rate: int = 0
    epoch: int = 0


@dataclass
class ReplyAudioReturnedFrame(SystemFrame):
    """Upstream answer to :class:`ReplyAudioHoldFrame`: how many frames were taken back."""

    frames: int = 0
    epoch: int = 0


@dataclass
class AvatarImageFrame(DataFrame):
    """An avatar image, sent in line with the reply audio.

    It is not a media frame, so pipecat's output transport queues it through its sync path
    (``handle_sync_frame``): it waits in the audio queue behind the audio pushed before it
    (its own frame's slice) and reaches the transport's ``write_transport_frame`` as that
    audio goes out. The face is seen with the voice it was drawn for, however much audio
    the outgoing track holds. Like any data frame, an interruption drops it.
    """

    image: OutputImageRawFrame
