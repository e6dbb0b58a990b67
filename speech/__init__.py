"""Speech engines with no pipecat inside: espeak-ng synthesis, pocketsphinx recognition,
and the phoneme marks that travel with synthesised audio.

Both ``pipelines/`` (the TTS and STT stages) and ``renderer/`` (training data, phoneme
motion) import from here, so neither depends on the other.
"""
