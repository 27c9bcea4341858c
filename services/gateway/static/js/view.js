// What the page draws: the agent state, notices, and the conversation's message bubbles.
// Bubbles are keyed by turn id and role: a turn has one user message and at most one reply, in
// the live events and in the stored history alike.

const STATE_LABELS = {
  connecting: "Connecting…",
  listening: "Listening",
  thinking: "Thinking…",
  speaking: "Speaking",
  disconnected: "Disconnected", // the notice under it says it is reconnecting
  error: "Error",
};

export class StateBadge {
  constructor(el, label) {
    Object.assign(this, { el, label });
    this.state = null;
  }

  set(state, text) {
    const label = text || STATE_LABELS[state] || state;
    if (state === this.state && label === this.label.textContent) return;
    this.state = state;
    this.el.dataset.state = state;
    this.label.textContent = label;
  }

  /** Reply audio level 0..1 drives the speaking animation. */
  level(value) {
    this.el.style.setProperty("--level", value.toFixed(2));
  }
}

export class Notices {
  constructor(el) {
    this.el = el;
    this.items = new Map();
  }

  /** One notice per key (a newer one replaces it); level: info | warn | error. */
  show(key, text, { level = "error", timeoutMs = 0 } = {}) {
    this.clear(key);
    const item = document.createElement("div");
    item.className = `notice notice-${level}`;
    item.dataset.key = key;
    const p = document.createElement("p");
    p.textContent = text;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "notice-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    close.addEventListener("click", () => this.clear(key));
    item.append(p, close);
    this.el.append(item);
    const entry = { item, timer: null };
    if (timeoutMs) entry.timer = setTimeout(() => this.clear(key), timeoutMs);
    this.items.set(key, entry);
  }

  clear(key) {
    const entry = this.items.get(key);
    if (!entry) return;
    clearTimeout(entry.timer);
    entry.item.remove();
    this.items.delete(key);
  }

  clearAll() {
    for (const key of [...this.items.keys()]) this.clear(key);
  }
}

