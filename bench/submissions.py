"""Accepted job submissions per second and the 202's latency, measured with wrk.

The submission path alone (issue 14 item 4): the CPU workers are stopped first, so nothing
but the API (and PostgreSQL, Valkey) runs while wrk posts single-small-image jobs. wrk
(Debian `wrk`) is a C load generator: a Python client saturates near 550 requests/s on
this box (PERF_BASELINES.md) and would measure itself. Its Lua script posts one prebuilt
multipart body; wrk's own latency distribution gives the p99.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cli.stack import Stack

WORKER = "worker-cpu"
BOUNDARY = "medimgbenchboundary"
# Per thread: build the request once (wrk.format), then send it again and again.
_SCRIPT = """
function init(args)
  local f = io.open(args[1], "rb")
  local body = f:read("*all")
  f:close()
  req = wrk.format("POST", "/v1/jobs", {
    ["Authorization"] = "Bearer " .. args[2],
    ["Content-Type"] = "multipart/form-data; boundary=BOUNDARY",
  }, body)
end
function request() return req end
""".replace("BOUNDARY", BOUNDARY)
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class SubmissionResult:
    requests_per_s: float
    accepted: int  # 202 answers
    other_status: int  # non-2xx answers (a 429 or 5xx would show here)
    socket_errors: str
    p50_ms: float
    p99_ms: float
    connections: int
    seconds: int


def wrk_binary() -> str:
    """The wrk executable; installed from Debian when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
            subprocess.run(install, env=env, check=False)
        found = shutil.which("wrk")
        if found:
            return found
    raise RuntimeError("the submission benchmark needs wrk: apt-get install wrk (Debian)")


def multipart_body(model: str, image: bytes, filename: str = "image.png") -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n',
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"'
        "\r\nContent-Type: image/png\r\n\r\n",
    ]
    return parts[0].encode() + parts[1].encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()


def stop_workers(stack: Stack, timeout: float = 60) -> None:
    """Warm-stop the CPU worker: queued jobs stay in Valkey, untouched."""
    process = stack.processes.pop(WORKER, None)
    if process is not None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout)


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str, connections: int, seconds: int) -> SubmissionResult:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:(.*)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if not (rate and total and p50 and p99):
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    other = int(non_2xx.group(1)) if non_2xx else 0
    return SubmissionResult(
        requests_per_s=float(rate.group(1)),
        accepted=int(total.group(1)) - other,
        other_status=other,
        socket_errors=errors.group(1).strip() if errors else "none",
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        connections=connections,
        seconds=seconds,
    )


def submission_run(
    url: str, key: str, model: str, image: bytes, *, connections: int = 32, seconds: int = 20
) -> SubmissionResult:
    """wrk with 2 threads and `connections` connections posting one-image jobs."""
    with tempfile.TemporaryDirectory(prefix="medimg-wrk-") as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(multipart_body(model, image))
        script = Path(tmp) / "submit.lua"
        script.write_text(_SCRIPT)
        out = subprocess.run(
            [wrk_binary(), "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency",
             "-s", str(script), url, "--", str(body), key],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    return parse_wrk(out.stdout, connections, seconds)
