"""The gateway's turn-taking policy, without audio, clock or network.

Invariants protected: speech onset over a playing reply pauses it at once; the reply is interrupted
(`barge_in`) only by words that take the turn, heard at the speech's first pause, and exactly once;
a backchannel ("uh-huh", "yeah, right"), no words, or speech shorter than the agent's
`min_interruption_ms` resume it, interrupt nothing and start no turn; with interruptions off,
speech over a reply is ignored. A pause early in the silence peeks, or speculates when nothing is
in flight; speech after it resumes the ASR and retracts a speculative turn; the end of turn
confirms a speculative turn only when its pass still covers all the speech. A single speech-like
frame pauses a reply and the next quiet one resumes it. Under semantic turn detection a pause is
also judged: a transcript that stops on "and", "the", "for" or an ellipsis waits the eagerness'
longest silence whatever the sound says; a question waits the shortest; a statement follows the
end-of-turn model's score; no judgement at all waits `unsure`.
"""

from __future__ import annotations

from dataclasses import replace

from services.common.messages import AgentConfig, FixedTurnDetection, SemanticTurnDetection
from services.gateway.turn_cues import (
    SEMANTIC_WAITS,
    echoes,
    end_window,
    is_backchannel,
    text_cue,
)
from services.gateway.turn_policy import (
    DropUtterance,
    EndUtterance,
    Interrupt,
    Judge,
    Overhear,
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


def test_speech_over_a_reply_pauses_it_and_its_words_interrupt_it() -> None:
    policy = TurnPolicy(min_interruption_ms=150)
    assert policy.on_event(START, PLAYING) == [PauseReply(), StartUtterance(0, b"pre")]
    paused = replace(PLAYING, reply_paused=True, asr_ready=True)
    assert policy.on_event(*frame(160, paused)) == [Stream(FRAME)]  # no interrupt on length
    assert policy.on_event(SpeechPause(t_ms=260), paused) == [Peek(), Overhear()]
    assert policy.on_overheard("Wait, stop.") == [Interrupt("barge_in")]
    assert policy.on_overheard("Wait, stop.") == []  # only once
    after = Situation()  # the reply is gone
    assert policy.on_event(*frame(192, after)) == [Stream(FRAME)]
    end = policy.on_event(SpeechEnd(t_ms=900, speech_end_ms=400), after)
    assert end == [EndUtterance(900, 400)]  # the next turn; no resume: the reply was stopped


def test_a_backchannel_over_a_reply_resumes_it_and_starts_no_turn() -> None:
    for heard in ["Uh-huh.", "Yeah, right.", "Mm-hmm", "Okay.", "", "  "]:
        policy = TurnPolicy(min_interruption_ms=150)
        policy.on_event(START, PLAYING)
        paused = replace(PLAYING, reply_paused=True, asr_ready=True)
        policy.on_event(*frame(300, paused))
        policy.on_event(SpeechPause(t_ms=400), paused)
        assert policy.on_overheard(heard) == [ResumeReply(), DropUtterance()], heard
        assert policy.on_event(SpeechEnd(t_ms=900, speech_end_ms=400), paused) == []
    policy = TurnPolicy(min_interruption_ms=150)
    policy.on_event(START, PLAYING)
    policy.on_event(*frame(300, replace(PLAYING, asr_ready=True)))
    policy.on_event(SpeechPause(t_ms=400), replace(PLAYING, asr_ready=True))
    assert policy.on_overheard(None) == []  # the pass failed: the final text decides
    end = policy.on_event(SpeechEnd(t_ms=900, speech_end_ms=400), PLAYING)
    assert end == [EndUtterance(900, 400, overlap=True)]


def test_the_replys_own_words_coming_back_resume_it_and_the_users_interrupt_it() -> None:
    """A speakerphone's echo the canceller let through: Whisper writes the reply's own words."""
    reply = "Once upon a time a little fox lived by the river and every morning she went".split()
    for echo in ["Once upon a time, a little fox.", "lived by the river and every", "You are."]:
        policy = TurnPolicy(min_interruption_ms=150)
        policy.on_event(START, PLAYING)
        paused = replace(PLAYING, reply_paused=True, asr_ready=True)
        policy.on_event(*frame(600, paused))
        policy.on_event(SpeechPause(t_ms=700), paused)
        assert policy.on_overheard(echo, reply) == [ResumeReply(), DropUtterance()], echo
    for user in [
        "Tell me about dragons instead.",
        "No, a little fox is boring.",  # the reply's words, but "no" takes the turn
        "Was the fox by the river?",  # a question
        "Can you tell me a joke about a fox?",
    ]:
        assert not echoes(user, reply), user
    assert echoes("a little fox lived by the river", reply)
    assert not echoes("a little fox lived by the river", [])  # no reply words: not its echo


def test_backchannels_are_told_from_words_that_take_the_turn() -> None:
    for yes in [
        "Uh-huh.",
        "Mm-hmm.",
        "Yeah.",
        "Yeah, yeah.",
        "Okay, got it.",
        "I see.",
        "Right.",
        "Sure.",
        "Oui, d'accord.",
        "Ja, genau.",
        "Vale.",
        "Mhm, right, okay.",
        "Ow.",  # a murmured "mm-hmm" Whisper made words of
        "All gone.",
        "Thank you.",
        "Fair enough.",
    ]:
        assert is_backchannel(yes), yes
    for no in [
        "Wait.",
        "Stop.",
        "No.",
        "No, no.",
        "Okay, stop.",
        "Yeah, but what about Paris?",
        "What?",
        "Why?",
        "Hold on.",
        "Hang on.",
        "Excuse me.",
        "Tell me more.",
        "Sorry, I meant Berlin.",
        "That's enough.",  # "Stop, that's enough." with its first word lost
        "Enough.",
        "Basta.",
        "Yes yes yes yes yes",
        "",
        None,
    ]:
        assert not is_backchannel(no), no


def test_a_blip_over_a_reply_resumes_it_and_interrupts_nothing() -> None:
    policy = TurnPolicy(min_interruption_ms=150)
    assert PauseReply() in policy.on_event(START, PLAYING)
    paused = replace(PLAYING, reply_paused=True, asr_ready=True)
    assert policy.on_event(*frame(96, paused)) == [Stream(FRAME)]
    # resumed at the pause, not at the end of turn; no words asked for
    assert policy.on_event(SpeechPause(t_ms=200), paused) == [ResumeReply(), DropUtterance()]
    assert policy.on_event(SpeechEnd(t_ms=600, speech_end_ms=96), paused) == []


def test_speech_while_a_turn_is_in_flight_without_audio_interrupts_without_pausing() -> None:
    policy = TurnPolicy(min_interruption_ms=0)
    thinking = Situation(turn_in_flight=True, asr_ready=True)
    assert policy.on_event(START, thinking) == [StartUtterance(0, b"pre")]  # no prefill
    assert policy.on_event(*frame(64, thinking)) == [Stream(FRAME)]
    assert policy.on_event(SpeechPause(t_ms=200), thinking) == [Peek(), Overhear()]
    assert policy.on_overheard("Actually, make it Berlin.") == [Interrupt("barge_in")]


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


def test_semantic_turn_detection_judges_each_pause_and_starts_unsure() -> None:
    agent = AgentConfig(turn_detection=SemanticTurnDetection(eagerness="high"))
    policy = TurnPolicy.for_agent(agent, speculative_turns=True)
    assert policy.initial_window_ms == SEMANTIC_WAITS["high"].unsure
    policy.on_event(START, Situation())
    pause = SpeechPause(t_ms=400)
    assert policy.on_event(pause, Situation(asr_ready=True)) == [Speculate(), Judge()]
    busy = Situation(asr_ready=True, turn_in_flight=True)
    assert policy.on_event(pause, busy) == [Peek(), Judge()]
    fixed = AgentConfig(turn_detection=FixedTurnDetection(), end_of_turn_silence_ms=700)
    plain = TurnPolicy.for_agent(fixed, speculative_turns=True)
    assert plain.initial_window_ms == 700 and plain.judge(0.9, "Hi?") is None
    plain.on_event(START, Situation())
    assert plain.on_event(pause, Situation(asr_ready=True)) == [Speculate()]
    assert AgentConfig().turn_detection == SemanticTurnDetection(eagerness="auto")


def test_the_text_so_far_tells_a_fragment_from_a_question() -> None:
    for fragment in [
        "I'd like to book a table for",
        "I'd like to book a table for...",
        "So I was thinking, and",
        "What is the color of?",
        "How many legs does a?",
        "Can you tell me the, um",
        "Je voudrais une table pour",
        "My favourite is,",
    ]:
        assert text_cue(fragment) == "incomplete", fragment
    for question in ["What is the capital of France?", "What is it made of?", "Where are you?"]:
        assert text_cue(question) == "complete", question
    for unknown in ["My name is Dana.", "Thank you", "", None, "  "]:
        assert text_cue(unknown) is None, unknown


def test_a_verdict_weighs_the_sound_with_the_text_and_never_waits_past_the_cap() -> None:
    w = SEMANTIC_WAITS["medium"]
    cases = [
        (0.95, "I'd like to book a table for", "incomplete"),  # the text wins over the sound
        (0.30, "How many legs does a spider have?", "complete"),  # a question, a doubtful sound
        # a question whose sound plainly goes on: Whisper may have dropped the word it stopped on
        (0.02, "Is it safe to leave cooked rice out?", "unsure"),
        (0.90, "I need a recipe for a vegetable soup", "unsure"),  # Whisper ended no sentence
        (0.90, "Can you help me", "unsure"),
        (None, "What time is it?", "complete"),  # not scored: the text alone
        (0.90, "My name is Dana.", "complete"),
        (0.35, "My name is Dana.", "unsure"),
        (0.05, "I went to the shop.", "incomplete"),
        (None, "My name is Dana.", "unsure"),
        (0.90, None, "complete"),  # no text: only a sure sound ends it soon
        (0.60, None, "unsure"),
    ]
    for p_audio, text, judged in cases:
        verdict = end_window(w, p_audio, text)
        assert verdict.judged == judged, (p_audio, text, verdict)
        assert verdict.window_ms == getattr(w, judged) <= w.incomplete
    for eagerness in ("high", "medium", "low"):
        waits = SEMANTIC_WAITS[eagerness]
        assert waits.complete < waits.unsure < waits.incomplete
    assert SEMANTIC_WAITS["high"].incomplete < SEMANTIC_WAITS["low"].incomplete


def test_the_judged_window_holds_for_its_silence_and_resets_when_speech_resumes() -> None:
    d = TurnDetector(pause_ms=96, end_of_turn_silence_ms=1600)
    loud, quiet = bytes(FRAME_BYTES), bytes(FRAME_BYTES)
    events: list[TurnEvent] = []
    for _ in range(10):
        events += d.push_frame(loud, prob=0.9)
    for _ in range(5):
        events += d.push_frame(quiet, prob=0.0)
    d.set_window(128)  # judged complete after 160 ms of silence: ends at the next frame
    events += d.push_frame(quiet, prob=0.0)
    assert isinstance(events[-1], SpeechEnd) and events[-1].t_ms == 16 * FRAME_MS
    for _ in range(10):
        events += d.push_frame(loud, prob=0.9)
    assert d.window_ms == 1600  # a new turn starts unjudged
    for _ in range(5):
        d.push_frame(quiet, prob=0.0)
    d.set_window(2500)
    for _ in range(3):
        d.push_frame(loud, prob=0.9)
    assert d.window_ms == 1600  # speech resumed: the judgement was of the pause before


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


def test_short_speech_over_a_reply_pauses_it_only_while_it_sounds() -> None:
    policy = TurnPolicy(min_interruption_ms=150)
    policy.on_event(START, PLAYING)  # the onset paused it
    sounding = replace(PLAYING, in_speech=True, reply_paused=True, speech_like=True, quiet=False)
    assert policy.after_audio(replace(sounding, speech_ms=64)) == []
    quiet = replace(sounding, speech_like=False, quiet=True, speech_ms=64)
    assert policy.after_audio(quiet) == [ResumeReply()]  # an echo's blip: not held
    playing = replace(sounding, reply_paused=False, speech_ms=96)
    assert policy.after_audio(playing) == [PauseReply()]  # it sounds again
    policy.on_event(*frame(160, sounding))  # long enough to interrupt: held for its words
    assert policy.after_audio(replace(quiet, speech_ms=160)) == []


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


def test_with_the_detector_a_long_barge_in_asks_for_its_words_and_a_short_one_resumes() -> None:
    speech_frames = -(-150 // FRAME_MS) + 1  # onset frame included: 150 ms of speech and more
    long = _run([0.9] * speech_frames + [0.0] * 12, replace(PLAYING, asr_ready=True))
    assert long[:2] == ["PauseReply", "StartUtterance"]
    assert "Overhear" in long and "Interrupt" not in long and "ResumeReply" not in long
    assert long[-1] == "EndUtterance"  # the words decide (here none came: the final text does)
    short = _run([0.9] * 3 + [0.0] * 12, PLAYING)
    assert "Interrupt" not in short and "Overhear" not in short
    assert short[-2:] == ["ResumeReply", "DropUtterance"]
