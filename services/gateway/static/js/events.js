// The session's event WebSocket, reconnecting by itself (backoff 0.5 s doubling to 10 s) for as
// long as the conversation lasts. The gateway accepts the socket and then checks the token: a
// refused one gets an `error` event and a close code 4000 + HTTP status.

const AUTH_CODES = new Set([
  "invalid_token",
  "token_expired",
  "forbidden",
  "session_not_found",
  "session_ended",
  "agent_not_found",
  "unavailable",
]);

export class EventSocket {
  /**
   * url():           the URL to connect to (read again on every attempt: tokens are refreshed)
   * onEvent(ev):     each server event (auth refusals are reported through onStatus instead)
   * onStatus(s, d):  "connecting" | "open" | "retrying" {delayMs, attempt} | "ended" {code}
   * renewToken():    async, called after a 4401 close; resolves true when a fresh token is in place
   */
  constructor({ url, onEvent, onStatus, renewToken }) {
    Object.assign(this, { url, onEvent, onStatus, renewToken });
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.timer = null;
    this.openedAt = 0;
    this.refusal = null; // an auth `error` event, explained by the close that follows
    this.onOnline = () => this.retryNow();
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = ws.onmessage = ws.onerror = null;
      ws.close(1000, "bye");
    }
  }

  get connected() {
    return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN);
  }

  /** Sends a command; false when the socket is not open (the caller tells the user). */
  send(command) {
    if (!this.connected) return false;
    this.ws.send(JSON.stringify(command));
    return true;
  }

  /** Skips the backoff wait (the browser is back online, or the user asked). */
  retryNow() {
    if (this.stopped || this.ws) return; // open, or an attempt under way
    clearTimeout(this.timer);
    this.attempt = 0;
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    this.onStatus("connecting");
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.openedAt = Date.now();
      this.onStatus("open");
    };
    ws.onmessage = (msg) => {
      let ev;
      try {
        ev = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (ev.type === "error" && AUTH_CODES.has(ev.code) && !ev.turn_id) {
        this.refusal = ev; // the close that follows says what to do
        return;
      }
      this.onEvent(ev);
    };
    ws.onclose = (e) => this.closed(ws, e.code);
  }

  async closed(ws, code) {
    if (ws !== this.ws || this.stopped) return;
    this.ws = null;
    if (Date.now() - this.openedAt > 5000) this.attempt = 0; // it had been working
    const refusal = this.refusal;
    this.refusal = null;
    if (code === 4401 && this.renewToken) {
      let renewed = false;
      try {
        renewed = await this.renewToken();
      } catch {
        renewed = false;
      }
      if (this.stopped) return;
      if (renewed) {
        this.connect();
        return;
      }
    }
    if (code === 4401 || code === 4403 || code === 4404 || code === 4410) {
      this.stopped = true;
      this.onStatus("ended", { code, message: refusal ? refusal.message : "" });
      return;
    }
    this.scheduleRetry();
  }

  scheduleRetry() {
    if (this.stopped) return;
    const delayMs = Math.min(10000, 500 * 2 ** this.attempt) * (0.8 + Math.random() * 0.4);
    this.attempt += 1;
    this.onStatus("retrying", { delayMs, attempt: this.attempt });
    this.timer = setTimeout(() => this.connect(), delayMs);
  }
}
