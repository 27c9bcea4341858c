"""TTS engines speak a clause as streamed PCM16 chunks, and stop when told.

Invariant: every engine yields PCM16 mono audio of a plausible length for its text, in chunks
of at most ~100 ms so playback can start early, and cancelling the consumer (or closing the
generator) stops synthesis within 100 ms with nothing yielded afterwards — for Piper that means
the onnxruntime run itself is aborted and the CPU is free again. The clause splitter hands TTS
the first clause of a reply as soon as it is complete, without splitting decimals or
abbreviations, and without markdown a voice would read out.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from services.tts.engine import TTSEngine
from services.tts.engines import EspeakEngine, FakeTTSEngine, PiperEngine
from services.tts.text import ClauseSplitter, clean_for_speech

SENTENCE = "Hello there, how are you doing today?"
# One sentence = one onnx run of ~25 s of audio (1.5 s of CPU): long enough to cancel mid-run.
LONG_SENTENCE = " ".join(["this sentence keeps going on and on without any stop at all"] * 8)


async def collect(engine: TTSEngine, text: str) -> tuple[list[bytes], float]:
    """All chunks of `text`, and the seconds until the first one."""
    t0 = time.perf_counter()
    first = float("nan")
    chunks: list[bytes] = []
    async for chunk in engine.synthesize(text):
        if not chunks:
            first = time.perf_counter() - t0
        chunks.append(chunk)
    return chunks, first


def check_audio(engine: TTSEngine, chunks: list[bytes], min_s: float, max_s: float) -> float:
    """Chunks are whole PCM16 samples, <= ~100 ms each, not silent; returns the duration."""
    assert chunks, "no audio"
    max_bytes = 2 * engine.sample_rate * 101 // 1000
    assert all(0 < len(c) <= max_bytes and len(c) % 2 == 0 for c in chunks)
    pcm = np.frombuffer(b"".join(chunks), dtype=np.int16)
    seconds = pcm.size / engine.sample_rate
    assert min_s <= seconds <= max_s, f"{seconds:.2f} s of audio"
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 300, "silent audio"
    return seconds


async def cancel_mid_stream(
    engine: TTSEngine, text: str, wait_s: float
) -> tuple[float, int, float]:
    """Start `text`, cancel the consumer after `wait_s`: (cancel ms, chunks after, busy CPU-s)."""
    received: list[float] = []

    async def consume() -> None:
        async for _ in engine.synthesize(text):
            received.append(time.perf_counter())

    task = asyncio.create_task(consume())
    await asyncio.sleep(wait_s)
    cpu0 = time.process_time()
    t_cancel = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancel_ms = (time.perf_counter() - t_cancel) * 1000.0
    await asyncio.sleep(0.3)  # anything still running would burn CPU and yield here
    late = sum(1 for t in received if t > t_cancel)
    return cancel_ms, late, time.process_time() - cpu0


# --- Piper (the default voice) --------------------------------------------------------------


NUMBER_CLAUSES = (
    "The population grew from 1,234,567 in 1987 to 2,345,678 in 2023, an increase of 90.1 "
    "percent over 36 years, while the area stayed at 3,456 square kilometres and 789 parks",
    "Here are the numbers: 12, 34, 56, 78, 90, 123, 456, 789, 1011, 1213, 1415, 1617, 1819, "
    "2021, 2223, 2425, 2627, 2829, 3031, 3233, 3435, 3637, 3839, 4041, 4243",
)


@pytest.fixture(scope="module")
async def piper() -> AsyncIterator[PiperEngine]:
    engine = PiperEngine()
    await engine.load()
    await collect(engine, "Ready.")  # warm up, as the worker does
    yield engine
    await engine.aclose()


async def test_piper_speaks_a_sentence_starting_quickly(piper: PiperEngine) -> None:
    assert piper.sample_rate == 22050
    chunks, first = await collect(piper, SENTENCE)
    seconds = check_audio(piper, chunks, 1.0, 5.0)
    print(f"\npiper: first audio {first * 1000:.0f} ms, {seconds:.2f} s, {len(chunks)} chunks")
    assert len(chunks) >= 10  # split into ~100 ms chunks, not one blob
    assert first < 1.5  # 62-67 ms quiet, up to ~0.5 s on a busy machine


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def test_piper_memory_stays_bounded_after_clauses_longer_than_the_warm_up() -> None:
    """onnxruntime's arena keeps what its largest run needed. Numbers read out in full make a
    short clause long audio: these two took the arena from ~400 MB to 1.7 GB, for good."""
    from services.tts.worker import WARMUP_TEXT

    engine = PiperEngine()
    try:
        await engine.load()
        await collect(engine, WARMUP_TEXT)  # as the worker does
        warm = _rss_mib()
        for text in NUMBER_CLAUSES:
            chunks, _ = await collect(engine, text)
            assert check_audio(engine, chunks, 10.0, 60.0)
        grown = _rss_mib() - warm
        print(f"\npiper: {warm:.0f} MiB after the warm-up, {grown:+.0f} MiB after long clauses")
        assert grown < 150, f"the arena kept {grown:.0f} MiB"
        chunks, first = await collect(engine, "Okay, here it is.")  # still speaks at once
        assert chunks and first < 1.0
    finally:
        await engine.aclose()


async def test_piper_cancel_aborts_the_onnx_run(piper: PiperEngine) -> None:
    cpu0 = time.process_time()
    cancel_ms, late, cpu_after = await cancel_mid_stream(piper, LONG_SENTENCE, 0.3)
    print(f"\npiper: cancel took {cancel_ms:.1f} ms; CPU after cancel {cpu_after:.3f} s")
    assert time.process_time() - cpu0 - cpu_after > 0.05, "synthesis was not running"
    assert cancel_ms < 300
    assert late == 0
    assert cpu_after < 0.15, "the onnx run kept going after cancel"
    # The voice is free at once for the next clause.
    chunks, first = await collect(piper, "Okay.")
    assert chunks and first < 1.0


async def test_piper_closing_the_generator_stops_between_sentences(piper: PiperEngine) -> None:
    stream = piper.synthesize("First sentence here. " + LONG_SENTENCE + ".")
    assert await anext(stream)
    t0 = time.perf_counter()
    await stream.aclose()  # type: ignore[attr-defined]
    assert (time.perf_counter() - t0) < 0.1
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


# --- espeak-ng and the fake ------------------------------------------------------------------


needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="no espeak-ng")


def espeak_children() -> list[int]:
    """PIDs of this process's espeak-ng children (Linux /proc)."""
    me = str(os.getpid())
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split()
        except OSError:
            continue
        if fields[1] == "(espeak-ng)" and fields[3] == me:
            pids.append(int(stat.parent.name))
    return pids


