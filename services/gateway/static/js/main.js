// The conversation page: starts or resumes the session, keeps the event socket up, and turns
// events into what the page shows. URL options: ?agent=ID, ?raw-audio=1 (see index.html).

import { EventSocket } from "./events.js";
import { Session } from "./session.js";
import { Conversation, Notices, StateBadge } from "./view.js";
import { Voice } from "./voice.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const agentParam = params.get("agent") || null;
const rawAudio = ["1", "true", "yes", "on"].includes((params.get("raw-audio") || "").toLowerCase());

const badge = new StateBadge($("state"), $("state-label"));
const notices = new Notices($("notices"));
const convo = new Conversation({
  list: $("messages"),
  empty: $("empty"),
  scroller: $("scroller"),
  announcer: $("announcer"),
});
const voice = new Voice({
  audio: $("reply-audio"),
  raw: rawAudio,
  onConnection: voiceConnection,
  onLevels: ({ mic, reply }) => {
    badge.level(reply);
    $("mic").style.setProperty("--mic-level", mic.toFixed(2));
  },
});

const app = {
  session: null,
  socket: null,
  link: "connecting", // connecting | open | disconnected: the event socket
  everOpen: false,
  agentState: "listening",
  fatal: null, // a message when the conversation cannot go on
  refreshTimer: null,
  micBusy: false,
  voiceRetries: 0,
};

