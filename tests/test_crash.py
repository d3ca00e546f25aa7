"""Crash consistency with real crashes: a child process writing to a directory store is killed with SIGKILL.

The child (``tests/_crash_child.py``, in each durability mode, and with ``max_sessions=2`` or a 20 ms TTL so
that reloads and expiries run between the writes) performs a deterministic sequence of writes (operation ``i`` touches
session ``s{i % 7}`` or note ``n{i % 5}``) and prints ``ack i`` after each write returned; the parent kills it at
random instants (during start-up and replay, between writes, and a few milliseconds after a flush began
writing), copies what the disk holds, loads the copy and compares it with a model of the sequence:

- ``durability="journal"`` (fsync on every write, and every 50 ms): the store equals the model after every
  acknowledged write, plus at most the one write in flight (guarantee 5: nothing acknowledged is lost);
- ``durability="interval"``: each record equals its model state after some prefix of the writes, no older than
  the last flush the child saw succeed and no newer than the write in flight (guarantee 7: a crash at any instant
  of a flush loads to a state at least as new as the previous successful flush). Interval mode promises this
  per record, not across records: a flush writes one file per record, so a crash in the middle of one may leave
  some records newer than others;
- in every mode every file under ``v1/`` decodes (no half-written object is ever read).

After each check the child restarts on the same directory and continues after the last acknowledged write; the
last run of each mode closes cleanly, and then the store equals the model exactly. Set
``AIOMEMDB_CRASH_SEED`` to replay the random kill points of a failing run (the seed is in every message).

Deterministic tests pin down the instants the random ones only hit by chance: a crash between a flush's save and
the journal truncation, a crash before and after every file replacement of a flush, and a close while a
background flush is still writing (the clean-close runs above first exposed it).
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence
from aiomemdb._codec import check_stored_session, decode_envelope
from aiomemdb._io._journal import Journal

from ._crash_child import NOTES, ROW_PAD, RUN_PAD, SESSIONS, run, user_of

CHILD = Path(__file__).with_name("_crash_child.py")
KILLS_PER_MODE = 6
STORE_FIELDS = ("created_at", "updated_at", "version")

# A model state: ("s3" | "n2") -> the record's content (sessions without the store's fields), absent if missing.
State = dict[str, dict[str, Any]]


# -- the model of the child's write sequence --------------------------------------------------------------------


def apply_op(state: State, i: int) -> State:
    """The state after operation ``i`` of ``_crash_child.step`` (a new dict; inner values are never mutated)."""
    out = dict(state)
    sid = f"s{i % SESSIONS}"
    if i % 8 == 3:
        out[f"n{i % NOTES}"] = {"i": i, "pad": RUN_PAD}
    elif i % 8 == 7:
        out.pop(f"n{i % NOTES}", None)
    elif i % 10 == 9:
        out.pop(sid, None)
    elif sid not in out:
        out[sid] = {"session_id": sid, "user_id": user_of(sid), "session_data": {"created": i}, "runs": [run(i)]}
    elif i % 6 == 0:
        out[sid] = {
            "session_id": sid,
            "user_id": user_of(sid),
            "session_data": {"last": i, "pad": ROW_PAD},
            "runs": out[sid]["runs"],
        }
    elif i % 13 == 1:
        out[sid] = {**out[sid], "summary": f"sum{i}"}
    else:
        runs = [r for r in out[sid]["runs"] if r["run_id"] != f"r{i}"]
        if len(runs) == len(out[sid]["runs"]):
            runs.append(run(i))
        else:
            runs = [run(i) if r["run_id"] == f"r{i}" else r for r in out[sid]["runs"]]
        out[sid] = {**out[sid], "runs": runs}
    return out


KEYS = [f"s{n}" for n in range(SESSIONS)] + [f"n{n}" for n in range(NOTES)]


def describe(state: State) -> dict[str, Any]:
    """A short summary of a state for assertion messages (run ids instead of payloads)."""
    out: dict[str, Any] = {}
    for key in KEYS:
        value = state.get(key)
        if value is None:
            continue
        if key.startswith("s"):
            out[key] = [r["run_id"] for r in value.get("runs") or []] + [value.get("session_data", {}).get("last")]
        else:
            out[key] = value["i"]
    return out


# -- reading what a crash left ------------------------------------------------------------------------------------


def check_files(root: Path) -> int:
    """Decode every object under ``root/v1`` (as a load would, without repairing anything); returns the count."""
    count = 0
    v1 = root / "v1"
    if not v1.exists():
        return 0
    for path in v1.rglob("*"):
        if path.is_dir() or path.name.startswith(".tmp-"):
            continue  # temporary files of an interrupted write are never read as records
        assert path.suffix == ".json", path
        env = decode_envelope(path.read_bytes(), key=str(path), collection=path.parent.name, name=path.stem)
        if path.parent.name == "sessions":
            check_stored_session(env.id, env.data, key=str(path))
        count += 1
    return count


async def read_state(root: Path, *, journal: bool) -> State:
    """Open the store at ``root`` as a restart would (replaying the journal if any) and read every record."""
    persistence = DirectoryPersistence(root, fsync=False)
    durability = "journal" if journal else "manual"
    state: State = {}
    async with AsyncInMemoryDb(persistence=persistence, durability=durability, flush_interval=3600) as db:
        for key in KEYS:
            if key.startswith("s"):
                got = await db.get_session(key)
                if got is not None:
                    state[key] = {k: v for k, v in got.items() if k not in STORE_FIELDS}
            else:
                record = await db.get_record("notes", key)
                if record is not None:
                    state[key] = record
        sessions, total = await db.get_sessions()
        assert total == len(sessions) == sum(k.startswith("s") for k in state), "stray sessions in storage"
        assert set(db.stats().records) <= {"notes"}, db.stats().records
    return state


# -- driving the child ----------------------------------------------------------------------------------------------


class Child:
    """A running ``_crash_child.py`` whose stdout lines are collected by a thread as they arrive."""

    def __init__(self, root: Path, mode: str, first: int, count: int | None = None) -> None:
        args = [sys.executable, str(CHILD), str(root), mode, str(first)]
        if count is not None:
            args.append(str(count))
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if raw.endswith(b"\n"):  # a line cut by the kill was never acknowledged
                self._queue.put(raw.decode().strip())
        self._queue.put(None)

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Consume lines until one satisfies ``predicate``; False at EOF or timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return False
            if line is None:
                self._queue.put(None)
                return False
            self.lines.append(line)
            if predicate(line):
                return True
        return False

    def kill(self) -> None:
        """SIGKILL the child; it must not have died of anything else first."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        err = self.finish(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL, f"the child failed by itself: {self.lines[-5:]} {err[-3000:]}"

    def finish(self, timeout: float) -> str:
        """Wait for the process to end, collect the remaining lines, and return its stderr."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.proc.stderr.close()
        return err

    def numbers(self, word: str) -> list[int]:
        return [int(line.split()[1]) for line in self.lines if line.startswith(word + " ")]


def kill_somewhere(child: Child, rng: random.Random) -> str:
    """Kill the child at a random instant; returns how the instant was chosen (for messages)."""
    how = rng.choices(["startup", "between-writes", "in-flush"], weights=[2, 3, 5])[0]
    if how == "startup":
        time.sleep(rng.uniform(0.0, 0.5))  # may land before "ready": during the load and the journal replay
    else:
        if not child.wait_for(lambda line: line == "ready", timeout=15):
            child.kill()  # reports the child's own error, if it died of one
            raise AssertionError(f"the child never got ready: {child.lines}")
        if how == "between-writes":
            time.sleep(rng.uniform(0.02, 0.4))
        else:
            wanted = rng.randint(1, 4)
            seen = 0

            def nth_save(line: str) -> bool:
                nonlocal seen
                seen += line.startswith("saving ")
                return seen >= wanted

            child.wait_for(nth_save, timeout=5)
            time.sleep(rng.uniform(0.0, 0.006))  # a flush writes files for ~5-20 ms: land inside it
    child.kill()
    return how


@pytest.mark.parametrize(
    "mode", ["journal0", "journal", "interval", "journal0+bounded", "interval+bounded", "journal+ttl", "interval+ttl"]
)
def test_sigkill_at_random_instants_keeps_the_promised_state(mode: str, tmp_path: Path) -> None:
    """After SIGKILLs at random instants the reloaded store holds every acknowledged write (journal) or a
    per-record state no older than the last successful flush (interval), and every stored file decodes."""
    seed = int(os.environ.get("AIOMEMDB_CRASH_SEED", "0")) or random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    journal = not mode.startswith("interval")
    root = tmp_path / "store"
    base: State = {}
    first = 0
    for attempt in range(KILLS_PER_MODE + 1):
        graceful = attempt == KILLS_PER_MODE
        child = Child(root, mode, first, count=40 if graceful else None)
        if graceful:
            err = child.finish(timeout=30)
            assert child.proc.returncode == 0, err
            assert child.lines[-1:] == ["closed"], (child.lines, err)
            how = "clean close"
        else:
            how = kill_somewhere(child, rng)
        acks = child.numbers("ack")
        assert acks == list(range(first, first + len(acks))), f"acks out of order: {acks}"
        acked = acks[-1] if acks else first - 1
        flushed = max(child.numbers("flushed"), default=first - 1)
        # states[k] is the model after operations first .. first+k-1; states[-1] includes the one in flight.
        states = [base]
        for i in range(first, acked + 2):
            states.append(apply_op(states[-1], i))
        done = acked - first + 1

        image = tmp_path / f"image{attempt}"
        if root.exists():
            shutil.copytree(root, image)  # what the disk holds now (the child is dead)
        context = f"seed={seed} {mode} attempt={attempt} ({how}) ops {first}..{acked} flushed<={flushed}"
        try:
            check_files(image)
            actual = asyncio.run(read_state(image, journal=journal))
        except Exception as exc:
            raise AssertionError(f"{context}: the store does not load after the crash: {exc!r}") from exc

        if graceful:
            assert actual == states[done], f"{context}: {describe(actual)} != {describe(states[done])}"
            assert not list((root / "journal").glob("journal-*.jsonl")), "the journal was not truncated on close"
        elif journal:
            assert actual in (states[done], states[done + 1]), (
                f"{context}: lost an acknowledged write: {describe(actual)} vs acked {describe(states[done])}"
            )
        else:
            low = flushed - first + 1
            for key in KEYS:
                allowed = [s.get(key) for s in states[low : done + 2]]
                assert actual.get(key) in allowed, (
                    f"{context}: {key} is {describe(actual).get(key)}, allowed "
                    f"{[describe({key: v} if v else {}).get(key) for v in allowed]}"
                )
        shutil.rmtree(image, ignore_errors=True)
        base, first = actual, acked + 1
    assert first > KILLS_PER_MODE, f"seed={seed}: the children made almost no writes ({first})"


# -- deterministic crash instants ---------------------------------------------------------------------------------


async def test_crash_between_flush_and_journal_truncation_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after a flush deleted a session but before the journal segment was truncated still restarts:
    replaying that segment's run entries for the (now deleted) session is not corruption."""
    live, image = tmp_path / "live", tmp_path / "image"
    release = Journal.release

    def crash_then_release(journal: Journal, upto: int) -> None:
        shutil.copytree(live, image)  # the disk at this instant: the flush is saved, the segment not yet gone
        release(journal, upto)

    db = AsyncInMemoryDb(persistence=DirectoryPersistence(live), durability="journal", flush_interval=3600)
    async with db:
        await db.upsert_session({"session_id": "a", "runs": []})
        await db.upsert_session({"session_id": "b"})
        await db.flush()
        await db.upsert_run("a", {"run_id": "r1"})
        await db.delete_session("a")
        await db.upsert_run("b", {"run_id": "r2"})
        expected = await db.get_all_sessions()
        monkeypatch.setattr(Journal, "release", crash_then_release)
        await db.flush()
        monkeypatch.setattr(Journal, "release", release)
    assert not (image / "v1" / "sessions" / "a.json").exists()
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(image), durability="journal") as recovered:
        assert await recovered.get_all_sessions() == expected


