"""Transports: how a conversation's media and messages reach the caller.

``build_conversation`` takes any pipecat ``BaseTransport``; each module here adapts one of
pipecat's transports to the avatar (its video sent in step with its voice, reply audio
that can be taken back). ``smallwebrtc`` is the built-in one: aiortc, peer to peer, no
media server.
"""
