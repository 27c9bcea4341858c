from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import NoDecode

from services.common.settings import ServiceSettings, comma_list


class SessionSettings(ServiceSettings):
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("VA_REDIS_URL", "REDIS_URL")
    )
    # Redis replicated under Sentinel: the sentinels (host:port, a comma list) and the name they
    # monitor; the primary is asked of them, again after a failover. VA_REDIS_URL then gives only
    # the database, user and password.
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_master: str = "mymaster"
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

    # Tools (services/session/tools.py): networks beyond the public internet that tool
    # endpoints may be in (CIDR, a comma list: "192.168.1.0/24" for a home server); a turn that
    # calls a tool says tool_filler_text tool_filler_ms after the end of speech, unless its
    # answer has begun (services/session/tool_calls.py); at most tool_rounds rounds of calls.
    tool_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    tool_filler_ms: int = Field(700, ge=0)
    tool_filler_text: str = "One moment."
    tool_rounds: int = Field(3, ge=1, le=10)

    @field_validator("tool_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        value = comma_list(value)
        for v in value if isinstance(value, list) else []:
            try:
                ipaddress.ip_network(str(v), strict=False)
            except ValueError:
                raise ValueError(f"VA_TOOL_NETWORKS: {v!r} is not a network (CIDR)") from None
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinels(cls, value: object) -> object:
        value = comma_list(value)
        for v in value if isinstance(value, list) else []:
            host, _, port = str(v).rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"VA_REDIS_SENTINELS: {v!r} is not host:port")
        return value

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(h, int(p)) for h, _, p in (s.rpartition(":") for s in self.redis_sentinels)]
