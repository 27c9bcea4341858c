from __future__ import annotations

import ipaddress
import json
import ssl
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from services.common.settings import ServiceSettings, comma_list

# A typed message around its text: `{"type":"user.text","text":""}`.
USER_TEXT_ENVELOPE = len('{"type":"user.text","text":""}')


class GatewaySettings(ServiceSettings):
    # HTTP API
    # VA_API_KEYS=k1,k2 (or a JSON list). Empty: the agents API is open (development only).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Listening beyond loopback (VA_HTTP_HOST or the https listener below) needs VA_API_KEYS, so a
    # network cannot change what the assistant does; this lets it go without (a dev cluster).
    open_agents_api: bool = False
    # HTTPS beside the plain listener, for devices on the network (browsers give the microphone
    # only to secure pages): the certificate chain and key files (PEM; `scripts/run.sh --lan`
    # makes them, tls.py), where to listen, and a CA certificate to serve at /ca.crt.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_host: str = "0.0.0.0"
    tls_port: int = Field(8443, ge=1, le=65535)
    tls_ca: Path | None = None
    # WebRTC: ICE servers as RTCIceServer dicts, e.g. '[{"urls": "turn:turn.example:3478",
    # "username": "u", "credential": "p"}]'. None by default (host candidates only).
    ice_servers: list[dict[str, object]] = Field(default_factory=list)
    # limits
    # The longest typed text (characters, trimmed); longer is answered `text_too_long`. The only
    # limit on a text's length, so it must fit in an event-socket message (checked below).
    max_text_chars: int = Field(4000, ge=1)
    max_sdp_bytes: int = 20_000
    max_ws_message_bytes: int = 16_384
    max_audio_bytes_per_frame: int = 16_000  # PCM16 16 kHz after resampling: 0.5 s
    max_utterance_s: float = 30.0
    # Rate limits (the `limits` library's notation), per gateway replica.
    ws_message_rate: str = "20/second"  # event-socket messages per session
    session_create_rate: str = "30/minute"  # new sessions per client address
    audio_ms_rate: str = "3000/2 seconds"  # microphone audio per session: at most 1.5x real time
    # Silence after which the final ASR pass starts speculatively (reused at end of turn when the
    # user said nothing more): most of a Whisper pass leaves the end-of-turn latency. The VAD
    # counts silence in 32 ms frames, so 96 = three frames (100 waited for a fourth: 128 ms).
    speculative_pause_ms: int = 96
    # At that pause, also submit the turn: the reply is produced during the rest of the silence
    # and released the moment the end of turn is confirmed (dropped if the user speaks on).
    speculative_turns: bool = True
    # No RTP while no reply plays (after a 200 ms tail; a keep-alive frame each second): idle
    # sessions cost no Opus encoding and encryption. Off: silence frames all the time.
    suppress_silence: bool = True
    # Microphone frames aiortc holds before decoding (its default is 4 = 80 ms). Each costs 20 ms
    # of end-of-turn and barge-in latency; raise it on lossy networks.
    mic_jitter_prefetch: int = Field(1, ge=1, le=8)
    # Opus DTX: the answer asks the browser to send (almost) nothing while the microphone is
    # silent, so silent users cost the gateway next to nothing. The end-of-turn silence is then
    # counted on the wall clock: after `mic_gap_ms` without a frame, inside a turn's trailing
    # silence, the missing time is fed to the turn detector as silence.
    mic_dtx: bool = True
    # Take the reply's echo out of the microphone before the VAD (echo.py), for WebRTC clients
    # whose offer does not say (`echo_cancellation` in its body). Off: browsers cancel their own
    # echo, and a second canceller, still learning, can swallow a user's first words over a reply.
    echo_cancellation: bool = False
    mic_gap_ms: int = Field(60, ge=20, le=500)
    # timeouts
    claim_timeout_s: float = 2.0
    # A turn no session replica listens for (none up yet: a restart, a rolling update, a NATS
    # reconnection) is sent again, with a growing pause, this long; then it fails.
    session_wait_s: float = Field(10.0, ge=0)
    asr_timeout_s: float = 10.0
    rpc_timeout_s: float = 5.0
    # A turn in flight with no event and no reply audio for this long failed somewhere
    # (e.g. its session replica died): the client gets turn_failed for it.
    turn_stall_timeout_s: float = 30.0
    # A live session (this replica's part: peer connection, event subscriptions) with no event
    # socket and no media for this long is closed; the session itself stays open.
    idle_session_s: float = Field(600.0, gt=0)

    @model_validator(mode="after")
    def _text_fits_a_message(self) -> GatewaySettings:
        if self.max_text_chars + USER_TEXT_ENVELOPE > self.max_ws_message_bytes:
            raise ValueError(
                f"max_text_chars ({self.max_text_chars}) + {USER_TEXT_ENVELOPE} must not exceed "
                f"max_ws_message_bytes ({self.max_ws_message_bytes}): a typed text must fit in "
                "an event-socket message"
            )
        return self

    @model_validator(mode="after")
    def _tls_files(self) -> GatewaySettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("VA_TLS_CERT and VA_TLS_KEY go together: set both or neither")
        if self.tls_cert is not None and self.tls_key is not None:
            for var, path in (("VA_TLS_CERT", self.tls_cert), ("VA_TLS_KEY", self.tls_key)):
                if not path.is_file():
                    raise ValueError(f"{var}={path}: no such file")
                try:
                    path.read_bytes()
                except OSError as exc:
                    raise ValueError(f"{var}={path}: cannot read it ({exc.strerror})") from None
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                    self.tls_cert, self.tls_key
                )
            except (ssl.SSLError, ValueError) as exc:
                raise ValueError(
                    f"VA_TLS_CERT={self.tls_cert} with VA_TLS_KEY={self.tls_key}: not a PEM "
                    f"certificate chain and its private key ({exc})"
                ) from None
        if self.tls_ca is not None and not self.tls_ca.is_file():
            raise ValueError(f"VA_TLS_CA={self.tls_ca}: no such file")
        return self

    @model_validator(mode="after")
    def _key_beyond_localhost(self) -> GatewaySettings:
        if self.api_keys or self.open_agents_api:
            return self
        public = [h for h in self.listen_hosts() if not _loopback(h)]
        if public:
            raise ValueError(
                f"listening on {', '.join(public)} (beyond this machine) needs VA_API_KEYS, so "
                "nobody on the network can register agents: set VA_API_KEYS (e.g. `openssl rand "
                "-hex 24`), or VA_OPEN_AGENTS_API=true where every client is trusted"
            )
        return self

    def listen_hosts(self) -> list[str]:
        hosts = [self.http_host]
        return hosts + [self.tls_host] if self.tls_cert is not None else hosts

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().startswith("["):
            return json.loads(value)
        return comma_list(value)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything
