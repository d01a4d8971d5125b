"""`python -m bench.detection`: detection throughput end to end next to the bare detector.

Same run, same box: first the bare forward pass of the shipped BCCD detector (letterboxed
inputs, the workers' batch size, processes and threads, in the worker's environment), then the
platform as `make run` starts it, with BCCD JPEGs sent through the HTTP API; prints images/s,
job latency and the ratio to the bare model. Results go to bench/results/detection-*.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from bench.batching import warm_up
from bench.e2e import latency_run, throughput_run
from cli import services
from cli.stack import Stack, StackConfig, free_port
from shared.apikeys import create_key
from shared.auth import Scope
from shared.config import get_settings, psycopg_url
from shared.db.session import make_engine, make_sessionmaker

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO / "models" / "bccd-frcnn-efficientnet-lite0-fpn"
BCCD_JPEGS = Path("/work/shared/data/bccd/BCCD/JPEGImages")
FIXTURE_JPEGS = REPO / "tests" / "fixtures" / "datasets" / "bccd_tiny" / "JPEGImages"


def _forward_rate(model_dir: str, batch: int, threads: int, seconds: float) -> float:
    from shared.ml.architectures import load_state_dict
    from shared.ml.detection import DetectionPresetEval, build_detector, load_detector_state
    from shared.schemas.models import ModelCard

    torch.set_num_threads(threads)
    card = ModelCard.model_validate_json((Path(model_dir) / "card.json").read_text())
    model = build_detector(card.architecture, card.labels, card.input)
    load_detector_state(model, load_state_dict(str(Path(model_dir) / "weights.pt")))
    model.eval()
    # A real-looking input: letterboxed 640x480 noise (scores vary; compute does not).
    image, _ = DetectionPresetEval(card.input)(torch.rand(3, 480, 640))
    inputs = [image] * batch
    with torch.inference_mode():
        for _ in range(2):
            model(inputs)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(inputs)
            done += batch
    return done / (time.perf_counter() - start)


def _child(args: tuple[str, int, int, float], barrier: mp.Barrier, out: mp.Queue) -> None:  # type: ignore[type-arg]
    barrier.wait()
    out.put(_forward_rate(*args))


def _bare_main(argv: list[str]) -> None:
    model_dir, batch, processes, threads, seconds = argv
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(int(processes)), ctx.Queue()
    args = (model_dir, int(batch), int(threads), float(seconds))
    procs = [ctx.Process(target=_child, args=(args, barrier, out)) for _ in range(int(processes))]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    print(json.dumps({"images_per_s": sum(rates)}))


def bare_rate(model_dir: Path, batch: int, processes: int, threads: int, seconds: float) -> float:
    env = {**os.environ, **services.worker("cpu", processes).env}
    cmd = [sys.executable, "-m", "bench.detection", "--bare", str(model_dir), str(batch),
           str(processes), str(threads), str(seconds)]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--images-per-job", type=int, default=8)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2, help="CPU worker processes")
    parser.add_argument("--latency-jobs", type=int, default=10)
    parser.add_argument("--bare-seconds", type=float, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)

    card = json.loads((args.model_dir / "card.json").read_text())
    model = card["name"]
    batch = get_settings().max_batch_size
    threads = max(1, (os.cpu_count() or 1) // args.concurrency)
    source = BCCD_JPEGS if BCCD_JPEGS.is_dir() else FIXTURE_JPEGS
    files = sorted(source.glob("*.jpg"))
    jpegs = [files[i % len(files)].read_bytes() for i in range(args.images)]

    print(f"[1/3] bare {model} ({card['architecture']}@{card['input']['size']}), batch {batch}, "
          f"{args.concurrency} proc x {threads} thr", flush=True)  # fmt: skip
    bare = bare_rate(args.model_dir, batch, args.concurrency, threads, args.bare_seconds)
    print(f"      {bare:.2f} img/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="medimg-bench-det-") as tmp:
        root = Path(tmp)
        print("[2/3] starting the platform (embedded Postgres + Valkey, API, workers)", flush=True)
        config = StackConfig(
            data_dir=root / "data",
            api_port=free_port(),
            redis_port=None,
            worker_concurrency=args.concurrency,
            with_trainer=False,
            log_dir=root / "logs",
        )
        with Stack(config) as stack:  # registers the bundled models/, the detector included
            engine = make_engine(psycopg_url(stack.env["DATABASE_URL"]))
            with make_sessionmaker(engine)() as session:
                key, plaintext = create_key(
                    session, tenant="bench", name="bench", scopes=[Scope.JOBS_WRITE]
                )
                key.rate_limit_per_minute = 0
                session.commit()
            engine.dispose()
            auth = {"Authorization": f"Bearer {plaintext}"}
            warm_up(stack.api_url, auth, model, jpegs, batch, args.concurrency)
            print(
                f"[3/3] {args.images} BCCD JPEGs (640x480), {args.images_per_job} per job, "
                f"then {args.latency_jobs} single-image jobs one at a time",
                flush=True,
            )
            run = throughput_run(
                stack.api_url, auth, model, jpegs, args.images_per_job, args.clients
            )
            latency = latency_run(stack.api_url, auth, model, jpegs, args.latency_jobs)

    ratio = run.images_per_s / bare
    print(f"\nmedimg detection bench: {model}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"  bare detector (ceiling)        {bare:8.2f} img/s")
    print(f"  end-to-end, {args.images_per_job} images/job      {run.images_per_s:8.2f} img/s  "
          f"ratio {ratio:.2f}  job p50 {run.job_latency_p50_ms:.0f} ms  "
          f"p99 {run.job_latency_p99_ms:.0f} ms  failed {run.failed_images}")  # fmt: skip
    print(f"  single image, idle platform    p50 {latency['p50_ms']:.0f} ms  "
          f"p99 {latency['p99_ms']:.0f} ms")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"detection-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": model,
        "config": {k: str(v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "bare_images_per_s": bare,
        "run": asdict(run) | {"ratio": ratio},
        "latency_single_image": latency,
    }, indent=2))  # fmt: skip
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        _bare_main(sys.argv[2:])
    else:
        sys.exit(main())
