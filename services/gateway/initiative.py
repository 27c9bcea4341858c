"""The agent speaking on its own: a greeting when the audio connects, nudges when nobody speaks.

Both come from the agent's config and are off unless set. The greeting is spoken once, when a
session's audio first connects to a conversation that is still empty (a resumed conversation
is not greeted again). A nudge is spoken after `idle_nudge.after_s` of quiet: no turn in flight,
no reply playing, nobody speaking; at most `max_nudges` in a row, the count starting again when
the user says or types something. The words go to the session as a turn of `source: agent`:
spoken as they are (no language model) and kept in history as the agent's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from services.common.messages import AgentConfig

CHECK_S = 0.25  # how often the quiet is looked at


class Host(Protocol):
    """What the agent's initiative needs of the live session."""

    @property
    def has_voice(self) -> bool: ...
    def quiet(self) -> bool: ...  # no turn in flight, no reply playing, nobody speaking
    async def say(self, text: str) -> None: ...


class Initiative:
    def __init__(self, agent: AgentConfig, host: Host, empty: bool) -> None:
        self.nudge = agent.idle_nudge
        self.host = host
        # greet when the audio connects, once, and only an empty conversation
        self.greeting = agent.greeting if empty else None
        self.nudges = 0  # said since the user last spoke
        self._quiet_since = time.monotonic()

    async def audio_connected(self) -> None:
        if self.greeting is not None:
            text, self.greeting = self.greeting, None
            await self.host.say(text)

    def user_spoke(self) -> None:
        self.nudges = 0
        self._quiet_since = time.monotonic()

    async def run(self) -> None:
        """Watch the quiet and nudge (a task for the session's life; returns when no nudge)."""
        nudge = self.nudge
        if nudge is None:
            return
        while True:
            await asyncio.sleep(CHECK_S)
            now = time.monotonic()
            if not (self.host.has_voice and self.host.quiet()):
                self._quiet_since = now
            elif now - self._quiet_since >= nudge.after_s and self.nudges < nudge.max_nudges:
                self.nudges += 1
                self._quiet_since = now
                await self.host.say(nudge.text)
