"""Build a tiny, randomly initialised faster-whisper (CTranslate2) model folder, offline.

Its transcripts are gibberish; it exists so tests can drive the real faster-whisper
loading and decoding path without a model download. Needs ``transformers`` (test-only).

The tokenizer is a byte-level one made with ``tokenizers``: 256 byte tokens, then
Whisper's special tokens in Whisper's order, then the 1501 timestamp tokens that
CTranslate2's converter appends. faster-whisper only needs the special tokens by name
and ``timestamp_begin == <|notimestamps|> + 1``, so no real Whisper vocabulary (and no
openai-whisper/tiktoken download) is needed. Its vocabulary is far below the 51865
tokens of a multilingual model, so CTranslate2 treats it as English-only, like the
``*.en`` models.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

_SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]
_NUM_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|> in 20 ms steps
_SEED = 1234


def _build_tokenizer():  # -> transformers.WhisperTokenizerFast
    """Return a byte-level Whisper tokenizer: ids 0-255 are bytes, then the specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import WhisperTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # bytes_to_unicode order, so that token id == byte value for printable ASCII.
    byte_chars = sorted(alphabet, key=lambda c: _byte_of(c))
    vocab = {ch: i for i, ch in enumerate(byte_chars)}
    for token in _SPECIALS:
        vocab[token] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(_SPECIALS)
    return WhisperTokenizerFast(
        tokenizer_object=tok,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=_SPECIALS[1:],
    )


def _byte_of(char: str) -> int:
    """Invert GPT-2's bytes_to_unicode for one character."""
    code = ord(char)
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    if code in printable:
        return code
    return [b for b in range(256) if b not in printable][code - 256]


def build_tiny_whisper(dest: Path) -> Path:
    """Write a tiny random CTranslate2 Whisper model (int8) to ``dest`` and return it."""
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    tokenizer = _build_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _SPECIALS}
    vocab_size = len(tokenizer) + _NUM_TIMESTAMPS
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        suppress_tokens=[],
        begin_suppress_tokens=[ids["<|endoftext|>"]],
    )
    torch.manual_seed(_SEED)
    model = WhisperForConditionalGeneration(config).eval()
    gen = model.generation_config
    gen.lang_to_id = {"<|en|>": ids["<|en|>"]}
    gen.alignment_heads = [[0, 0], [0, 1]]
    gen.suppress_tokens = []
    gen.begin_suppress_tokens = [ids["<|endoftext|>"]]
    gen.no_timestamps_token_id = ids["<|notimestamps|>"]

    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="tiny-whisper-hf-") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # faster-whisper reads n_mels and friends from here; without it, defaults apply.
        Path(tmp, "preprocessor_config.json").write_text(
            json.dumps(
                {
                    "feature_size": 80,
                    "sampling_rate": 16000,
                    "hop_length": 160,
                    "chunk_length": 30,
                    "n_fft": 400,
                }
            )
        )
        if dest.exists():
            shutil.rmtree(dest)
        TransformersConverter(
            tmp, copy_files=["tokenizer.json", "preprocessor_config.json"]
        ).convert(str(dest), quantization="int8")
    return dest
