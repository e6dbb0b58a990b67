"""A caller in its own process, for killing mid-reply: ``python -m
tests.helpers.vanishing_caller URL`` connects, prints ``HEARING`` once the avatar's reply
is audible, then stays on the call until it is killed."""

from __future__ import annotations

import asyncio
import sys

from agent.client import AvatarClient

HEARD_S = 0.5  # seconds of the greeting to hear before saying so


async def main(url: str) -> None:
    """Call ``url`` and stay on the line."""
    client = AvatarClient(url)
    await client.connect()
    while client.received.audio_seconds() < HEARD_S:  # noqa: ASYNC110 (polls a counter)
        await asyncio.sleep(0.05)
    print("HEARING", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
