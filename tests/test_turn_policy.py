"""The gateway's turn-taking policy, without audio, clock or network.

Invariants protected: speech onset over a playing reply pauses it at once; the reply is
interrupted (`barge_in`) only once the speech has lasted the agent's `min_interruption_ms`, and
exactly once; speech that ends sooner resumes it and interrupts nothing; with interruptions off,
speech over a reply is ignored. A pause early in the silence peeks, or speculates when nothing
is in flight; speech after it resumes the ASR and retracts a speculative turn; the end of turn
confirms a speculative turn only when its pass still covers all the speech. A single
speech-like frame pauses a reply and the next quiet one resumes it.
"""

from __future__ import annotations

from dataclasses import replace

from services.gateway.turn_policy import (
    EndUtterance,
    Interrupt,
    PauseReply,
    Peek,
    Prefill,
    ResumeAsr,
    ResumeReply,
    Retract,
    Situation,
    Speculate,
    StartUtterance,
    Stream,
    TurnPolicy,
)
from services.gateway.vad import (
    FRAME_BYTES,
    FRAME_MS,
    SpeechEnd,
    SpeechFrame,
    SpeechPause,
    SpeechResume,
    SpeechStart,
    TurnDetector,
    TurnEvent,
)

FRAME = bytes(FRAME_BYTES)
START = SpeechStart(t_ms=0, preroll=b"pre")
IDLE = Situation()
PLAYING = Situation(reply_playing=True, turn_in_flight=True)


def frame(speech_ms: int, now: Situation = IDLE) -> tuple[SpeechFrame, Situation]:
    return SpeechFrame(pcm=FRAME), replace(now, in_speech=True, speech_ms=speech_ms)


def test_speech_with_nothing_in_flight_opens_an_utterance_and_prefills() -> None:
    policy = TurnPolicy()
    assert policy.on_event(START, Situation()) == [StartUtterance(0, b"pre"), Prefill()]
    assert policy.on_event(*frame(32)) == [Stream(FRAME)]
    end = policy.on_event(SpeechEnd(t_ms=800, speech_end_ms=300), Situation())
    assert end == [EndUtterance(800, 300, confirm=False)]
    assert policy.on_event(*frame(0)) == []  # no utterance open: the frame goes nowhere


def test_speech_over_a_reply_pauses_it_and_interrupts_it_once_long_enough() -> None:
    policy = TurnPolicy(min_interruption_ms=150)
    assert policy.on_event(START, PLAYING) == [PauseReply(), StartUtterance(0, b"pre")]
    paused = replace(PLAYING, reply_paused=True)
    assert policy.on_event(*frame(128, paused)) == [Stream(FRAME)]
    assert policy.on_event(*frame(160, paused)) == [Stream(FRAME), Interrupt("barge_in")]
    after = Situation()  # the reply is gone
    assert policy.on_event(*frame(192, after)) == [Stream(FRAME)]  # only once
    end = policy.on_event(SpeechEnd(t_ms=900, speech_end_ms=400), after)
    assert end == [EndUtterance(900, 400)]  # no resume: the reply was stopped


def test_a_blip_over_a_reply_resumes_it_and_interrupts_nothing() -> None:
    policy = TurnPolicy(min_interruption_ms=150)
    assert PauseReply() in policy.on_event(START, PLAYING)
    paused = replace(PLAYING, reply_paused=True)
    assert policy.on_event(*frame(96, paused)) == [Stream(FRAME)]
    end = policy.on_event(SpeechEnd(t_ms=600, speech_end_ms=96), paused)
    assert end == [ResumeReply(), EndUtterance(600, 96)]


def test_speech_while_a_turn_is_in_flight_without_audio_interrupts_without_pausing() -> None:
    policy = TurnPolicy(min_interruption_ms=0)
    thinking = Situation(turn_in_flight=True)
    assert policy.on_event(START, thinking) == [StartUtterance(0, b"pre")]  # no prefill
    assert policy.on_event(*frame(64, thinking)) == [Stream(FRAME), Interrupt("barge_in")]


def test_without_interruptions_speech_over_a_reply_is_ignored() -> None:
    policy = TurnPolicy(interruptions=False)
    assert policy.on_event(START, PLAYING) == []
    assert policy.on_event(*frame(500, PLAYING)) == []
    assert policy.on_event(SpeechEnd(t_ms=900, speech_end_ms=500), PLAYING) == []
    # once the reply is done, speech is a turn again
    assert policy.on_event(START, Situation()) == [StartUtterance(0, b"pre"), Prefill()]


