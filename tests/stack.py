"""Start the five services as real processes (the embedded defaults unless told otherwise)."""

from __future__ import annotations

from typing import Any

try:
    from .procs import ServiceProc, ServiceProcs
except ImportError:
    from procs import ServiceProc, ServiceProcs

KINDS = ("session", "llm", "asr", "tts", "gateway")


class Stack:
    def __init__(self, procs: ServiceProcs) -> None:
        self.procs = procs
        self.by_kind: dict[str, list[ServiceProc]] = {k: [] for k in KINDS}

    @property
    def base_url(self) -> str:
        return self.by_kind["gateway"][0].url

    def start(self, kind: str, env: dict[str, str] | None = None, **kw: Any) -> ServiceProc:
        sp = self.procs.start(kind, env=env, **kw)
        self.by_kind[kind].append(sp)
        return sp

    def replica(self, worker_id: str) -> ServiceProc:
        """The process whose worker id (kind-host-pid-xxxx) is `worker_id`."""
        pid = int(worker_id.split("-")[-2])
        for procs in self.by_kind.values():
            for sp in procs:
                if sp.pid == pid:
                    return sp
        raise KeyError(worker_id)


def start_stack(
    procs: ServiceProcs,
    replicas: dict[str, int] | None = None,
    env: dict[str, dict[str, str]] | None = None,
) -> Stack:
    stack = Stack(procs)
    replicas = replicas or {}
    env = env or {}
    for kind in KINDS:
        for _ in range(replicas.get(kind, 1)):
            stack.start(kind, env=env.get(kind))
    return stack
