"""Turn taking: what the voices say. Held-out questions and requests (no test or other
benchmark speaks them), long sentences to pause inside, story prompts, backchannels, real
interruptions and short stories asked for on a speakerphone; each spoken by a voice of --voices
(Piper, Kokoro: bench/asr_audio.speech) and trimmed to its audible part.

A paused question is a sentence synthesized whole (so the voice's prosody runs on through the
cut, as a person's does when they stop to think), cut at a word boundary between CUT_FROM and
CUT_TO of its words, with PAUSE_S of silence inserted. The word boundaries come from
faster-whisper's word timestamps on the clip (Whisper base, as services/asr/models.model_path
provides it), refined to the quietest 10 ms within BOUNDARY_SLACK_S of the boundary (fluent
speech seldom falls silent there: `cut_db` tells how loud the cut point was), with FADE_MS fades
either side so that it does not click. Cut and pause are drawn per (voice, sentence), the same
for both agents.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.audio import concat_wavs_with_silence

from .asr_audio import RATE, speech
from .runner import say
from .scenarios import STORY_PROMPTS, Clip

COMPLETE = (
    "What does a hedgehog eat?",
    "Can you suggest a name for a black cat?",
    "How many strings does a violin have?",
    "What do caterpillars turn into?",
    "Give me an idea for a quick breakfast.",
    "Where is the Eiffel Tower?",
    "What is the opposite of cold?",
    "Name a fruit that is yellow.",
    "How tall does a giraffe grow?",
    "Recommend a board game for four people.",
    "How much water does a cactus need?",
    "What rhymes with moon?",
    "Tell me one fun fact about octopuses.",
    "How do you say good night in French?",
    "What should I pack for a day at the beach?",
    "Is a tomato a fruit or a vegetable?",
    "Which planet is closest to the sun?",
    "What is a good gift for a ten year old?",
    "How long should I boil an egg?",
    "Why do cats purr?",
    "What language do they speak in Brazil?",
    "Can you name three kinds of trees?",
    "When do swallows fly south?",
    "What is the fastest land animal?",
)
PAUSED = (
    "Could you tell me how long it takes to fly from London to Tokyo?",
    "I need a recipe for a vegetable soup that my kids will actually eat.",
    "What is the best way to keep fresh basil from wilting in the kitchen?",
    "Please explain why the sky turns orange and red when the sun goes down.",
    "Can you help me write a short birthday message for my grandmother?",
    "How many people live in the largest city in Australia these days?",
    "I want to start running in the morning but I always feel too tired.",
    "Which pet is better for a small apartment, a cat or a small dog?",
    "Tell me what I should see first if I visit Rome for two days.",
    "What time does the sun usually rise in the middle of winter in Norway?",
    "My laptop gets very hot when I watch videos, what could be causing that?",
    "Could you give me three ideas for a rainy Sunday afternoon with friends?",
    "How do I politely tell my neighbour that his music is too loud at night?",
    "Is it safe to leave cooked rice out on the kitchen counter overnight?",
    "Suggest a good name for a small bakery that sells bread and cakes.",
    "What is the difference between weather and climate in simple words?",
    "Could you remind me what goes into a classic pancake batter for breakfast?",
    "I am looking for a quiet place to read near the river on a Sunday morning.",
    "What should I do if my tomato plants have yellow leaves at the bottom?",
    "Can you explain how a bicycle stays upright when it is moving fast?",
    "I would like to learn a new language, but I only have ten minutes a day.",
    "Which mountains in Europe are the easiest to climb for a beginner?",
    "How can I make my small balcony feel more like a garden this summer?",
    "Tell me how to fix a dripping tap in the bathroom without calling a plumber.",
)
BACKCHANNELS = (
    "Yeah.",
    "Uh-huh.",
    "Okay.",
    "Right.",
    "Mm-hmm.",
    "I see.",
    "Sure.",
    "Got it.",
    "Oh, nice.",
)
INTERRUPTIONS = (
    "Wait, stop.",
    "Hold on a second.",
    "No, tell me about dragons instead.",
    "Stop, that's enough.",
    "Actually, can you tell me a joke?",
    "Sorry, wait, I have a question.",
    "Hang on, what did you just say?",
    "No no, that is not what I asked.",
)
# Asked for on a speakerphone: a reply of a few sentences, long enough for its echo to matter.
SPEAKERPHONE = (
    "Tell me a short story about a sleepy owl.",
    "Tell me a short story about a clever fox.",
    "Tell me a short story about a snowman in spring.",
    "Tell me a short story about a brave little boat.",
    "Tell me a short story about a girl who found a map.",
    "Tell me a short story about a robot who learned to paint.",
    "Tell me a short story about a dog at the seaside.",
    "Tell me a short story about a turtle who wanted to fly.",
)
# Seconds of audible story before the listener speaks over it, cycled by item.
OVER_DELAYS = (1.5, 2.25, 3.0, 1.75, 2.5, 2.0, 2.75)
CUT_FROM, CUT_TO = 0.30, 0.75  # the cut: after this share of the sentence's words
PAUSE_S = (0.6, 1.5)  # the silence inserted at the cut, drawn uniformly (10 ms steps)
BOUNDARY_SLACK_S = 0.08
FADE_MS = 10
STEP = 5  # voice i starts the lists at item STEP * i: the voices do not all say the same


@dataclass(frozen=True)
class Paused:
    """A sentence with a pause inserted after `said` (the first `cut_word` of `words` words)."""

    clip: Clip  # the whole clip as played: first part, silence, the rest
    said: str
    rest: str
    cut_word: int
    words: int
    cut_s: float  # where in the sentence (as synthesized, trimmed) the cut lies
    cut_db: float  # the loudness at the cut, relative to the sentence's loudest 10 ms
    pause_s: float

    def fields(self) -> dict[str, Any]:
        return {
            "said_before_pause": self.said,
            "said_after_pause": self.rest,
            "cut_after_word": self.cut_word,
            "words": self.words,
            "cut_s": self.cut_s,
            "cut_db": self.cut_db,
            "pause_s": self.pause_s,
        }


class WordTimes:
    """faster-whisper with word timestamps, loaded on first use: (word, start s, end s)."""

    def __init__(self) -> None:
        self._model: Any = None

    def __call__(self, pcm: np.ndarray) -> list[tuple[str, float, float]]:
        if self._model is None:
            from faster_whisper import WhisperModel

            from services.asr.models import DEFAULT_MODEL, model_path

            self._model = WhisperModel(
                model_path(DEFAULT_MODEL), device="cpu", compute_type="int8", cpu_threads=2
            )
        segments, _ = self._model.transcribe(
            pcm.astype(np.float32) / 32768.0,
            language="en",
            beam_size=5,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return [(w.word.strip(), w.start, w.end) for s in segments for w in s.words or ()]

    def close(self) -> None:
        self._model = None


def quietest_cut(pcm: np.ndarray, lo_s: float, hi_s: float) -> tuple[int, float]:
    """The middle of the quietest 10 ms between `lo_s` and `hi_s` (samples), and its loudness
    in dB against the clip's loudest 10 ms."""
    win = RATE // 100
    n = len(pcm) // win
    rms = np.sqrt(np.mean(pcm[: n * win].astype(np.float64).reshape(n, win) ** 2, axis=1)) + 1e-9
    a = max(0, int(lo_s * 100))
    b = min(n, max(a + 1, int(math.ceil(hi_s * 100))))
    i = a + int(np.argmin(rms[a:b]))
    return i * win + win // 2, round(float(20 * np.log10(rms[i] / rms.max())), 1)


