// Voice over WebRTC: the microphone goes to the gateway, the reply audio comes back on the same
// peer connection and plays in an <audio> element. Two WebAudio analysers give the input and
// reply levels the page draws (and that tests read: headless Chromium reports no audioLevel).

export class MicError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // denied | missing | busy | insecure | unsupported | failed
  }
}

function micError(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new MicError(
        "denied",
        "Microphone access was denied. You can keep typing; to talk, allow the microphone " +
          "for this site in the browser's settings and press the microphone button again.",
      );
    case "NotFoundError":
    case "OverconstrainedError":
      return new MicError("missing", "No microphone was found. You can keep typing.");
    case "NotReadableError":
    case "AbortError":
      return new MicError(
        "busy",
        "The microphone could not be started (is another application using it?). " +
          "You can keep typing.",
      );
    default:
      return new MicError("failed", `The microphone could not be started: ${err && err.message}`);
  }
}

/** Resolves once ICE gathering is complete, or after `ms` (the offer then carries what it has). */
function iceGathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, ms);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/** RMS of an analyser's current window, mapped from -60..0 dBFS to 0..1. */
function level(analyser, buf) {
  analyser.getFloatTimeDomainData(buf);
  let sum = 0;
  for (const v of buf) sum += v * v;
  const rms = Math.sqrt(sum / buf.length);
  return { rms, level: Math.max(0, Math.min(1, (20 * Math.log10(rms + 1e-9) + 60) / 60)) };
}

export class Voice {
  /**
   * audio:         the <audio> element that plays the reply
   * raw:           true turns echo cancellation, noise suppression and auto gain off (tests)
   * onConnection:  the peer connection's state ("connecting", "connected", "failed", ...)
   * onLevels:      {mic, reply}, each 0..1, ten times a second while the microphone is on
   */
  constructor({ audio, raw = false, onConnection = () => {}, onLevels = () => {} }) {
    Object.assign(this, { audio, raw, onConnection, onLevels });
    this.stream = null;
    this.pc = null;
    this.ctx = null;
    this.micAnalyser = null;
    this.replyAnalyser = null;
    this.replyPeakRms = 0; // the loudest reply audio so far (RMS, 0..1)
    this.lastLevels = { mic: 0, reply: 0 };
    this.timer = null;
  }

  get on() {
    return this.stream !== null;
  }

  /** Opens the microphone and connects it; throws MicError (the caller shows its message). */
  async start(session) {
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      throw new MicError(
        "insecure",
        "The microphone needs a secure page: open this page over https (or on localhost; " +
          "`scripts/run.sh --lan` serves https to the network). You can keep typing.",
      );
    }
    if (!window.RTCPeerConnection) {
      throw new MicError("unsupported", "This browser cannot send voice (no WebRTC).");
    }
    // Made inside the click that turned the microphone on, so the browser lets it play.
    this.ctx = this.ctx || new AudioContext();
    const on = !this.raw;
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: on, noiseSuppression: on, autoGainControl: on },
      });
    } catch (err) {
      throw micError(err);
    }
    this.micAnalyser = this.analyser(this.stream);
    this.timer = setInterval(() => this.tick(), 100);
    try {
      await this.connect(session);
    } catch (err) {
      this.stop();
      throw err instanceof MicError
        ? err
        : new MicError("failed", `The voice connection failed: ${err.message}`);
    }
  }

  /** A new peer connection for the open microphone (first time, or after one failed). */
  async connect(session) {
    if (this.pc) this.pc.close();
    // No ICE servers: the gateway's host candidates are enough on a LAN or localhost.
    const pc = new RTCPeerConnection();
    this.pc = pc;
    for (const track of this.stream.getAudioTracks()) pc.addTrack(track, this.stream);
    pc.ontrack = (e) => this.playReply(e.streams[0] || new MediaStream([e.track]));
    pc.onconnectionstatechange = () => {
      if (this.pc === pc) this.onConnection(pc.connectionState);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, 2000);
    // Without the browser's processing (raw) nothing here cancels the reply's echo: the gateway does.
    const answer = await session.offer(pc.localDescription.sdp, this.raw);
    if (this.pc !== pc) return; // turned off meanwhile
    await pc.setRemoteDescription(answer);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    if (this.pc) {
      const pc = this.pc;
      this.pc = null;
      pc.close();
    }
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.stream = null;
    this.micAnalyser = this.replyAnalyser = null;
    this.audio.srcObject = null;
    this.lastLevels = { mic: 0, reply: 0 };
    this.onLevels(this.lastLevels);
  }

  playReply(stream) {
    // Chromium feeds a remote stream to WebAudio only while a media element plays it.
    this.audio.srcObject = stream;
    this.audio.play().catch(() => {});
    this.replyAnalyser = this.analyser(stream);
  }

  analyser(stream) {
    if (this.ctx.state === "suspended") this.ctx.resume().catch(() => {});
    const node = this.ctx.createAnalyser();
    node.fftSize = 1024;
    this.ctx.createMediaStreamSource(stream).connect(node);
    return { node, buf: new Float32Array(node.fftSize) };
  }

  tick() {
    const levels = { mic: 0, reply: 0 };
    if (this.micAnalyser) levels.mic = level(this.micAnalyser.node, this.micAnalyser.buf).level;
    if (this.replyAnalyser) {
      const r = level(this.replyAnalyser.node, this.replyAnalyser.buf);
      levels.reply = r.level;
      this.replyPeakRms = Math.max(this.replyPeakRms, r.rms);
    }
    this.lastLevels = levels;
    this.onLevels(levels);
  }

  /** Microphone RTP sent so far (the gateway's answer asks for Opus DTX: while the microphone
   * is silent, a packet every 400 ms instead of 50 a second). */
  outboundAudio() {
    return this.rtpTotals("outbound-rtp", ["bytesSent", "packetsSent"]);
  }

  /** Bytes and packets of reply audio received so far. */
  inboundAudio() {
    return this.rtpTotals("inbound-rtp", ["bytesReceived", "packetsReceived"]);
  }

  /** Sums of `fields` over the audio RTP streams of one stats `type`. */
  async rtpTotals(type, fields) {
    const out = Object.fromEntries(fields.map((f) => [f, 0]));
    if (!this.pc) return out;
    const stats = await this.pc.getStats();
    stats.forEach((s) => {
      if (s.type === type && s.kind === "audio") {
        for (const f of fields) out[f] += s[f] || 0;
      }
    });
    return out;
  }
}
