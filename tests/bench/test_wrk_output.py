"""bench.submissions reads wrk's report: rate, non-2xx answers and the latency percentiles."""

from __future__ import annotations

import pytest

from bench.submissions import multipart_body, parse_wrk

WRK_OUTPUT = """Running 20s test @ http://127.0.0.1:8000
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    28.05ms    9.12ms 120.40ms   81.22%
    Req/Sec   571.33     60.01   707.00     72.50%
  Latency Distribution
     50%   26.51ms
     75%   31.20ms
     90%   38.44ms
     99%   61.02ms
  22781 requests in 20.02s, 25.01MB read
  Non-2xx or 3xx responses: 12
Requests/sec:   1137.91
Transfer/sec:      1.25MB
"""


def test_wrk_report_is_read() -> None:
    result = parse_wrk(WRK_OUTPUT, connections=32, seconds=20)
    assert result.requests_per_s == pytest.approx(1137.91)
    assert result.accepted == 22781 - 12 and result.other_status == 12
    assert result.p50_ms == pytest.approx(26.51) and result.p99_ms == pytest.approx(61.02)
    assert result.socket_errors == "none"


def test_microsecond_and_second_latencies() -> None:
    text = WRK_OUTPUT.replace("26.51ms", "950.00us").replace("61.02ms", "1.20s")
    result = parse_wrk(text, connections=32, seconds=20)
    assert result.p50_ms == pytest.approx(0.95) and result.p99_ms == pytest.approx(1200.0)


def test_unreadable_output_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="could not read"):
        parse_wrk("unable to connect to 127.0.0.1:1", connections=1, seconds=1)


def test_multipart_body_names_the_model_and_the_file() -> None:
    body = multipart_body("bench-resnet18", b"\x89PNG...")
    assert b'name="model"\r\n\r\nbench-resnet18\r\n' in body
    assert b'name="files"; filename="image.png"' in body and b"\x89PNG..." in body
    assert body.endswith(b"--medimgbenchboundary--\r\n")