async def test_crash_at_every_file_replacement_of_a_flush_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash before or after any file replacement (and delete) of a flush loads, each record old or new."""
    live = tmp_path / "live"
    old = {f"s{n}": {"session_id": f"s{n}", "summary": "old", "runs": [{"run_id": "r"}]} for n in range(5)}
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(live, max_workers=1), durability="manual") as db:
        await db.upsert_sessions(list(old.values()))
        await db.put_record("notes", "gone", {"x": 1})
        await db.flush()
        new = {sid: {**s, "summary": "new", "runs": [{"run_id": "r"}, {"run_id": "r2"}]} for sid, s in old.items()}
        await db.upsert_sessions(list(new.values()))
        await db.delete_record("notes", "gone")

        images: list[Path] = []
        real_replace = os.replace

        def snapshot() -> None:
            images.append(tmp_path / f"image{len(images)}")
            shutil.copytree(live, images[-1])

        def crash_around_replace(src: Any, dst: Any) -> None:
            snapshot()  # the temp file is written and fsynced, the target still old
            real_replace(src, dst)
            snapshot()  # the target is new

        monkeypatch.setattr(os, "replace", crash_around_replace)
        await db.flush()
        monkeypatch.setattr(os, "replace", real_replace)
    assert len(images) == 10
    assert any(p.name.startswith(".tmp-") for p in images[0].rglob("*")), "no image caught a temp file"
    for image in [*images, live]:
        check_files(image)
        async with AsyncInMemoryDb(persistence=DirectoryPersistence(image), durability="manual") as restarted:
            for sid in old:
                got = await restarted.get_session(sid)
                assert got is not None, (image, sid)
                content = {k: v for k, v in got.items() if k not in STORE_FIELDS}
                assert content in (old[sid], new[sid]), (image, sid, content)
        assert not any(p.name.startswith(".tmp-") for p in image.rglob("*")), "the load left a temp file"


async def test_close_during_a_background_flush_keeps_the_latest_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing while a background flush is still writing never lets that flush's older write land after the
    final flush: a record deleted, flushed in the background, then written again survives a clean close."""
    real_unlink = os.unlink
    stalled = threading.Event()

    def slow_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).endswith("n1.json") and not stalled.is_set():
            stalled.set()
            time.sleep(0.3)  # a slow disk: this worker thread outlives the flush that started it
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", slow_unlink)
    root = tmp_path / "store"
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(root, fsync=False), flush_interval=0.01)
    await db.put_record("notes", "n1", {"v": 1})
    await db.flush()
    await db.delete_record("notes", "n1")
    for _ in range(500):  # the background flush is now deleting n1's file
        if stalled.is_set():
            break
        await asyncio.sleep(0.01)
    assert stalled.is_set(), "the background flush never started"
    await db.put_record("notes", "n1", {"v": 2})  # acknowledged before close
    await db.aclose()
    await asyncio.sleep(0.5)  # whatever the first flush still had running has finished by now
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(root), durability="manual") as again:
        assert await again.get_record("notes", "n1") == {"v": 2}