def test_a_pause_speculates_when_idle_and_peeks_otherwise() -> None:
    pause = SpeechPause(t_ms=400)
    policy = TurnPolicy()
    policy.on_event(START, Situation())
    assert policy.on_event(pause, Situation()) == []  # no asr replica yet: nothing to ask
    assert policy.on_event(pause, Situation(asr_ready=True)) == [Speculate()]
    busy = Situation(asr_ready=True, turn_in_flight=True)
    assert policy.on_event(pause, busy) == [Peek()]
    plain = TurnPolicy(speculative_turns=False)
    plain.on_event(START, Situation())
    assert plain.on_event(pause, Situation(asr_ready=True)) == [Peek()]


def test_speaking_on_after_a_pause_resumes_the_asr_and_retracts_a_speculative_turn() -> None:
    resume = SpeechResume(t_ms=500)
    policy = TurnPolicy()
    policy.on_event(START, Situation())
    assert policy.on_event(resume, Situation()) == []  # nothing was peeked
    assert policy.on_event(resume, Situation(peeked=True)) == [ResumeAsr()]
    both = Situation(peeked=True, speculated=True)
    assert policy.on_event(resume, both) == [ResumeAsr(), Retract()]


def test_the_end_of_turn_confirms_a_speculative_turn_only_if_its_pass_covers_the_speech() -> None:
    end = SpeechEnd(t_ms=900, speech_end_ms=400)
    for peeked, speculated, confirm in [
        (True, True, True),
        (False, True, False),
        (True, False, False),
    ]:
        policy = TurnPolicy()
        policy.on_event(START, Situation())
        now = Situation(peeked=peeked, speculated=speculated)
        assert policy.on_event(end, now) == [EndUtterance(900, 400, confirm)]


def test_one_speech_like_frame_pauses_a_reply_and_the_next_quiet_one_resumes_it() -> None:
    policy = TurnPolicy()
    loud = replace(PLAYING, speech_like=True)
    assert policy.after_audio(loud) == [PauseReply()]
    assert policy.after_audio(replace(loud, reply_paused=True)) == []  # already paused
    assert policy.after_audio(replace(PLAYING, reply_paused=True)) == [ResumeReply()]
    assert policy.after_audio(PLAYING) == []
    # confirmed speech takes over: no resume from here (SpeechEnd decides)
    assert policy.after_audio(loud) == [PauseReply()]
    assert policy.after_audio(replace(PLAYING, in_speech=True)) == []
    assert policy.after_audio(replace(PLAYING, reply_paused=True)) == []
    assert TurnPolicy(interruptions=False).after_audio(loud) == []
    assert TurnPolicy().after_audio(Situation(speech_like=True)) == []  # nothing playing


def _run(probs: list[float], now: Situation, min_interruption_ms: int = 150) -> list[object]:
    """Frames with forced speech probabilities through the real detector, then the policy."""
    detector = TurnDetector(vad=None, pause_ms=96, end_of_turn_silence_ms=320)
    policy = TurnPolicy(min_interruption_ms=min_interruption_ms)
    decisions: list[object] = []
    for p in probs:
        events: list[TurnEvent] = detector.push_frame(FRAME, prob=p)
        for ev in events:
            seen = replace(now, in_speech=detector.in_speech, speech_ms=detector.speech_ms)
            decisions += [type(d).__name__ for d in policy.on_event(ev, seen)]
    return decisions


def test_with_the_detector_a_long_barge_in_interrupts_and_a_short_one_does_not() -> None:
    speech_frames = -(-150 // FRAME_MS) + 1  # onset frame included: 150 ms of speech and more
    long = _run([0.9] * speech_frames + [0.0] * 12, PLAYING)
    assert long[:2] == ["PauseReply", "StartUtterance"]
    assert long.count("Interrupt") == 1 and "ResumeReply" not in long
    assert long[-1] == "EndUtterance"
    short = _run([0.9] * 3 + [0.0] * 12, PLAYING)
    assert "Interrupt" not in short
    assert short[-2:] == ["ResumeReply", "EndUtterance"]
