"""Admission: whether this replica can start one more reply soon enough.

A replica that generates one reply at a time (the embedded engine) queues what it claims: past
its capacity every session's first token slows without limit. So a reply claim is refused
(`busy`) when the replica expects to start it later than `wait_s`: the replica's typical reply
time (a running average of the replies it finished) for each reply ahead of it, less what the
running ones have done, spread over the engine's `parallel` generations. The session then asks
again with a growing pause and tells the client it waits (`turn.waiting {stage: llm}`), another
replica may take it, and the autoscaler sees the queue (`va_claim_queue_depth`). A replica that
holds nothing always admits; one that has finished no reply yet knows no typical time and
admits up to `max_queued`.
"""

from __future__ import annotations

ALPHA = 0.3  # the running average's weight of the newest reply


class Admission:
    def __init__(self, parallel: int, wait_s: float) -> None:
        self.parallel = max(1, parallel)
        self.wait_s = wait_s  # 0: no admission limit (only max_queued)
        self.typical_s: float | None = None
        self._claimed: dict[str, float] = {}  # reply id -> when it was claimed
        self._last_end = 0.0  # when the last reply left the replica

    def expected_start_s(self, now: float) -> float:
        """How long a reply claimed now would wait for its generation to start."""
        if self.typical_s is None or len(self._claimed) < self.parallel:
            return 0.0
        ahead = sorted(self._claimed.values())
        left = sum(
            max(0.0, self.typical_s - (now - t)) if i < self.parallel else self.typical_s
            for i, t in enumerate(ahead)
        )
        return left / self.parallel

    def admits(self, now: float) -> bool:
        return not self.wait_s or self.expected_start_s(now) <= self.wait_s

    def begin(self, reply_id: str, now: float) -> None:
        self._claimed[reply_id] = now

    def end(self, reply_id: str, now: float, finished: bool) -> None:
        """The reply left the replica. Its time on the engine (since it was claimed, or since
        the reply before it ended, whichever is later) updates the typical time when it ran to
        its end (a cancelled one says nothing of it)."""
        claimed = self._claimed.pop(reply_id, None)
        if claimed is None:
            return
        took = now - max(claimed, self._last_end)
        self._last_end = now
        if finished and took > 0:
            old = self.typical_s
            self.typical_s = took if old is None else old + ALPHA * (took - old)
