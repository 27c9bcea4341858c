from __future__ import annotations

from pydantic import AliasChoices, Field

from services.common.settings import ServiceSettings


class SessionSettings(ServiceSettings):
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("VA_REDIS_URL", "REDIS_URL")
    )
    token_secret: str | None = None  # default: a random key kept in Redis, shared by replicas
    token_ttl_s: int = 3600
    claim_timeout_s: float = 2.0
    llm_attempts: int = 2  # retries on another replica while nothing of the reply was produced
    llm_stall_timeout_s: float = 15.0  # no LLM output for this long: the replica is gone
    tts_stall_timeout_s: float = 15.0
    playback_timeout_s: float = 120.0