@needs_espeak
async def test_espeak_speaks_and_is_killed_on_cancel() -> None:
    engine = EspeakEngine()
    await engine.load()
    chunks, first = await collect(engine, SENTENCE)
    seconds = check_audio(engine, chunks, 1.0, 5.0)
    print(f"\nespeak: first audio {first * 1000:.0f} ms, {seconds:.2f} s audio")
    assert first < 1.0
    stream = engine.synthesize(LONG_SENTENCE * 3)
    assert await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert espeak_children() == []
    cancel_ms, late, _ = await cancel_mid_stream(engine, LONG_SENTENCE * 20, 0.01)
    assert cancel_ms < 300 and late == 0 and espeak_children() == []


async def test_fake_engine_makes_real_audio_proportional_to_text() -> None:
    engine = FakeTTSEngine(sample_rate=16000, ms_per_char=60)
    chunks, first = await collect(engine, "a" * 50)
    assert check_audio(engine, chunks, 2.99, 3.01) and first < 0.05
    cancel_ms, late, _ = await cancel_mid_stream(engine, "b" * 2000, 0.0)
    assert cancel_ms < 100 and late == 0


# --- the clause splitter -----------------------------------------------------------------------


def split(text: str, step: int = 3, **kwargs: int) -> list[tuple[int, str]]:
    """Feed `text` in `step`-character deltas: [(chars fed when emitted, -1 = flush), clause]."""
    splitter = ClauseSplitter(**kwargs)
    out = []
    for i in range(0, len(text), step):
        out += [(i + step, c) for c in splitter.feed(text[i : i + step])]
    return out + [(-1, c) for c in splitter.flush()]


