"""The ``aiomemdb`` command line: look into, check, back up and migrate a store without writing code.

::

    aiomemdb ls ./sessions --user ada --limit 20
    aiomemdb show s3://my-bucket/agents SESSION_ID --runs 3
    aiomemdb export ./sessions -o backup.jsonl
    aiomemdb import s3://my-bucket/agents backup.jsonl       # or a seed-style {session_id: session} blob
    aiomemdb verify s3://my-bucket/agents --endpoint-url http://127.0.0.1:9000
    aiomemdb stats ./sessions

A store is a directory (:class:`~aiomemdb.DirectoryPersistence`) or ``s3://bucket[/prefix]``
(:class:`~aiomemdb.S3Persistence`, credentials from the environment as botocore finds them; they are never
printed). ``ls``, ``show`` and ``stats`` read through the async core and never write; ``import`` writes
through it (``durability="manual"``, one explicit flush per batch); ``verify`` and ``export`` read every stored
object directly, so one corrupt object is reported with its key instead of stopping the scan.

Exit status: 0 success; 1 ``verify`` found problems, or an operation failed (one line on stderr; the traceback
with ``--debug``); 2 a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from aiomemdb._codec import decode_envelope
from aiomemdb._exceptions import AiomemdbError, CorruptDataError, ValidationError
from aiomemdb.cli._checks import check_output, require_store, s3_hint
from aiomemdb.cli._loading import Preloaded, read_all
from aiomemdb.cli._sources import (
    Object,
    ReadOnly,
    check_object,
    journal_entries,
    journal_of,
    message,
    persistence_for,
    reason,
    scan,
    store,
)
from aiomemdb.cli._transfer import import_records, parse_import, write_output
from aiomemdb.persistence._base import Persistence

__all__ = ["main"]


# -- commands --------------------------------------------------------------------------------------------


def _iso(ts: Any) -> str:
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cell(value: Any, width: int = 0) -> str:
    """Text for a table cell: control characters from stored data are escaped, never sent to the terminal."""
    text = "-" if value is None else str(value)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text[: width - 1] + "…" if width and len(text) > width else text


def _row(session: Mapping[str, Any]) -> dict[str, Any]:
    data = session.get("session_data")
    name = data.get("session_name") if isinstance(data, Mapping) else None
    return {
        "session_id": session.get("session_id"),
        "user_id": session.get("user_id"),
        "session_type": session.get("session_type"),
        "agent_id": session.get("agent_id"),
        "team_id": session.get("team_id"),
        "workflow_id": session.get("workflow_id"),
        "runs": len(session.get("runs") or ()),
        "created_at": session.get("created_at"),
        "updated_at": session.get("updated_at"),
        "version": session.get("version"),
        "session_name": name,
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in (header, *rows)
    )


def cmd_ls(args: argparse.Namespace, persistence: Persistence) -> int:
    require_store(persistence)

    async def run() -> tuple[list[dict[str, Any]], int]:
        snapshot = Preloaded(await read_all(persistence, args))
        async with store(snapshot, read_only_journal=journal_of(persistence)) as db:
            return await db.get_sessions(
                user_id=args.user,
                agent_id=args.agent,
                team_id=args.team,
                workflow_id=args.workflow,
                session_type=args.type,
                sort_by=args.sort,
                sort_order=args.order,
                limit=args.limit,
            )

    sessions, total = asyncio.run(run())
    rows = [_row(s) for s in sessions]
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    header = ("ID", "USER", "TYPE", "COMPONENT", "RUNS", "UPDATED", "NAME")
    cells = [
        (
            _cell(r["session_id"]),
            _cell(r["user_id"]),
            _cell(r["session_type"]),
            _cell(r["agent_id"] or r["team_id"] or r["workflow_id"]),
            str(r["runs"]),
            _iso(r["updated_at"]),
            _cell(r["session_name"], 40),
        )
        for r in rows
    ]
    print(_table(header, cells))
    if total > len(rows):
        print(f"({len(rows)} of {total} sessions shown)", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace, persistence: Persistence) -> int:
    require_store(persistence)

    async def run() -> dict[str, Any] | None:
        # lazy: one object read, not the store (and the journal's writes, if any)
        async with store(ReadOnly(persistence), lazy=True, read_only_journal=journal_of(persistence)) as db:
            return await db.get_session(args.session_id, runs_limit=args.runs)

    session = asyncio.run(run())
    if session is None:
        raise LookupError(f"no session {args.session_id!r} in {args.store}")
    print(orjson.dumps(session, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_stats(args: argparse.Namespace, persistence: Persistence) -> int:
    require_store(persistence)

    async def run() -> dict[str, Any]:
        started = time.monotonic()
        snapshot = Preloaded(await read_all(persistence, args))
        async with store(snapshot, read_only_journal=journal_of(persistence)) as db:
            return {**dataclasses.asdict(db.stats()), "load_duration": time.monotonic() - started}

    stats = asyncio.run(run())
    if args.json:
        print(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())
        return 0
    shown = {"store": args.store, **stats}
    shown["records"] = ", ".join(f"{k}={v}" for k, v in sorted(stats["records"].items())) or "-"
    if stats["load_duration"] is not None:
        shown["load_duration"] = f"{stats['load_duration']:.3f}s"
    width = max(map(len, shown))
    for key, value in shown.items():
        print(f"{key.ljust(width)}  {_cell(value)}")
    return 0


def cmd_verify(args: argparse.Namespace, persistence: Persistence) -> int:
    require_store(persistence)
    bad: list[tuple[str, str]] = []

    def check(obj: Object, raw: bytes) -> None:
        try:
            check_object(obj, raw)
        except AiomemdbError as exc:
            bad.append((obj.where, reason(obj.where, exc)))

    count, problems = asyncio.run(scan(persistence, args, "verifying", check, unreadable=bad))
    journal = journal_of(persistence)
    entries, journal_problems = journal_entries(journal)
    problems = sorted(problems + bad + journal_problems)
    for where, why in problems:
        print(f"CORRUPT {where}: {why}")
    pending = (
        f"; plus {entries} journaled write(s) in {journal} not flushed yet (the next open of the store replays "
        "them)"
        if entries
        else ""
    )
    if problems:
        print(f"{len(problems)} problem(s) among {count} objects of {args.store}{pending}", file=sys.stderr)
        return 1
    print(f"ok: all {count} objects of {args.store} are readable{pending}")
    return 0


def _counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in sorted(counter.items())) or "nothing"


def cmd_export(args: argparse.Namespace, persistence: Persistence) -> int:
    require_store(persistence)
    check_output(args.output)
    found: list[tuple[int, str, str, bytes]] = []  # (seq, collection, id, the stored object)

    def keep(obj: Object, raw: bytes) -> None:
        record_id, seq = check_object(obj, raw)
        found.append((seq, obj.collection, record_id, raw))

    journal = journal_of(persistence)
    entries, _ = journal_entries(journal)
    if entries:
        print(
            f"WARNING: {journal} holds {entries} journaled write(s) not flushed to the store's objects yet; this "
            "export does NOT include them. Open the store once (any open replays and flushes the journal), or "
            "let its writer flush, then export again.",
            file=sys.stderr,
        )
    _, problems = asyncio.run(scan(persistence, args, "exporting", keep))
    if problems:
        where, why = problems[0]
        raise CorruptDataError(f"{where}: {why} (aiomemdb verify lists every problem)", key=where)
    found.sort(key=lambda item: item[:3])  # write order, so an import keeps "the later write first"

    def lines() -> Iterator[bytes]:
        for _, collection, record_id, raw in found:
            data = decode_envelope(raw, key=record_id).data
            yield orjson.dumps({"collection": collection, "id": record_id, "data": data}) + b"\n"

    write_output(args.output, lines())
    target = "stdout" if args.output == "-" else args.output
    counts = Counter(collection for _, collection, _, _ in found)
    print(f"exported {len(found)} records ({_counts(counts)}) to {target}", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace, persistence: Persistence) -> int:
    name = "stdin" if args.file == "-" else args.file
    raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    kind, records = parse_import(raw, name)
    counts = asyncio.run(import_records(persistence, records, preserve=args.preserve_timestamps))
    print(f"imported {sum(counts.values())} records ({_counts(counts)}) from {name} ({kind}) into {args.store}")
    return 0


# -- argument parsing ------------------------------------------------------------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Defined on the main parser and on every command, so options work before or after the command name;
    # SUPPRESS keeps a command's parser from resetting what was given before it.
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--endpoint-url", metavar="URL", default=default, help="S3 endpoint (MinIO, R2, moto, ...)")
    parser.add_argument("--region", default=default, help="S3 region (default: from the environment)")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show the traceback of an error",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``aiomemdb`` command."""
    from aiomemdb import __version__

    parser = argparse.ArgumentParser(
        prog="aiomemdb",
        description="Inspect, verify, export and import an aiomemdb store.",
        epilog="STORE is a directory path or s3://bucket/prefix (credentials from the environment, as botocore "
        "finds them). Exit status: 0 ok, 1 problems found or an operation failed, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"aiomemdb {__version__}")
    _add_common(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, summary: str, handler: Callable[[argparse.Namespace, Persistence], int]) -> Any:
        sub = commands.add_parser(name, help=summary, description=summary, parents=[common])
        sub.add_argument("store", metavar="STORE", help="a directory path or s3://bucket/prefix")
        sub.set_defaults(handler=handler)
        return sub

    ls = command("ls", "list sessions as a table (or JSON)", cmd_ls)
    for flag, help_ in (("user", "user_id"), ("agent", "agent_id"), ("team", "team_id"), ("workflow", "workflow_id")):
        ls.add_argument(f"--{flag}", metavar="ID", help=f"only sessions with this {help_}")
    ls.add_argument("--type", metavar="TYPE", help="only sessions of this session_type (agent, team, workflow)")
    ls.add_argument("--limit", type=_int_at_least(1), help="show at most this many sessions")
    ls.add_argument("--sort", choices=("updated_at", "created_at", "session_id"), default="updated_at")
    ls.add_argument("--order", choices=("desc", "asc"), default="desc", help="sort order (default: newest first)")
    ls.add_argument("--json", action="store_true", help="print a JSON array instead of a table")

    show = command("show", "print one session as JSON", cmd_show)
    show.add_argument("session_id", metavar="SESSION_ID")
    show.add_argument("--runs", type=_int_at_least(0), metavar="N", help="only the last N runs")

    export = command("export", "write every record as JSON lines", cmd_export)
    export.add_argument("-o", "--output", default="-", metavar="FILE", help="output file (default: stdout)")

    import_ = command("import", "read records from JSON lines or a {session_id: session} blob", cmd_import)
    import_.add_argument("file", nargs="?", default="-", metavar="FILE", help="input file (default: stdin)")
    import_.add_argument(
        "--preserve-timestamps",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the records' created_at/updated_at (default) or stamp them now",
    )

    command("verify", "read every stored object and report the corrupt ones", cmd_verify)

    stats = command("stats", "load the store and print its counters", cmd_stats)
    stats.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _fail(args: argparse.Namespace, exc: BaseException) -> int:
    if getattr(args, "debug", False):
        traceback.print_exception(exc)
    else:
        print(f"aiomemdb: error: {message(exc)}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits with 2 on a usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("a command is required")
    hint = s3_hint(args.store)
    if hint is not None:
        parser.error(hint)
    try:
        persistence = persistence_for(args)
    except ValidationError as exc:
        parser.error(str(exc))
    except ImportError as exc:
        return _fail(args, exc)
    try:
        return int(args.handler(args, persistence))
    except KeyboardInterrupt:
        print("aiomemdb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`aiomemdb ls | head`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        return _fail(args, exc)
