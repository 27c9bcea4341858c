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
    # A turn waits this long for an llm or tts replica to take it (none up: a warm-up, a rolling
    # update, a scale from zero; or all busy), asking again with a growing pause; then the turn
    # fails (llm) or goes on in text (tts).
    stage_wait_s: float = 30.0
    llm_attempts: int = 2  # retries on another replica while nothing of the reply was produced
    # No first token for this long: try another LLM replica (llm_attempts in all), then apologize.
    llm_first_token_timeout_s: float = 10.0
    llm_stall_timeout_s: float = 10.0  # no LLM output for this long mid-reply: apologize
    apology_text: str = "Sorry, I can't answer that right now. Please try again in a moment."
    tts_stall_timeout_s: float = 15.0
    playback_timeout_s: float = 120.0
