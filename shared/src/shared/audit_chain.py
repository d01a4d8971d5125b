"""Verify the audit log's hash chain: ``python -m shared.audit_chain verify``.

Each row's `row_hash` is SHA-256 over its content and the previous row's hash, computed by
the database (`audit_event_hash`, the one definition, used by the insert trigger too). A
changed, deleted or inserted-out-of-order row breaks the chain from that row on; the
first broken row is reported. `medimg audit verify` runs this on the embedded database.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.config import get_settings
from shared.db.session import make_engine, make_sessionmaker

_BATCH = 5000
_ROWS = text(
    """
    SELECT e.seq, e.id::text, e.prev_hash, e.row_hash, audit_event_hash(e, e.prev_hash)
    FROM audit_event e WHERE e.seq > :after ORDER BY e.seq LIMIT :limit
    """
)


@dataclass(frozen=True)
class ChainReport:
    rows: int
    broken_seq: int | None = None
    broken_id: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def verify(session: Session) -> ChainReport:
    """Walk the chain in order; stop at the first row whose links or content do not match."""
    checked, after, previous = 0, 0, None
    while True:
        rows = session.execute(_ROWS, {"after": after, "limit": _BATCH}).all()
        if not rows:
            return ChainReport(rows=checked)
        for seq, row_id, prev_hash, row_hash, recomputed in rows:
            if prev_hash != previous:
                reason = "its prev_hash does not match the previous row (a row was removed)"
                return ChainReport(checked, seq, row_id, reason)
            if row_hash != recomputed:
                reason = "its content does not match its hash (the row was changed)"
                return ChainReport(checked, seq, row_id, reason)
            previous, after, checked = row_hash, seq, checked + 1


def run(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            report = verify(session)
    finally:
        engine.dispose()
    if report.ok:
        print(f"audit chain intact: {report.rows} rows verified")
        return 0
    print(
        f"audit chain BROKEN at row seq={report.broken_seq} id={report.broken_id}: "
        f"{report.reason}; {report.rows} rows before it verified",
        file=sys.stderr,
    )
    return 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("verify", help="check the hash chain; exit 1 naming the first broken row")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.audit_chain", description=__doc__)
    add_arguments(parser)
    parser.parse_args(argv)
    return run(get_settings().require_database_url())


if __name__ == "__main__":
    sys.exit(main())
