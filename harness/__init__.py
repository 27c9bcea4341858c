"""What tests and benchmarks share: starting throwaway servers and the services as real
processes, test speech and audio helpers, and a real voice client.

- `paths`: the repository, tests/artifacts/ (caches and logs) and `shown(path)`;
- `servers`: free ports, throwaway nats-server / redis-server (scripts/infra.py underneath);
- `services`: `python -m services.<kind>` as a process (`ServiceProcs`), a stack of them (`Stack`);
- `local_stack`: a whole throwaway deployment (servers, five services, more gateways behind
  nginx) with progress lines, as the benchmarks run it;
- `audio`, `voices`: WAV I/O, speech synthesis (Piper, espeak-ng, Kokoro), an independent
  recogniser; `voice_client`: HTTP session, event WebSocket and a WebRTC peer.

No pytest in here: tests/ holds the fixtures and the tests, bench/ the benchmarks.
"""
