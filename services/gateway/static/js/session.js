// The gateway's HTTP API (README, "Public interface") and the session kept in localStorage, so a
// reload resumes the same conversation.

const STORAGE_KEY = "voice-assistant.session";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status; // 0: the server could not be reached
    this.code = code;
  }

  /** The server is down or busy: worth retrying, and the saved session is still good. */
  get transient() {
    return this.status === 0 || this.status >= 500 || this.status === 429;
  }
}

async function call(path, { method = "GET", body, token } = {}) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "unreachable", "The server cannot be reached.");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new ApiError(
      response.status,
      data.code || `http_${response.status}`,
      data.message || response.statusText || "The request failed.",
    );
  }
  return data;
}

function loadSaved() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    return saved && saved.session_id && saved.token ? saved : null;
  } catch {
    return null;
  }
}

export class Session {
  constructor(grant) {
    this.adopt(grant);
    this.ended = false;
  }

  adopt(grant) {
    this.id = grant.session_id;
    this.token = grant.token;
    this.expiresAt = grant.expires_at; // seconds since the epoch
    this.agentId = grant.agent_id;
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(grant));
    } catch {
      // Private mode or storage full: the conversation works, it just won't survive a reload.
    }
  }

  /**
   * The saved conversation if it can be resumed (and belongs to `agentId` when one is asked for),
   * else a new one. Returns {session, resumed, lost}: `lost` says a saved one could not be resumed
   * (ended, expired or unknown). Server trouble throws, leaving the saved session for next time.
   */
  static async open(agentId) {
    const saved = loadSaved();
    let lost = false;
    if (saved && (!agentId || saved.agent_id === agentId)) {
      try {
        const grant = await call("/v1/sessions", {
          method: "POST",
          body: { session_id: saved.session_id },
          token: saved.token,
        });
        return { session: new Session(grant), resumed: true, lost };
      } catch (err) {
        if (err.transient) throw err;
        Session.forget();
        lost = true;
      }
    }
    const grant = await call("/v1/sessions", {
      method: "POST",
      body: agentId ? { agent_id: agentId } : {},
    });
    return { session: new Session(grant), resumed: false, lost };
  }

  static forget() {
    try {
      localStorage.removeItem(STORAGE_KEY);
    } catch {
      // nothing kept, nothing to forget
    }
  }

  /** A fresh token for the same session (tokens expire; see `refreshDelayMs`). */
  async refresh() {
    const grant = await call("/v1/sessions", {
      method: "POST",
      body: { session_id: this.id },
      token: this.token,
    });
    this.adopt(grant);
  }

  /** When to refresh the token: well before it expires, never in less than 5 s. */
  refreshDelayMs() {
    const left = this.expiresAt * 1000 - Date.now();
    return Math.max(5000, Math.min(left - 120000, left * 0.8));
  }

  messages() {
    return call(`/v1/sessions/${encodeURIComponent(this.id)}/messages`, { token: this.token });
  }

  // echoCancellation: the page cancels no echo itself (?raw-audio=1): the gateway does.
  offer(sdp, echoCancellation = false) {
    return call(`/v1/sessions/${encodeURIComponent(this.id)}/webrtc`, {
      method: "POST",
      body: { sdp, type: "offer", echo_cancellation: echoCancellation },
      token: this.token,
    });
  }

  async end() {
    this.ended = true;
    Session.forget();
    await call(`/v1/sessions/${encodeURIComponent(this.id)}`, {
      method: "DELETE",
      token: this.token,
    });
  }

  eventsUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const id = encodeURIComponent(this.id);
    return `${scheme}//${location.host}/v1/sessions/${id}/events?token=${encodeURIComponent(this.token)}`;
  }
}