// A read-only handle for tests and for anyone debugging in the console.
const stateLog = [];
window.voiceAssistant = {
  states: stateLog, // [[ms since load, state], ...]
  get sessionId() {
    return app.session && app.session.id;
  },
  get socket() {
    return app.socket;
  },
  voice,
  inboundAudio: () => voice.inboundAudio(),
  outboundAudio: () => voice.outboundAudio(),
  replyPeak: () => voice.replyPeakRms,
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function render() {
  let state;
  if (app.fatal) state = "error";
  else if (app.link === "open") state = app.agentState;
  else state = app.link;
  badge.set(state);
  if (stateLog.length === 0 || stateLog[stateLog.length - 1][1] !== state) {
    stateLog.push([Math.round(performance.now()), state]);
  }
  const busy = state === "thinking" || state === "speaking";
  $("stop").disabled = !busy;
  $("mic").disabled = !app.session || Boolean(app.fatal) || app.micBusy;
  $("send").disabled = Boolean(app.fatal) || !app.session;
  $("new").disabled = !app.session && !app.fatal; // nothing to end or start over yet
}

function fail(message) {
  app.fatal = message;
  notices.show("fatal", message, { level: "error" });
  stopVoice();
  render();
}

// ---- session and event socket --------------------------------------------------------------

async function start() {
  app.link = "connecting";
  render();
  let opened;
  for (let attempt = 0; ; attempt += 1) {
    try {
      opened = await Session.open(agentParam);
      break;
    } catch (err) {
      if (!err.transient) {
        fail(`Could not start a conversation: ${err.message}`);
        return;
      }
      app.link = "disconnected";
      render();
      const delay = Math.min(10000, 1000 * 2 ** attempt);
      notices.show("connection", `${err.message} Trying again in ${Math.round(delay / 1000)} s…`, {
        level: "warn",
      });
      await sleep(delay);
    }
  }
  notices.clear("connection");
  app.session = opened.session;
  if (opened.lost) {
    notices.show(
      "session",
      "The saved conversation could not be resumed (it had ended or its sign-in expired), " +
        "so this is a new one.",
      { level: "info", timeoutMs: 10000 },
    );
  }
  convo.reset(opened.resumed ? await history() : []);
  scheduleRefresh();
  openSocket();
  render();
}

async function history() {
  try {
    return await app.session.messages();
  } catch (err) {
    notices.show("history", `Earlier messages could not be loaded: ${err.message}`, {
      level: "warn",
      timeoutMs: 10000,
    });
    return [];
  }
}

function openSocket() {
  const session = app.session;
  app.socket = new EventSocket({
    url: () => session.eventsUrl(),
    onEvent,
    onStatus: (status, detail) => socketStatus(status, detail),
    renewToken: async () => {
      try {
        await session.refresh();
        return true;
      } catch {
        return false;
      }
    },
  });
  app.socket.start();
}

function socketStatus(status, detail) {
  if (status === "open") {
    const reconnected = app.everOpen && app.link !== "open";
    app.link = "open";
    app.everOpen = true;
    app.agentState = "listening"; // until an event says otherwise
    notices.clear("connection");
    if (reconnected) {
      notices.show("connection", "Reconnected.", { level: "info", timeoutMs: 3000 });
      resync();
    }
  } else if (status === "connecting") {
    app.link = app.everOpen ? "disconnected" : "connecting";
  } else if (status === "retrying") {
    app.link = app.everOpen ? "disconnected" : "connecting";
    const secs = Math.max(1, Math.round(detail.delayMs / 1000));
    notices.show(
      "connection",
      `The connection to the server dropped. Reconnecting in ${secs} s (try ${detail.attempt})… ` +
        "Your conversation is kept.",
      { level: "warn" },
    );
  } else if (status === "ended") {
    sessionGone(detail.code, detail.message);
  }
  render();
}

/** Messages that completed while the socket was down come from the stored history. */
async function resync() {
  try {
    convo.sync(await app.session.messages());
  } catch {
    // The live bubbles stay as they are; the next reload shows the full history.
  }
}

function sessionGone(code, message) {
  Session.forget();
  clearTimeout(app.refreshTimer);
  const why =
    code === 4410
      ? "This conversation has ended (perhaps in another tab)."
      : code === 4401
        ? "The sign-in for this conversation has expired."
        : `The server no longer knows this conversation${message ? ` (${message})` : ""}.`;
  fail(`${why} Press "New conversation" to start another.`);
}

function scheduleRefresh(delayMs) {
  clearTimeout(app.refreshTimer);
  const session = app.session;
  app.refreshTimer = setTimeout(async () => {
    if (session !== app.session || app.fatal) return;
    try {
      await session.refresh();
      scheduleRefresh();
    } catch (err) {
      if (err.transient) scheduleRefresh(15000);
      else sessionGone(err.status === 410 ? 4410 : 4401, err.message);
    }
  }, delayMs ?? session.refreshDelayMs());
}

// ---- events from the server ----------------------------------------------------------------

function onEvent(ev) {
  switch (ev.type) {
    case "agent.state":
      app.agentState = ev.state;
      render();
      break;
    case "transcript.partial":
      convo.partial(ev);
      break;
    case "transcript.final":
      convo.final(ev);
      break;
    case "reply.delta":
      notices.clear("waiting");
      convo.delta(ev);
      if (app.agentState === "listening") {
        app.agentState = "thinking"; // joined mid-reply (after a reconnect)
        render();
      }
      break;
    case "reply.done":
      convo.done(ev);
      break;
    case "turn.metrics":
      convo.metrics(ev);
      break;
    case "tool.call":
      convo.toolCall(ev);
      break;
    case "tool.result":
      convo.toolResult(ev);
      break;
    case "session.ended":
      Session.forget();
      clearTimeout(app.refreshTimer);
      fail(`${ev.reason}. Press "New conversation" to start another.`);
      break;
    case "turn.waiting": {
      const what = {
        tts: "the speech service",
        llm: "the language model",
        session: "the conversation service",
      }[ev.stage] ?? "a service";
      const left = Math.round(ev.deadline_s);
      notices.show("waiting", `Waiting for ${what}: busy or starting (up to ${left} s)…`, {
        level: "warn",
        timeoutMs: 6000,
      });
      break;
    }
    case "error":
      serverError(ev);
      break;
    default:
      break; // newer event types: ignored, as the schema allows
  }
}

function serverError(ev) {
  notices.clear("waiting");
  if (ev.code === "turn_failed") {
    if (ev.turn_id) convo.failed(ev);
    notices.show("turn", `The assistant could not answer: ${ev.message}`, { timeoutMs: 20000 });
  } else if (ev.code === "tts_unavailable") {
    notices.show("tts", "Spoken replies are unavailable right now; replies come as text.", {
      level: "warn",
      timeoutMs: 20000,
    });
  } else {
    notices.show(`error-${ev.code}`, `Server error: ${ev.message}`, { timeoutMs: 20000 });
  }
}

// ---- microphone ----------------------------------------------------------------------------

function showMic(state) {
  const mic = $("mic");
  mic.dataset.state = state; // off | starting | on
  mic.setAttribute("aria-pressed", String(state === "on"));
  $("mic-label").textContent =
    state === "on" ? "Turn microphone off" : state === "starting" ? "Starting microphone" : "Turn microphone on";
}

function stopVoice() {
  voice.stop();
  showMic("off");
}

async function toggleMic() {
  if (voice.on) {
    stopVoice();
    notices.clear("voice");
    return;
  }
  app.micBusy = true;
  showMic("starting");
  render();
  try {
    await voice.start(app.session);
    app.voiceRetries = 0;
    showMic("on");
    notices.clear("mic");
  } catch (err) {
    showMic("off");
    notices.show("mic", err.message, { level: err.kind === "denied" ? "warn" : "error" });
  } finally {
    app.micBusy = false;
    render();
  }
}

async function voiceConnection(state) {
  if (state === "connected") {
    app.voiceRetries = 0;
    notices.clear("voice");
  } else if (state === "failed" && voice.on) {
    if (app.voiceRetries < 2 && app.session) {
      app.voiceRetries += 1;
      notices.show("voice", "The voice connection dropped. Reconnecting…", { level: "warn" });
      try {
        await voice.connect(app.session);
        return;
      } catch {
        // falls through
      }
    }
    stopVoice();
    notices.show(
      "voice",
      "The voice connection failed. You can keep typing, or press the microphone button to try again.",
    );
  }
}

// ---- controls ------------------------------------------------------------------------------

function sendText(event) {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text || app.fatal) return;
  if (!app.socket || !app.socket.send({ type: "user.text", text })) {
    notices.show(
      "send",
      "Not connected right now: your message is still in the box. Send it again once the " +
        "connection is back.",
      { level: "warn", timeoutMs: 8000 },
    );
    return;
  }
  notices.clear("send");
  input.value = "";
  autosize();
}