@pytest.mark.parametrize(
    ("text", "clauses"),
    [
        ("Hi! How are you?", ["Hi!", "How are you?"]),
        (
            "Sure, I can help with that, no problem. Later, we can, if you like, talk more.",
            [
                "Sure, I can help with that,",
                "no problem.",
                "Later, we can, if you like, talk more.",
            ],
        ),
        (
            "It is 3.5 meters, or $1,000.50 in total. Next.",
            ["It is 3.5 meters,", "or $1,000.50 in total.", "Next."],
        ),
        (
            "Mr. Smith met Dr. Jones e.g. at noon. J. K. Rowling wrote vs. nobody. Bye.",
            ["Mr. Smith met Dr. Jones e.g. at noon.", "J. K. Rowling wrote vs. nobody.", "Bye."],
        ),
        (
            "We sell pears etc. and apples. At 5 p.m. Tom came. No. It is No. 5.",
            ["We sell pears etc. and apples.", "At 5 p.m.", "Tom came.", "No.", "It is No. 5."],
        ),
        (
            "Steps:\n1. Heat the **oven**.\n2. Add `salt`.\n\n## Done\n- [Enjoy](http://x.y/z) it",
            ["Steps:", "1. Heat the oven.", "2. Add salt.", "Done", "Enjoy it"],
        ),
        (
            "Well — I think this plan is good; let's go. *** ",
            ["Well — I think this plan is good;", "let's go."],
        ),
        ("Visit example.com now.", ["Visit example.com now."]),
    ],
)
def test_splitter_cases(text: str, clauses: list[str]) -> None:
    for step in (1, 3, 7):
        assert [c for _, c in split(text, step)] == clauses, f"step {step}"


def test_splitter_emits_first_clause_before_the_sentence_ends() -> None:
    text = "Of course, I can check that for you, and here is the forecast for Paris. It is sunny."
    out = split(text, step=2)
    # "Of course," is too short to speak alone; the first comma after 4 words ends the clause.
    assert out[0] == (38, "Of course, I can check that for you,")
    assert out[1] == (74, "and here is the forecast for Paris.")  # later: whole sentences
    assert out[2] == (-1, "It is sunny.")


@pytest.mark.parametrize(
    ("text", "first", "rest"),
    [
        (
            "The largest planet in the solar system is Jupiter, by far. It is huge.",
            "The largest planet",  # later clauses stay whole sentences ("... is Jupiter")
            ["in the solar system is Jupiter, by far.", "It is huge."],
        ),
        ("The capital of France is Paris.", "The capital of France", ["is Paris."]),
        ("A spider has eight legs.", "A spider has eight legs.", []),  # 2 words before "has"
        ("Once upon a time, there was a fox.", "Once upon a time,", ["there was a fox."]),
        ("Sure thing in time.", "Sure thing in time.", []),  # "in" follows only 2 words
        ("Winter inside is cold.", "Winter inside is cold.", []),  # "inside" opens nothing
        (
            "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level.",
            "Water boils at 100 degrees Celsius",  # "at" follows 2 words: the aside cuts
            ["(212 degrees Fahrenheit) at sea level."],
        ),
    ],
)
def test_splitter_first_clause_may_end_before_a_phrase(
    text: str, first: str, rest: list[str]
) -> None:
    for step in (1, 3, 7):
        out = [c for _, c in split(text, step, first_phrase_words=3)]
        assert out == [first, *rest], f"step {step}"
        assert " ".join(out) == clean_for_speech(text)


def test_the_first_clause_ends_as_soon_as_the_word_that_opens_a_phrase_arrives() -> None:
    """The LLM's next token is not awaited: the cut before "is" is a word boundary anyway."""
    splitter = ClauseSplitter(first_phrase_words=3)
    tokens = ["The", " capital", " of", " France", " is"]
    assert [splitter.feed(t) for t in tokens][-1] == ["The capital of France"]
    assert splitter.feed(" Paris.") == [] and splitter.flush() == ["is Paris."]


