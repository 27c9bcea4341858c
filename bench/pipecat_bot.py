"""The peer for bench/peer_pipecat.py: a Pipecat voice bot on the assistant's own models, served
over Pipecat's aiortc transport (SmallWebRTC). Runs in bench/.venv-pipecat (bench/setup-pipecat.sh),
never in the project's venv; bench/peer_pipecat.py starts it, inside scripts/netns-run:

    bench/.venv-pipecat/bin/python bench/pipecat_bot.py --port 7860 \
        --whisper-model DIR --piper-model F.onnx --piper-config F.onnx.json \
        --llm-url http://127.0.0.1:PORT/v1 --events-dir DIR

The bot is Pipecat's canonical cascade, as its CLI template and examples build it: per WebRTC
connection, transport.input() -> WhisperSTTService -> user aggregator (Silero VAD, default turn
strategies: VAD start, smart-turn v3 stop) -> OpenAILLMService -> PiperTTSService ->
transport.output() -> assistant aggregator. Pipecat's defaults everywhere but where the models
are: the same Whisper tiny.en CTranslate2 folder (int8 on the CPU, as the assistant runs it), the
same Piper voice files, the same SmolLM2 GGUF behind `python -m llama_cpp.server`. Nothing is
downloaded: the Silero and smart-turn ONNX files ship in the pipecat-ai wheel, and the caller sets
HF_HUB_OFFLINE=1.

Signalling: POST /api/offer {sdp, type, request_data: {system_prompt, temperature, max_tokens}}
answers {sdp, type, pc_id} (Pipecat's SmallWebRTCRequestHandler); GET /health answers once the
server is up. Each connection gets the prompt and sampling settings of its request_data, as the
assistant's sessions get an agent's.

Events: for every connection, <events-dir>/<pc_id>.jsonl gets one JSON line per pipeline event
that the benchmark reads (VAD and turn start/stop, transcription, interruption, LLM first text
and end, first TTS audio, bot started/stopped speaking), each with `t`, the CLOCK_MONOTONIC
seconds at which the frame was pushed: the same clock as the benchmark's `time.monotonic()`. The
benchmark measures from the audio it receives; these events only pace its turns and break a
turn's latency down into Pipecat's stages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before faster_whisper imports huggingface_hub

import uvicorn  # noqa: E402
from fastapi import BackgroundTasks, FastAPI  # noqa: E402
from loguru import logger  # noqa: E402
from pipecat.audio.vad.silero import SileroVADAnalyzer  # noqa: E402
from pipecat.clocks.system_clock import SystemClock  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.processors.aggregators.llm_response_universal import (  # noqa: E402
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.services.openai.llm import OpenAILLMService  # noqa: E402
from pipecat.services.piper.tts import PiperTTSService  # noqa: E402
from pipecat.services.whisper.stt import WhisperSTTService  # noqa: E402
from pipecat.transports.base_transport import TransportParams  # noqa: E402
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection  # noqa: E402
from pipecat.transports.smallwebrtc.request_handler import (  # noqa: E402
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

DEFAULT_AGENT = {
    "system_prompt": "You are a helpful assistant. Reply in English with one short sentence.",
    "temperature": 0.0,
    "max_tokens": 60,
}


class AnchoredClock(SystemClock):
    """Pipecat's system clock, remembering where it started, so that a frame's pipeline
    timestamp converts back to CLOCK_MONOTONIC (the observer runs behind a queue: calling
    time.monotonic() there would add its lag)."""

    origin_ns = 0

    def start(self) -> None:
        super().start()
        self.origin_ns = time.monotonic_ns() - self.get_time()


class EventLog(BaseObserver):
    """Writes the pipeline events the benchmark needs, once per frame (first push only)."""

    PAIRS = {
        VADUserStartedSpeakingFrame: ("vad", "vad.start"),
        VADUserStoppedSpeakingFrame: ("vad", "vad.stop"),
        UserStartedSpeakingFrame: ("user", "user.start"),
        UserStoppedSpeakingFrame: ("user", "user.stop"),
        BotStartedSpeakingFrame: ("bot", "bot.start"),
        BotStoppedSpeakingFrame: ("bot", "bot.stop"),
    }

    def __init__(self, path: Path, clock: AnchoredClock) -> None:
        super().__init__(observe_every_push=False)
        self._file = path.open("a", buffering=1)  # line-buffered: the benchmark tails it
        self.clock = clock
        self._state: dict[str, str] = {}
        self._reply: list[str] | None = None
        self._first_audio_pending = False

    def write(self, etype: str, t: float | None = None, **fields: Any) -> None:
        t = time.monotonic() if t is None else t
        self._file.write(json.dumps({"t": round(t, 6), "type": etype, **fields}) + "\n")

    def close(self) -> None:
        self._file.close()

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        t = (self.clock.origin_ns + data.timestamp) / 1e9
        pair = self.PAIRS.get(type(frame))
        if pair is not None:
            # Some of these are pushed both ways as separate frames: report state changes only.
            key, etype = pair
            if self._state.get(key) != etype:
                self._state[key] = etype
                self.write(etype, t)
        elif isinstance(frame, TranscriptionFrame):
            self.write("transcript", t, text=frame.text)
        elif isinstance(frame, InterruptionFrame):
            self.write("interruption", t)
        elif isinstance(frame, LLMFullResponseStartFrame):
            self._reply, self._first_audio_pending = [], True
            self.write("llm.start", t)
        elif isinstance(frame, LLMTextFrame) and self._reply is not None:
            if not self._reply:
                self.write("llm.first_text", t)
            self._reply.append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame) and self._reply is not None:
            self.write("llm.end", t, text="".join(self._reply))
            self._reply = None
        elif isinstance(frame, TTSAudioRawFrame) and self._first_audio_pending:
            self._first_audio_pending = False
            self.write("tts.first_audio", t)


def piper_dir(model: Path, config: Path, scratch: Path) -> tuple[Path, str]:
    """PiperTTSService loads <download_dir>/<voice>.onnx with its config beside it
    (<voice>.onnx.json) and downloads the voice when that file is missing: point it at the
    given files, through symlinks when they are not laid out that way."""
    voice = model.name.removesuffix(".onnx")
    if config == model.with_name(model.name + ".json"):
        return model.parent, voice
    (scratch / f"{voice}.onnx").symlink_to(model)
    (scratch / f"{voice}.onnx.json").symlink_to(config)
    return scratch, voice


def build_app(args: argparse.Namespace) -> FastAPI:
    app = FastAPI()
    handler = SmallWebRTCRequestHandler(ice_servers=[])  # no STUN: nothing outside is reachable
    scratch = Path(tempfile.mkdtemp(prefix="pipecat-bot-"))
    voice_dir, voice = piper_dir(args.piper_model, args.piper_config, scratch)
    args.events_dir.mkdir(parents=True, exist_ok=True)

    async def run_bot(
        transport: SmallWebRTCTransport, agent: dict[str, Any], events: EventLog
    ) -> None:
        # Model loading is blocking: off the event loop, so other sessions keep their audio.
        stt, tts = await asyncio.gather(
            asyncio.to_thread(
                WhisperSTTService,
                settings=WhisperSTTService.Settings(model=str(args.whisper_model)),
                device="cpu",
                compute_type="int8",
            ),
            asyncio.to_thread(
                PiperTTSService,
                settings=PiperTTSService.Settings(voice=voice),
                download_dir=voice_dir,
            ),
        )
        llm = OpenAILLMService(
            api_key="none",
            base_url=args.llm_url,
            settings=OpenAILLMService.Settings(
                model="smollm2",
                system_instruction=agent["system_prompt"],
                temperature=agent["temperature"],
                max_tokens=agent["max_tokens"],
            ),
        )
        context = LLMContext()
        user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
            context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
        )
        pipeline = Pipeline(
            [
                transport.input(),
                stt,
                user_aggregator,
                llm,
                tts,
                transport.output(),
                assistant_aggregator,
            ]
        )
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(enable_metrics=True),
            observers=[events],
            clock=events.clock,
        )
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)

        @transport.event_handler("on_client_connected")
        async def on_client_connected(transport: Any, client: Any) -> None:
            events.write("client.connected")

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(transport: Any, client: Any) -> None:
            events.write("client.disconnected")
            await runner.cancel()

        try:
            await runner.run()
        finally:
            events.write("pipeline.ended")
            events.close()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/offer")
    async def offer(request: SmallWebRTCRequest, background: BackgroundTasks) -> Any:
        agent = DEFAULT_AGENT | (request.request_data or {})

        async def on_connection(connection: SmallWebRTCConnection) -> None:
            events = EventLog(args.events_dir / f"{connection.pc_id}.jsonl", AnchoredClock())
            events.write("offer", agent=agent)
            transport = SmallWebRTCTransport(
                webrtc_connection=connection,
                params=TransportParams(audio_in_enabled=True, audio_out_enabled=True),
            )
            # The pipeline (and its model loading) runs after the answer is sent, as in
            # Pipecat's examples; the client waits for the "client.connected" event.
            background.add_task(run_bot, transport, agent, events)

        return await handler.handle_web_request(
            request=request, webrtc_connection_callback=on_connection
        )

    @app.on_event("shutdown")
    async def shutdown() -> None:
        await handler.close()

    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--whisper-model", type=Path, required=True, help="CTranslate2 model folder")
    p.add_argument("--piper-model", type=Path, required=True, help="Piper voice .onnx")
    p.add_argument("--piper-config", type=Path, required=True, help="Piper voice .onnx.json")
    p.add_argument("--llm-url", required=True, help="OpenAI-compatible base URL (…/v1)")
    p.add_argument("--events-dir", type=Path, required=True)
    p.add_argument("--log-level", default="DEBUG")
    args = p.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    uvicorn.run(build_app(args), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
