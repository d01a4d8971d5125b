"""`medimg`: run the platform on one machine."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from cli import audit, backup, keys, predict, train
from cli.stack import Stack, StackConfig


def _run(args: argparse.Namespace) -> int:
    stack = Stack(
        StackConfig(
            data_dir=Path(args.data_dir),
            api_host=args.host,
            api_port=args.port,
            worker_concurrency=args.concurrency,
            dicom_port=args.dicom_port or None,
        )
    )
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        stack.start()
        print(
            f"\nmedimg is running: API {stack.api_url} (docs {stack.api_url}/docs); "
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping.wait(1.0):
            stack.check_alive()
    except (RuntimeError, TimeoutError) as exc:
        print(f"medimg: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medimg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start Postgres, Valkey, migrations, API and workers")
    run.add_argument("--data-dir", default="var", help="where embedded data lives (default: var)")
    run.add_argument("--host", default="127.0.0.1", help="API bind address")
    run.add_argument("--port", type=int, default=8000, help="API port")
    run.add_argument("--concurrency", type=int, default=2, help="CPU worker processes")
    run.add_argument(
        "--dicom-port",
        type=int,
        default=int(os.environ.get("MEDIMG_DICOM_PORT", "11112")),
        help="DICOM listener port (AE title MEDIMG_DICOM_AE_TITLE, default MEDIMG); 0: no gateway",
    )
    run.set_defaults(handler=_run)
    keys.add_parser(sub)
    audit.add_parser(sub)
    backup.add_parser(sub)
    predict.add_parser(sub)
    train.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