def test_splitter_breaks_long_sentences_at_commas() -> None:
    long = "The first clause is short. " + ("word " * 30 + "and, ") * 3 + "the end."
    out = [c for _, c in split(long, step=5, max_chars=200)]
    assert out[0] == "The first clause is short."
    assert all(len(c) <= 200 for c in out) and len(out) >= 3
    assert all(c.endswith((",", ".")) for c in out)
    assert " ".join(out) == clean_for_speech(long)


def test_clean_for_speech() -> None:
    assert clean_for_speech("**Bold** and _it_ `code` # x  \n y") == "Bold and it code x y"
    assert clean_for_speech("snake_case [link](https://a.b)") == "snake case link"
    assert clean_for_speech("Sure! 😊 Paris is **lovely** 🇫🇷. 👍") == "Sure! Paris is lovely."


# --- coqui-tts (optional extra: scripts/install-coqui.sh) --------------------------------------


def build_tiny_vits(folder: Path, phonemes: bool) -> tuple[str, str]:
    """A random-weight VITS small enough to build and run in about a second."""
    os.environ.setdefault("COQUI_TOS_AGREED", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    torch.manual_seed(0)
    args = VitsArgs(
        hidden_channels=16,
        hidden_channels_ffn_text_encoder=32,
        num_layers_text_encoder=1,
        num_layers_posterior_encoder=1,
        num_layers_flow=1,
        upsample_initial_channel_decoder=16,
        resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3, 5]],
        upsample_rates_decoder=[8, 8, 4],
        upsample_kernel_sizes_decoder=[16, 16, 8],
        use_sdp=False,
        init_discriminator=False,
    )
    if phonemes:  # as coqui's released English VITS: IPA from the system espeak-ng
        config = VitsConfig(
            model_args=args,
            use_phonemes=True,
            phonemizer="espeak",
            phoneme_language="en-us",
            text_cleaner="phoneme_cleaners",
        )
    else:
        config = VitsConfig(
            model_args=args,
            use_phonemes=False,
            text_cleaner="basic_cleaners",
            characters=CharactersConfig(
                characters_class="TTS.tts.models.vits.VitsCharacters",
                pad="_",
                eos="",
                bos="",
                blank=None,
                characters="abcdefghijklmnopqrstuvwxyz",
                punctuations=" !',.?-",
                is_unique=True,
                is_sorted=True,
            ),
        )
    config.audio.sample_rate = 16000
    model = Vits(config)
    model_path, config_path = folder / "model.pth", folder / "config.json"
    torch.save({"model": model.state_dict()}, model_path)
    config.save_json(str(config_path))
    return str(model_path), str(config_path)


@pytest.mark.parametrize("phonemes", [False, True], ids=["characters", "espeak-phonemes"])
async def test_coqui_loads_local_model_files_and_speaks(tmp_path: Path, phonemes: bool) -> None:
    pytest.importorskip("TTS.api", reason="coqui-tts not installed (scripts/install-coqui.sh)")
    if phonemes and shutil.which("espeak-ng") is None:
        pytest.skip("no espeak-ng for the phoneme config")
    from services.tts.engines import CoquiEngine

    engine = CoquiEngine(*build_tiny_vits(tmp_path, phonemes))
    await engine.load()
    assert engine.sample_rate == 16000
    chunks, first = await collect(engine, SENTENCE)
    # Random weights: the length comes from the untrained duration predictor, not speech.
    seconds = check_audio(engine, chunks, 0.2, 20.0)
    print(f"\ncoqui tiny VITS: first audio {first * 1000:.0f} ms, {seconds:.2f} s")
    cancel_ms, late, _ = await cancel_mid_stream(engine, SENTENCE * 20, 0.02)
    assert cancel_ms < 300 and late == 0
    await engine.aclose()


async def test_coqui_reports_missing_model_files(tmp_path: Path) -> None:
    pytest.importorskip("TTS.api", reason="coqui-tts not installed (scripts/install-coqui.sh)")
    from services.tts.engines import CoquiEngine, CoquiEngineError

    engine = CoquiEngine(str(tmp_path / "nope.pth"), str(tmp_path / "nope.json"))
    with pytest.raises(CoquiEngineError, match="not found"):
        await engine.load()
