"""Docker HEALTHCHECK of a service image: GET /healthz on the service's own port.

Exit 0 when it answers 200, 1 otherwise (python:3.11-slim has no curl). The port is
VA_HTTP_PORT, which every image sets to its service's default.
"""

import os
import sys
import urllib.request

port = os.environ.get("VA_HTTP_PORT") or "8080"
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except Exception as exc:  # refused, timeout, 5xx
    print(f"healthz: {exc}", file=sys.stderr)
    sys.exit(1)
