"""`make bench` keeps working: a tiny run through the real platform, numbers not judged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_runs_end_to_end_and_reports_ratios(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "bench", "--images", "16", "--images-per-job", "8", "1",
           "--latency-jobs", "2", "--bare-seconds", "1", "--size", "64", "--batching-images", "8",
           "--submission-seconds", "3", "--out", str(tmp_path)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "ratio" in out.stdout
    result = json.loads(next(tmp_path.glob("e2e-*.json")).read_text())
    for run in result["runs"].values():
        assert run["failed_images"] == 0 and run["images_per_s"] > 0 and run["ratio"] > 0
    assert result["latency_single_image"]["p50_ms"] > 0
    batching = result["micro_batching"]
    for run in batching.values():
        assert run["failed_images"] == 0 and run["jobs"] == 8 and run["ratio"] > 0
    # Off, every single-image job runs alone; on, a pass may hold several (not guaranteed).
    assert batching["off"]["mean_batch_size"] == 1.0
    assert batching["on"]["mean_batch_size"] >= 1.0
    memory = result["memory_pss_mib"]
    assert memory["processes"]["workers"] == 3  # Celery parent + 2 prefork children
    assert 0 < memory["api"] and 0 < memory["workers"] and 0 < memory["postgres"]
    assert memory["platform_postgres_valkey"] > memory["platform"] > 0
    assert "micro-batching off" in out.stdout and "PSS" in out.stdout
    latest = json.loads((tmp_path / "latest.json").read_text())
    keys = ("bare_img_s", "plan", "e2e_img_s", "ratio", "single_p50_ms", "bare_single_ms",
            "torchserve_img_s", "ratio_vs_torchserve", "submissions_per_s", "submit_p99_ms",
            "peak_pss_mib")  # fmt: skip
    assert set(keys) <= set(latest)
    assert isinstance(latest["plan"], str) and latest["plan"] == latest["guard"]["chosen"]
    assert set(latest["e2e_img_s"]) == set(latest["ratio"]) == {"8", "1"}
    assert latest["bare_img_s"] > 0 and latest["bare_single_ms"] > 0
    assert latest["single_p50_ms"] > 0 and latest["peak_pss_mib"] > 0
    # wrk against the API with the workers stopped: every submission accepted (202).
    submissions = result["submissions"]
    assert submissions["accepted"] > 0 and submissions["other_status"] == 0
    assert latest["submissions_per_s"] > 0 and latest["submit_p99_ms"] > 0