function formatMs(ms) {
  if (ms === null || ms === undefined) return null;
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

const METRIC_ROWS = [
  ["end_of_turn_ms", "end of speech → end of turn"],
  ["asr_ms", "speech recognition"],
  ["llm_first_token_ms", "LLM first token"],
  ["llm_tokens_per_s", "LLM speed"],
  ["tts_first_audio_ms", "speech synthesis first audio"],
  ["first_delta_ms", "to first text"],
  ["first_audio_ms", "to first audio"],
  ["total_ms", "whole turn"],
];

export class Conversation {
  constructor({ list, empty, scroller, announcer }) {
    Object.assign(this, { list, empty, scroller, announcer });
    this.bubbles = new Map(); // "role:turn_id" -> <li>
    this.seq = 0; // for messages without a turn id
  }

  /** Replaces everything with the stored history. */
  reset(messages = []) {
    this.list.replaceChildren();
    this.bubbles.clear();
    for (const m of messages) this.historyBubble(m);
    this.updateEmpty();
    this.scrollToEnd(true);
  }

  /**
   * After a reconnect: the stored history, then whatever is still live here and not in it yet
   * (a reply still being written, a partial transcript).
   */
  sync(messages) {
    const before = [...this.list.children];
    this.reset(messages);
    for (const li of before) {
      const stored = this.bubbles.get(li.dataset.key);
      if (!stored) {
        this.list.append(li);
        this.bubbles.set(li.dataset.key, li);
      } else {
        // The history has no latency figures: keep the ones this page already showed.
        const latency = li.querySelector(".latency");
        if (latency) stored.querySelector(".meta").append(latency);
      }
    }
    this.updateEmpty();
    this.scrollToEnd(true);
  }

  historyBubble(m) {
    const turnId = m.turn_id || `h${this.seq++}`;
    if (m.tool_calls?.length) {
      for (const call of m.tool_calls) {
        let args = {};
        try {
          args = JSON.parse(call.arguments);
        } catch {
          // shown without its arguments
        }
        this.toolCall({ turn_id: turnId, call_id: call.id, name: call.name, arguments: args });
      }
      return;
    }
    if (m.role === "tool") {
      this.toolResult({ turn_id: turnId, call_id: m.tool_call_id, outcome: m.outcome || "unknown" });
      return;
    }
    const role = m.role === "user" ? "user" : "assistant";
    const li = this.bubble(role, turnId);
    this.setText(li, m.text);
    if (m.interrupted) this.markInterrupted(li, m.text);
  }

  /** A small line in the reply for each tool call: its name and arguments, then its outcome. */
  toolCall(ev) {
    const li = this.bubble("assistant", ev.turn_id);
    let list = li.querySelector(".tools");
    if (!list) {
      list = document.createElement("ul");
      list.className = "tools";
      li.querySelector(".text").before(list);
    }
    const item = document.createElement("li");
    item.className = "tool";
    item.dataset.call = ev.call_id;
    const args = Object.entries(ev.arguments || {})
      .map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
      .join(", ");
    const name = document.createElement("code");
    name.textContent = `${ev.name}(${args})`;
    const status = document.createElement("span");
    status.className = "tool-status";
    status.textContent = " … running";
    item.append(name, status);
    list.append(item);
  }

  toolResult(ev) {
    const item = this.list.querySelector(`li.tool[data-call="${CSS.escape(ev.call_id || "")}"]`);
    if (!item) return;
    const words = {
      ok: "done",
      error: "failed",
      unknown: "no answer: may or may not have happened",
      refused: "not run",
    };
    const status = item.querySelector(".tool-status");
    status.textContent = ` — ${words[ev.outcome] ?? ev.outcome}${ev.ms ? ` (${formatMs(ev.ms)})` : ""}`;
    item.dataset.outcome = ev.outcome;
    if (ev.outcome !== "ok" && ev.result) item.title = ev.result;
  }

  bubble(role, turnId) {
    const key = `${role}:${turnId}`;
    let li = this.bubbles.get(key);
    if (li) return li;
    li = document.createElement("li");
    li.className = `msg ${role}`;
    li.dataset.key = key;
    li.dataset.turn = turnId;
    const who = document.createElement("span");
    who.className = "visually-hidden";
    who.textContent = role === "user" ? "You: " : "Assistant: ";
    const text = document.createElement("p");
    text.className = "text";
    const meta = document.createElement("div");
    meta.className = "meta";
    li.append(who, text, meta);
    // A reply goes right after its turn's user message: a later turn may already follow it
    // (a reply cut before its first word is only drawn when its turn ends).
    const user = role === "assistant" ? this.bubbles.get(`user:${turnId}`) : null;
    if (user) user.after(li);
    else this.list.append(li);
    this.bubbles.set(key, li);
    this.updateEmpty();
    return li;
  }

  setText(li, text) {
    const stick = this.nearEnd();
    li.querySelector(".text").textContent = text;
    this.scrollToEnd(stick);
  }

  partial(ev) {
    const li = this.bubble("user", ev.turn_id);
    if (!li.classList.contains("partial") && li.querySelector(".text").textContent) return;
    li.classList.add("partial");
    li.setAttribute("aria-busy", "true");
    this.setText(li, ev.text);
  }

  final(ev) {
    const li = this.bubble("user", ev.turn_id);
    li.classList.remove("partial");
    li.removeAttribute("aria-busy");
    li.dataset.source = ev.source || "";
    this.setText(li, ev.text);
    this.announce(`You said: ${ev.text}`);
  }

  delta(ev) {
    const li = this.bubble("assistant", ev.turn_id);
    li.classList.add("streaming");
    li.setAttribute("aria-busy", "true");
    li.dataset.reply = ev.reply_id;
    const text = li.querySelector(".text");
    this.setText(li, text.textContent + ev.text);
  }

  done(ev) {
    let li = this.bubbles.get(`assistant:${ev.turn_id}`);
    if (!li && !ev.text && !ev.interrupted) return; // nothing was said
    li = li || this.bubble("assistant", ev.turn_id);
    li.classList.remove("streaming");
    li.removeAttribute("aria-busy");
    li.dataset.reply = ev.reply_id;
    if (ev.interrupted) {
      // Only what the user heard stays: the rest was never spoken (nor kept in history).
      this.setText(li, ev.spoken_text);
      this.markInterrupted(li, ev.spoken_text);
      this.announce(`Assistant, interrupted: ${ev.spoken_text || "nothing was said"}`);
    } else {
      this.setText(li, ev.text);
      this.announce(`Assistant: ${ev.text}`);
    }
  }

  markInterrupted(li, spoken) {
    li.classList.add("interrupted");
    li.classList.toggle("unspoken", !spoken);
    const meta = li.querySelector(".meta");
    if (!meta.querySelector(".badge")) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = spoken ? "Interrupted" : "Interrupted before it was spoken";
      meta.prepend(badge);
    }
  }

  failed(ev) {
    const li = this.bubble("assistant", ev.turn_id);
    li.classList.remove("streaming");
    li.removeAttribute("aria-busy");
    li.classList.add("failed");
    const meta = li.querySelector(".meta");
    const note = document.createElement("span");
    note.className = "badge badge-error";
    note.textContent = "Reply failed";
    meta.prepend(note);
  }

  /** The latency read-out under the reply: one figure, the stage breakdown on demand. */
  metrics(ev) {
    const li = this.bubbles.get(`assistant:${ev.turn_id}`);
    if (!li) return;
    const voice = ev.first_audio_ms !== null && ev.first_audio_ms !== undefined;
    const headline = voice ? ev.first_audio_ms : ev.first_delta_ms;
    if (headline === null || headline === undefined) return;
    li.querySelector(".meta .latency")?.remove();
    const details = document.createElement("details");
    details.className = "latency";
    const summary = document.createElement("summary");
    const from = ev.source === "text" ? "message" : "speech";
    summary.textContent = `${formatMs(headline)} to first ${voice ? "audio" : "text"}`;
    summary.title = `From the end of your ${from} to the first ${voice ? "audio" : "text"} sent`;
    const dl = document.createElement("dl");
    for (const [key, label] of METRIC_ROWS) {
      const value = ev[key];
      if (value === null || value === undefined) continue;
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = key === "llm_tokens_per_s" ? `${Math.round(value)} tokens/s` : formatMs(value);
      dl.append(dt, dd);
    }
    details.append(summary, dl);
    li.querySelector(".meta").append(details);
  }

  announce(text) {
    this.announcer.textContent = "";
    setTimeout(() => {
      this.announcer.textContent = text;
    }, 50);
  }

  updateEmpty() {
    this.empty.hidden = this.list.children.length > 0;
  }

  nearEnd() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  scrollToEnd(stick) {
    if (stick) this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}