function stopReply() {
  if ($("stop").disabled) return;
  app.socket && app.socket.send({ type: "interrupt" });
}

async function newConversation() {
  stopVoice();
  clearTimeout(app.refreshTimer);
  if (app.socket) app.socket.stop();
  const old = app.session;
  app.session = null;
  app.socket = null;
  notices.clearAll();
  render();
  if (old && !app.fatal) {
    try {
      await old.end();
    } catch (err) {
      if (err.status !== 410 && err.status !== 401) {
        notices.show("end", `The old conversation could not be ended on the server: ${err.message}`, {
          level: "warn",
          timeoutMs: 8000,
        });
      }
    }
  }
  Session.forget();
  notices.clear("fatal");
  Object.assign(app, { fatal: null, everOpen: false, agentState: "listening", link: "connecting" });
  convo.reset([]);
  await start();
  if (!app.fatal) {
    notices.show("session", "Started a new conversation.", { level: "info", timeoutMs: 3000 });
  }
  $("text").focus();
}

function autosize() {
  const input = $("text");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

$("composer").addEventListener("submit", sendText);
$("text").addEventListener("input", autosize);
$("text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", stopReply);
$("mic").addEventListener("click", toggleMic);
$("new").addEventListener("click", newConversation);
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && !e.defaultPrevented) stopReply();
});

showMic("off");
render();
start();