def pause_inside(
    text: str, pcm: np.ndarray, words: list[tuple[str, float, float]], rng: random.Random
) -> Paused:
    """`pcm` (the whole sentence) cut after a word drawn between CUT_FROM and CUT_TO of its
    words, with a drawn pause inserted there."""
    n = len(words)
    if n < 3:
        raise ValueError(f"{text!r}: only {n} words timed, too few to cut")
    lo = max(1, math.ceil(CUT_FROM * n))
    hi = min(n - 1, max(lo, math.floor(CUT_TO * n)))
    c = rng.randint(lo, hi)
    (_, start_before, end_before), (_, start_after, end_after) = words[c - 1], words[c]
    at, db = quietest_cut(
        pcm,
        max(start_before + 0.05, end_before - BOUNDARY_SLACK_S),
        min(end_after - 0.05, start_after + BOUNDARY_SLACK_S),
    )
    pause = round(rng.uniform(*PAUSE_S), 2)
    # Fluent speech rarely falls silent between words: a short fade each side of the cut keeps
    # it from clicking.
    fade = np.sin(np.linspace(0.0, np.pi / 2, RATE * FADE_MS // 1000)) ** 2
    before, after = pcm[:at].astype(np.float64), pcm[at:].astype(np.float64)
    before[-len(fade) :] *= fade[::-1]
    after[: len(fade)] *= fade
    joined = concat_wavs_with_silence(
        [before.astype(np.int16), after.astype(np.int16)], int(pause * 1000), rate=RATE
    )
    return Paused(
        clip=Clip(text, joined, RATE),
        said=" ".join(w for w, _, _ in words[:c]),
        rest=" ".join(w for w, _, _ in words[c:]),
        cut_word=c,
        words=n,
        cut_s=round(at / RATE, 3),
        cut_db=db,
        pause_s=pause,
    )


class Material:
    """Every clip of a run, by voice and item; synthesized (cached in tests/artifacts/) and, for
    paused questions, timed when first asked for: `prepare` does it all before the services
    start, so that no synthesis or Whisper pass competes with them."""

    def __init__(self, voices: list[str], first_item: int = 0) -> None:
        self.voices = voices
        self.first_item = first_item  # where the lists start: a later run can say new things
        self._clips: dict[tuple[str, str], Clip] = {}
        self._paused: dict[tuple[str, str], Paused] = {}
        self._times = WordTimes()

    def clip(self, voice: str, text: str) -> Clip:
        key = (voice, text)
        if key not in self._clips:
            self._clips[key] = Clip(text, speech(voice, text), RATE)
        return self._clips[key]

    def _pick(self, texts: tuple[str, ...], voice: str, item: int) -> str:
        return texts[(self.first_item + item + STEP * self.voices.index(voice)) % len(texts)]

    def complete(self, voice: str, item: int) -> Clip:
        return self.clip(voice, self._pick(COMPLETE, voice, item))

    def paused(self, voice: str, item: int) -> Paused:
        text = self._pick(PAUSED, voice, item)
        key = (voice, text)
        if key not in self._paused:
            whole = self.clip(voice, text)
            rng = random.Random(f"{voice}|{text}")  # the same cut in every run
            self._paused[key] = pause_inside(text, whole.pcm, self._times(whole.pcm), rng)
        return self._paused[key]

    def over_story(self, voice: str, item: int, said: tuple[str, ...]) -> tuple[Clip, Clip, float]:
        """A story prompt, what is said over its reply (from `said`), and after how many
        seconds of the reply's audio."""
        v = self.voices.index(voice)
        item += self.first_item
        story = STORY_PROMPTS[(item + v) % len(STORY_PROMPTS)]
        return (
            self.clip(voice, story),
            self.clip(voice, said[(item + 2 * v) % len(said)]),
            OVER_DELAYS[item % len(OVER_DELAYS)],
        )

    def speakerphone(self, voice: str, item: int) -> Clip:
        """A short story asked for on a speakerphone."""
        return self.clip(voice, self._pick(SPEAKERPHONE, voice, item))

    def over_speakerphone(self, voice: str, item: int) -> tuple[Clip, Clip, float]:
        """A short story asked for on a speakerphone, the interruption said over its reply,
        and after how many seconds of the reply's audio."""
        said = INTERRUPTIONS[(item + 2 * self.voices.index(voice)) % len(INTERRUPTIONS)]
        return (
            self.speakerphone(voice, item),
            self.clip(voice, said),
            OVER_DELAYS[item % len(OVER_DELAYS)],
        )

    def prepare(self, counts: dict[str, int]) -> None:
        """Synthesize (and time) what items 0..count of each section will say, in every voice."""
        for voice in self.voices:
            say(f"[setup] {voice}: synthesizing and cutting the clips")
            for item in range(counts["complete"]):
                self.complete(voice, item)
            for item in range(counts["paused"]):
                p = self.paused(voice, item)
                say(
                    f"  paused {item + 1}: {p.said!r} | {p.pause_s:.2f} s | "
                    f"{p.rest!r}  (cut at {p.cut_s:.2f} s, "
                    f"{p.cut_db:.0f} dB)"
                )
            for item in range(max(counts["backchannels"], counts["interruptions"])):
                self.over_story(voice, item, BACKCHANNELS)
                self.over_story(voice, item, INTERRUPTIONS)
            if voice == self.voices[0]:  # the speakerphone's one voice
                for item in range(counts["speakerphone"]):
                    self.over_speakerphone(voice, item)
        self._times.close()
