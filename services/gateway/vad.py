"""Streaming voice activity detection and turn detection for the gateway.

`SileroVADModel` holds one onnxruntime session of the Silero VAD v6 ONNX file that faster-whisper
ships (`faster_whisper/assets/silero_vad_v6.onnx`); many `SileroVADStream`s share it, each with its
own LSTM state and 64-sample context. Model I/O (checked with onnxruntime): inputs
`input [n, 576]` (64 context + 512 new samples at 16 kHz), `h`, `c` `[1, 1, 128]`; outputs
`speech_probs [n]`, `hn`, `cn`. Fed frame by frame it matches faster-whisper's batch VAD.

`TurnDetector` is a pure, deterministic state machine (no asyncio, no clocks) that turns 32 ms
frames into speech events; the gateway calls it per received audio chunk.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512  # 32 ms at 16 kHz: the only frame size Silero v5/v6 accepts at 16 kHz
FRAME_BYTES = FRAME_SAMPLES * 2
FRAME_MS = 32
DIGITAL_SILENCE_PEAK = 10  # PCM16
CONTEXT_SAMPLES = 64


def default_model_path() -> str:
    import faster_whisper

    return os.path.join(os.path.dirname(faster_whisper.__file__), "assets", "silero_vad_v6.onnx")


def onnx_session(path: str, intra_op_num_threads: int = 1) -> InferenceSession:
    """A CPU onnxruntime session of a model file, quiet, on `intra_op_num_threads` threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_num_threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


