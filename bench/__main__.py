"""`make bench`: platform throughput and latency next to the bare model, same run, same box.

Starts the platform exactly as `make run` does (embedded PostgreSQL + Valkey, API,
CPU workers) on free ports, registers a resnet18 at 224 px (the configuration of
PERF_BASELINES.md and its TorchServe comparison), and prints ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import torch

from bench import memory
from bench.bare import bare_throughput
from bench.batching import BATCHING_SWITCH, batching_off_run, warm_up
from bench.e2e import RunResult, latency_run, make_jpegs, throughput_run
from bench.submissions import stop_workers, submission_run
from cli import services
from cli.stack import Stack, StackConfig, free_port
from shared.apikeys import create_key
from shared.auth import Scope
from shared.config import get_settings, psycopg_url
from shared.db.models import Tenant
from shared.db.session import make_engine, make_sessionmaker
from shared.ml.architectures import build_classifier
from shared.registry import CALIBRATION_FILE, CARD_FILE, WEIGHTS_FILE, register_package
from shared.schemas.models import InputSpec, ModelCard
from shared.storage import BlobStore

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "pneumoniamnist"
BENCH_MODEL = "bench-resnet18"
CALIBRATION = (
    Path(__file__).resolve().parents[1] / "models" / "pneumonia-resnet18" / "calibration.npz"
)


def write_bench_package(folder: Path, architecture: str, size: int) -> None:
    """A seeded random-init model: same compute as a trained one, honest about it."""
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(build_classifier(architecture, 2).state_dict(), folder / WEIGHTS_FILE)
    card = ModelCard(
        name=BENCH_MODEL,
        task="classification",
        architecture=architecture,
        labels=["a", "b"],
        input=InputSpec(
            size=size, channels=3, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]
        ),
        description="Random weights, for throughput measurement only. Not a medical model.",
        intended_use="benchmarking",
    )
    (folder / CARD_FILE).write_text(card.model_dump_json(indent=2))
    # Real validation images for the accuracy guard, so the bench runs the guarded plan.
    shutil.copy(CALIBRATION, folder / CALIBRATION_FILE)


def guarded_plan(url: str, auth: dict[str, str], timeout: float = 600) -> dict[str, Any]:
    """Run the accuracy guard on the bench model through the API; the stored entry."""
    path = f"/v1/models/{BENCH_MODEL}/versions/1"
    with httpx.Client(base_url=url, timeout=60, headers=auth) as client:
        client.post(f"{path}/guard").raise_for_status()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            plans = client.get(path).raise_for_status().json()["runtime_plans"]
            if plans:
                return dict(next(iter(plans.values())))
            time.sleep(1)
    raise RuntimeError("the accuracy guard stored no result")


def _print_row(name: str, value: str, note: str = "") -> None:
    print(f"  {name:<44} {value:>14}  {note}")


def _print_memory(mem: memory.MemoryReport, concurrency: int) -> None:
    counted = ", ".join(f"{name} {n}" for name, n in mem.processes.items())
    print(f"\n  memory, total PSS (processes: {counted}; worker = Celery parent + "
          f"{concurrency} prefork children, serving the bench resnet18):")  # fmt: skip
    for name, mib in mem.mib.items():
        _print_row(name, f"{mib:.0f} MiB")
    _print_row("platform (API + CPU workers), after serving", f"{mem.platform_mib:.0f} MiB",
               memory.verdict(mem.platform_mib))  # fmt: skip
    _print_row("platform, peak while serving", f"{mem.peak_platform_mib:.0f} MiB",
               memory.verdict(mem.peak_platform_mib))  # fmt: skip
    _print_row("platform + PostgreSQL + Valkey, after serving", f"{mem.all_mib:.0f} MiB",
               memory.verdict(mem.all_mib))  # fmt: skip
    _print_row("platform + PostgreSQL + Valkey, peak", f"{mem.peak_all_mib:.0f} MiB",
               memory.verdict(mem.peak_all_mib))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--images", type=int, default=480)
    parser.add_argument("--images-per-job", type=int, nargs="+", default=[32, 8, 1])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2, help="CPU worker processes")
    parser.add_argument("--architecture", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--latency-jobs", type=int, default=30)
    parser.add_argument("--bare-seconds", type=float, default=15)
    parser.add_argument(
        "--batching-images", type=int, default=480,
        help="single-image jobs per run of the micro-batching off/on comparison",
    )  # fmt: skip
    parser.add_argument(
        "--submission-seconds", type=int, default=20,
        help="wrk run of job submissions with the workers stopped (0: skip)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)

    batch = get_settings().max_batch_size
    threads_each = max(1, (os.cpu_count() or 1) // args.concurrency)
    env = services.worker("cpu", args.concurrency).env
    sources = sorted(FIXTURES.glob("*.png"))
    all_jpegs = make_jpegs(sources, max(args.images, args.batching_images))
    jpegs = all_jpegs[: args.images]
    with tempfile.TemporaryDirectory(prefix="medimg-bench-") as tmp:
        root = Path(tmp)
        print("[2/6] starting the platform (embedded Postgres + Valkey, API, workers)", flush=True)
        config = StackConfig(
            data_dir=root / "data",
            api_port=free_port(),
            redis_port=None,
            worker_concurrency=args.concurrency,
            with_trainer=False,
            log_dir=root / "logs",
            extra_env={BATCHING_SWITCH: "true"},  # the "on" runs; "off" restarts the workers
            ready_timeout=600,  # a loaded box imports torch slowly; the numbers then say so
        )
        with Stack(config) as stack:
            write_bench_package(root / "pkg", args.architecture, args.size)
            engine = make_engine(psycopg_url(stack.env["DATABASE_URL"]))
            with make_sessionmaker(engine)() as session:
                store = BlobStore((root / "data" / "store").resolve())
                register_package(session, store, root / "pkg")
                # The load generator must not be throttled by the per-key rate limit.
                key, plaintext = create_key(
                    session, tenant="bench", name="bench",
                    scopes=[Scope.JOBS_WRITE, Scope.PLATFORM_ADMIN],  # the bench model is shared
                )  # fmt: skip
                key.rate_limit_per_minute = 0
                # Nor by the tenant quota: with the workers stopped, submissions pile up.
                session.get_one(Tenant, key.tenant_id).max_active_jobs = 0
                session.commit()
            engine.dispose()

            auth = {"Authorization": f"Bearer {plaintext}"}
            print("[1/6] accuracy guard of the runtime plans (a job on the cpu queue)", flush=True)
            guard_entry = guarded_plan(stack.api_url, auth)
            plan = str(guard_entry["chosen"])
            print(f"      plan {plan} on {guard_entry['hardware']} "
                  f"(x{guard_entry['speedup']:.2f} in the guard)", flush=True)  # fmt: skip
            print(f"[1/6] bare {args.architecture}@{args.size}, {plan}, batch {batch}", flush=True)
            bare = {
                f"{args.concurrency} proc x {threads_each} thr": bare_throughput(
                    args.architecture, args.size, batch, args.concurrency, threads_each,
                    args.bare_seconds, env, plan,
                ),
                f"1 proc x {os.cpu_count()} thr": bare_throughput(
                    args.architecture, args.size, batch, 1, os.cpu_count() or 1,
                    args.bare_seconds, env, plan,
                ),
            }  # fmt: skip
            bare_fp32 = bare_throughput(
                args.architecture, args.size, batch, args.concurrency, threads_each,
                args.bare_seconds, env, "fp32",
            )  # fmt: skip
            bare_single = bare_throughput(
                args.architecture, args.size, 1, 1, os.cpu_count() or 1, args.bare_seconds,
                env, plan,
            )  # fmt: skip
            load_bare = os.getloadavg()[0]
            best_bare = max(bare.values())
            for name, rate in bare.items():
                print(f"      {name}: {rate:.1f} img/s (fp32 eager {bare_fp32:.1f})", flush=True)
            warm_up(stack.api_url, auth, BENCH_MODEL, jpegs, batch, args.concurrency)

            runs = {}
            for per_job in args.images_per_job:
                print(
                    f"[3/6] {args.images} images, {per_job} per job, {args.clients} clients",
                    flush=True,
                )
                runs[per_job] = throughput_run(
                    stack.api_url, auth, BENCH_MODEL, jpegs, per_job, args.clients
                )
            print(
                f"[4/6] latency: {args.latency_jobs} single-image jobs, one at a time", flush=True
            )
            latency = latency_run(stack.api_url, auth, BENCH_MODEL, jpegs, args.latency_jobs)
            single = all_jpegs[: args.batching_images]
            batching: dict[str, RunResult] = {}
            print(
                f"[5/6] {len(single)} single-image jobs, micro-batching on (as started), "
                "sampling memory (PSS)", flush=True,
            )  # fmt: skip
            with memory.PeakSampler(stack) as sampler:
                on = throughput_run(stack.api_url, auth, BENCH_MODEL, single, 1, args.clients)
            mem = memory.measure(stack, peaks=sampler)
            print("[6/6] the same with micro-batching off (workers restarted)", flush=True)
            batching["off"] = batching_off_run(
                stack, auth, BENCH_MODEL, single, clients=args.clients, batch=batch
            )
            batching["on"] = on
            submissions = None
            if args.submission_seconds > 0:
                print(f"[7/7] job submissions for {args.submission_seconds} s with wrk, "
                      "workers stopped", flush=True)  # fmt: skip
                stop_workers(stack)
                png = sorted(FIXTURES.glob("*.png"))[0].read_bytes()
                submissions = submission_run(
                    stack.api_url, plaintext, BENCH_MODEL, png, seconds=args.submission_seconds
                )

    print(f"\nmedimg bench: {args.architecture}@{args.size} {plan}, {os.cpu_count()} CPUs, "
          f"{args.concurrency} worker processes, torch {torch.__version__}")  # fmt: skip
    _print_row("bare model, best config (ceiling)", f"{best_bare:.1f} img/s")
    for per_job, run in runs.items():
        _print_row(
            f"end-to-end, {per_job} image(s)/job", f"{run.images_per_s:.1f} img/s",
            f"ratio {run.images_per_s / best_bare:.2f}  job p50 {run.job_latency_p50_ms:.0f} ms "
            f"p99 {run.job_latency_p99_ms:.0f} ms  failed {run.failed_images}",
        )  # fmt: skip
    _print_row(
        "single image, idle platform",
        f"p50 {latency['p50_ms']:.0f} ms",
        f"p99 {latency['p99_ms']:.0f} ms",
    )
    print("\n  single-image jobs, submitted concurrently:")
    for mode, run in batching.items():
        _print_row(
            f"cross-job micro-batching {mode}", f"{run.images_per_s:.1f} img/s",
            f"ratio {run.images_per_s / best_bare:.2f}  latency p50 "
            f"{run.job_latency_p50_ms:.0f} ms p95 {run.job_latency_p95_ms:.0f} ms  "
            f"mean batch {run.mean_batch_size:.2f}  "
            f"failed {run.failed_images}",
        )  # fmt: skip
    if submissions is not None:
        _print_row(
            "job submissions accepted (workers stopped)",
            f"{submissions.accepted / submissions.seconds:.0f} jobs/s",
            f"202 p50 {submissions.p50_ms:.1f} ms p99 {submissions.p99_ms:.1f} ms  "
            f"{submissions.connections} connections, non-2xx {submissions.other_status}",
        )  # fmt: skip
    _print_memory(mem, args.concurrency)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": {k: str(v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "bare_images_per_s": bare,
        "runs": {
            str(k): asdict(v) | {"ratio": v.images_per_s / best_bare} for k, v in runs.items()
        },
        "latency_single_image": latency,
        "submissions": submissions and asdict(submissions),
        "micro_batching": {
            mode: asdict(run) | {"ratio": run.images_per_s / best_bare}
            for mode, run in batching.items()
        },
        "memory_pss_mib": {
            **mem.mib,
            "platform": mem.platform_mib,
            "platform_postgres_valkey": mem.all_mib,
            "peak_platform": mem.peak_platform_mib,
            "peak_platform_postgres_valkey": mem.peak_all_mib,
            "processes": mem.processes,
        },
    }
    path = args.out / f"e2e-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    latest = {
        "when": result["when"],
        "loadavg_1m_at_bare": load_bare,
        "loadavg_1m_at_end": os.getloadavg()[0],
        "plan": plan,
        "guard": guard_entry,
        "bare_img_s": best_bare,
        "bare_fp32_img_s": bare_fp32,
        "bare_single_ms": 1000 / bare_single,
        "e2e_img_s": {str(k): v.images_per_s for k, v in runs.items()},
        "ratio": {str(k): v.images_per_s / best_bare for k, v in runs.items()},
        "single_p50_ms": latency["p50_ms"],
        # Not measured by this version of the bench (see docs/performance.md): null, not guessed.
        # submissions_per_s / submit_p99_ms are null when --submission-seconds 0.
        "torchserve_img_s": None,
        "ratio_vs_torchserve": None,
        "submissions_per_s": submissions and submissions.accepted / submissions.seconds,
        "submit_p99_ms": submissions and submissions.p99_ms,
        "peak_pss_mib": mem.peak_all_mib,
    }
    (args.out / "latest.json").write_text(json.dumps(latest, indent=2))
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