class SileroVADModel:
    """One onnxruntime session, shareable across streams and threads (`run` holds no state)."""

    def __init__(self, path: str | None = None, intra_op_num_threads: int = 1) -> None:
        self.path = path or default_model_path()
        self.session = onnx_session(self.path, intra_op_num_threads)
        names = [i.name for i in self.session.get_inputs()]
        if names != ["input", "h", "c"]:
            raise RuntimeError(f"unexpected Silero VAD inputs {names} in {self.path}")

    def run(
        self, x: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """One step: x is float32 [1, 576]; returns (probability, new h, new c)."""
        prob, hn, cn = self.session.run(None, {"input": x, "h": h, "c": c})
        return float(prob.reshape(-1)[0]), hn, cn


_shared_model: SileroVADModel | None = None


def shared_model() -> SileroVADModel:
    """A process-wide model, loaded on first use (about 20 ms)."""
    global _shared_model
    if _shared_model is None:
        _shared_model = SileroVADModel()
    return _shared_model


class SileroVADStream:
    """Per-stream state: LSTM h/c and the last 64 samples of the previous frame."""

    def __init__(self, model: SileroVADModel | None = None) -> None:
        self.model = model or shared_model()
        self._x = np.zeros((1, CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._x[:] = 0.0

    def prob(self, frame: np.ndarray) -> float:
        """Speech probability of one frame of 512 float32 samples in [-1, 1] at 16 kHz."""
        if frame.shape[-1] != FRAME_SAMPLES:
            raise ValueError(f"Silero VAD needs {FRAME_SAMPLES}-sample frames, got {frame.shape}")
        x = self._x
        x[0, :CONTEXT_SAMPLES] = x[0, -CONTEXT_SAMPLES:]  # previous frame's tail = context
        x[0, CONTEXT_SAMPLES:] = frame
        p, self._h, self._c = self.model.run(x, self._h, self._c)
        return p

    def prob_pcm16(self, frame: bytes) -> float:
        """Same as `prob` for 1024 bytes of little-endian PCM16. Digital silence (every sample
        under DIGITAL_SILENCE_PEAK, about -70 dBFS: a muted or noise-suppressed microphone, a
        client between utterances) is probability 0 without running the model; the context
        still moves on, so the next frame sees the silence before it."""
        samples = np.frombuffer(frame, dtype="<i2")
        if samples.size == FRAME_SAMPLES and int(np.abs(samples).max()) < DIGITAL_SILENCE_PEAK:
            self._x[0, :CONTEXT_SAMPLES] = self._x[0, -CONTEXT_SAMPLES:]
            self._x[0, CONTEXT_SAMPLES:] = 0.0
            return 0.0
        return self.prob(samples.astype(np.float32) / 32768.0)


class SileroVAD(SileroVADStream):
    """A single stream with a threshold, on the process-wide shared model unless given one."""

    def __init__(self, threshold: float = 0.5, model: SileroVADModel | None = None) -> None:
        super().__init__(model)
        self.threshold = threshold

    def is_speech(self, frame: np.ndarray) -> bool:
        return self.prob(frame) >= self.threshold


# ---- turn events -------------------------------------------------------------------------------
# All t_ms are stream milliseconds: frame_index * 32 from the first frame fed to the detector.


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """Speech began at `t_ms` (start of the first speech frame). `preroll` is PCM16 from
    `preroll_ms` before the onset up to and including the frame that confirmed it; the
    SpeechFrames that follow continue it without a gap."""

    t_ms: int
    preroll: bytes


@dataclass(frozen=True, slots=True)
class SpeechFrame:
    """One 32 ms frame of PCM16 inside a turn (speech or the silence between words)."""

    pcm: bytes
    t_ms: int = 0


@dataclass(frozen=True, slots=True)
class SpeechPause:
    """Silence has lasted `pause_ms` at `t_ms` (time of detection): a cue for speculative work."""

    t_ms: int


@dataclass(frozen=True, slots=True)
class SpeechResume:
    """Speech restarted after a SpeechPause within the same turn; `t_ms` is its onset."""

    t_ms: int


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """End of turn detected at `t_ms`; speech itself ended at `speech_end_ms`."""

    t_ms: int
    speech_end_ms: int


TurnEvent = SpeechStart | SpeechFrame | SpeechPause | SpeechResume | SpeechEnd


class TurnDetector:
    """Frames of PCM16 16 kHz in, turn events out. Pure and deterministic.

    Hysteresis like Silero's own VADIterator: a frame is speech at `prob >= threshold`, silence at
    `prob < neg_threshold`; frames in between extend whatever is running. A turn starts after
    `start_frames` consecutive speech frames (64 ms); silence runs are broken only by the same
    number of consecutive speech frames, so one noisy frame neither starts a turn nor resumes one.
    A silence of `window_ms` ends the turn: `end_of_turn_silence_ms` at each onset and resume,
    unless `set_window` changes it for the silence under way.
    """

    def __init__(
        self,
        vad: SileroVADStream | None = None,
        threshold: float = 0.5,
        neg_threshold: float = 0.35,
        start_frames: int = 2,
        pause_ms: int = 200,
        end_of_turn_silence_ms: int = 500,
        preroll_ms: int = 300,
    ) -> None:
        self.vad = vad or SileroVADStream()
        self.threshold = threshold
        self.neg_threshold = neg_threshold
        self.start_frames = start_frames
        self.pause_ms = pause_ms
        self.end_of_turn_silence_ms = end_of_turn_silence_ms
        self.window_ms = end_of_turn_silence_ms
        self.preroll_frames = -(-preroll_ms // FRAME_MS)  # ceil: 300 ms -> 10 frames
        self.last_prob = 0.0
        # Wall-clock seconds of stream time 0, for the caller to set when it feeds the first frame;
        # the detector never reads a clock itself.
        self.origin_s: float | None = None
        self._buf = bytearray()
        self._ring: deque[tuple[int, bytes]] = deque(maxlen=self.preroll_frames + start_frames)
        self._reset_state()

    def _reset_state(self) -> None:
        self.frame_index = 0
        self.in_speech = False
        self.paused = False
        self._run = 0  # consecutive speech frames
        self._onset = 0  # frame index of the current turn's onset
        self._last_speech_end = 0  # frame index just past the last speech frame of the turn
        self._silence_start: int | None = None  # frame index where the current silence began

    def set_window(self, ms: int) -> None:
        """The silence that ends the current turn, until speech resumes (a silence already that
        long ends it at the next frame)."""
        self.window_ms = ms

    def end_turn(self) -> None:
        """Forget the turn under way (it was no turn): the next speech starts a new one."""
        self.in_speech, self.paused = False, False
        self._silence_start = None
        self._run = 0
        self.window_ms = self.end_of_turn_silence_ms

    def reset(self) -> None:
        """Forget the stream: new time origin, empty buffers, fresh VAD state."""
        self.vad.reset()
        self._buf.clear()
        self._ring.clear()
        self.last_prob = 0.0
        self.origin_s = None
        self._reset_state()

    def wall_time(self, t_ms: int) -> float:
        """Map stream ms to wall-clock seconds using `origin_s` (set by the caller)."""
        if self.origin_s is None:
            raise RuntimeError("origin_s not set: assign it when feeding the first frame")
        return self.origin_s + t_ms / 1000.0

    @property
    def t_ms(self) -> int:
        """Stream time after the last processed frame."""
        return self.frame_index * FRAME_MS

    @property
    def speech_ms(self) -> int:
        """Length of the current turn's speech, onset to end of its last speech frame (trailing
        silence excluded); 0 outside a turn. For a minimum-interruption-time rule."""
        if not self.in_speech:
            return 0
        return (self._last_speech_end - self._onset) * FRAME_MS

    @property
    def speech_end_ms(self) -> int:
        """Stream time just past the current turn's last speech frame (as `SpeechEnd` will give
        it); 0 outside a turn."""
        return self._last_speech_end * FRAME_MS if self.in_speech else 0

    @property
    def silence_ms(self) -> int:
        """How long the current silence inside a turn has lasted; 0 if none."""
        if not self.in_speech or self._silence_start is None:
            return 0
        return (self.frame_index - self._silence_start) * FRAME_MS

    def feed(self, pcm: bytes | bytearray | memoryview | np.ndarray) -> list[TurnEvent]:
        """Any amount of PCM16 (bytes or an int16 array); whole 512-sample frames are processed,
        the remainder waits for the next call."""
        if isinstance(pcm, np.ndarray):
            pcm = pcm.astype("<i2", copy=False).tobytes()
        self._buf += pcm
        events: list[TurnEvent] = []
        n = len(self._buf) // FRAME_BYTES
        for i in range(n):
            start = i * FRAME_BYTES
            events.extend(self.push_frame(bytes(self._buf[start : start + FRAME_BYTES])))
        del self._buf[: n * FRAME_BYTES]
        return events

    def push_frame(self, frame: bytes, prob: float | None = None) -> list[TurnEvent]:
        """Exactly one 1024-byte frame. `prob` overrides the VAD (tests of the state machine)."""
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"frame must be {FRAME_BYTES} bytes, got {len(frame)}")
        if prob is None:
            prob = self.vad.prob_pcm16(frame)
        self.last_prob = prob
        i = self.frame_index
        self.frame_index += 1
        self._ring.append((i, frame))
        speech, silence = prob >= self.threshold, prob < self.neg_threshold
        self._run = self._run + 1 if speech else 0
        if not self.in_speech:
            return self._idle_step(i)
        return self._turn_step(i, frame, speech, silence)

    def _idle_step(self, i: int) -> list[TurnEvent]:
        if self._run < self.start_frames:
            return []
        self.in_speech, self.paused = True, False
        self.window_ms = self.end_of_turn_silence_ms
        self._onset = i - self.start_frames + 1
        self._last_speech_end = i + 1
        self._silence_start = None
        first = self._onset - self.preroll_frames
        preroll = b"".join(f for idx, f in self._ring if idx >= first)
        return [SpeechStart(t_ms=self._onset * FRAME_MS, preroll=preroll)]

    def _turn_step(self, i: int, frame: bytes, speech: bool, silence: bool) -> list[TurnEvent]:
        events: list[TurnEvent] = [SpeechFrame(pcm=frame, t_ms=i * FRAME_MS)]
        if self._silence_start is None:
            if speech:
                self._last_speech_end = i + 1
            elif silence:
                self._silence_start = i
        elif self._run >= self.start_frames:  # speech is back: the silence run is over
            onset = i - self.start_frames + 1
            self._silence_start = None
            self._last_speech_end = i + 1
            self.window_ms = self.end_of_turn_silence_ms
            if self.paused:
                self.paused = False
                events.append(SpeechResume(t_ms=onset * FRAME_MS))
        if self._silence_start is not None:
            silent_ms = (i + 1 - self._silence_start) * FRAME_MS
            if not self.paused and silent_ms >= self.pause_ms:
                self.paused = True
                events.append(SpeechPause(t_ms=(i + 1) * FRAME_MS))
            if silent_ms >= self.window_ms:
                end_ms = self._last_speech_end * FRAME_MS
                events.append(SpeechEnd(t_ms=(i + 1) * FRAME_MS, speech_end_ms=end_ms))
                self.in_speech, self.paused = False, False
                self._silence_start = None
                self._run = 0
        return events
