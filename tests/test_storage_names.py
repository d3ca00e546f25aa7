"""File names that stay distinct on case-insensitive, normalising file systems, and the old layout's migration.

This machine's file system is case-sensitive, so a case-insensitive one (APFS, NTFS) is simulated by checking
that every name a store writes is still unique after ``casefold()`` and ``unicodedata.normalize("NFD")``:
exactly the comparison those file systems make.
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiomemdb import AsyncInMemoryDb, CorruptDataError, DirectoryPersistence, Event
from aiomemdb._codec import MAX_ID_LENGTH, encode_envelope, id_from_object_name, object_name
from aiomemdb.persistence._names import folded_name

CLASHING = ["Ada", "ada", "ADA", "\u00e9", "e\u0301", "\u00c9", "E\u0301", "Stra\u00dfe", "strasse", "con", "CON"]


def folded(name: str) -> str:
    """How a case-insensitive, NFD-normalising file system compares a name."""
    return unicodedata.normalize("NFD", name.casefold())


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in (root / "v1").rglob("*.json"))


def test_names_of_clashing_ids_stay_distinct_under_case_folding_and_nfd() -> None:
    """Ids differing only by case or normalisation get names that no case-insensitive or NFD file system merges."""
    names = [folded_name(i) for i in CLASHING]
    assert len({folded(n) for n in names}) == len(CLASHING)
    assert folded_name("Ada") == "%41da"
    assert folded_name("ada") == "ada"
    assert folded_name("\u00e9") == "%C3%A9"
    assert folded_name("e\u0301") == "e%CC%81"
    assert folded_name("con") == "%63on"  # a Windows device name never reaches the file system
    assert all(name.isascii() and "/" not in name and name not in (".", "..") for name in names)
    # and the old layout did merge them: the defect this layout fixes
    assert folded(object_name("Ada")) == folded(object_name("ada"))


@given(st.lists(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s), min_size=2, max_size=8))
def test_names_are_injective_under_folding_and_reversible(ids: list[str]) -> None:
    """Any distinct ids get names distinct after casefold + NFD, and each name decodes back to its id."""
    ids = [i for i in dict.fromkeys(ids) if _encodable(i)]
    names = [folded_name(i) for i in ids]
    assert len({folded(n) for n in names}) == len(ids)
    for record_id, name in zip(ids, names, strict=True):
        # a hashed (long) name is not decoded: its id is read from the file
        assert id_from_object_name(name) == (None if "~" in name else record_id)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def test_long_ids_are_hashed_and_still_distinct_under_folding() -> None:
    """Ids whose escaped name is too long share a readable start but differ by a lower-case SHA-256."""
    a, b = "A" * MAX_ID_LENGTH, "a" * MAX_ID_LENGTH
    name_a, name_b = folded_name(a), folded_name(b)
    assert len(name_a) < 255
    assert len(name_b) < 255
    assert name_a.endswith(hashlib.sha256(a.encode()).hexdigest())
    assert folded(name_a) != folded(name_b)


async def test_a_store_writes_clashing_ids_to_distinct_files_and_reads_them_back(tmp_path: Path) -> None:
    """A store holding Ada/ada/é (NFC)/e\u0301 (NFD)... writes one file per id, unique after folding, and a restart
    reads every one back with its own content."""
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False), durability="manual") as db:
        for i, sid in enumerate(CLASHING):
            await db.upsert_session({"session_id": sid, "session_data": {"n": i}})
    names = [p.name for p in files_of(tmp_path)]
    assert len(names) == len(CLASHING)
    assert len({folded(n) for n in names}) == len(CLASHING)
    assert orjson.loads((tmp_path / "LAYOUT").read_bytes())["layout"] == 2
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path, fsync=False)) as again:
        for i, sid in enumerate(CLASHING):
            got = await again.get_session(sid)
            assert got is not None, sid
            assert got["session_data"] == {"n": i}, sid


def write_layout_1(root: Path, ids: list[str]) -> None:
    """A directory as the previous release wrote it: layout-1 names, no LAYOUT file."""
    for i, sid in enumerate(ids):
        folder = root / "v1" / "sessions"
        folder.mkdir(parents=True, exist_ok=True)
        doc = orjson.dumps({"session_id": sid, "session_data": {"n": i}, "created_at": 1, "updated_at": 1})
        (folder / f"{object_name(sid)}.json").write_bytes(encode_envelope("sessions", sid, doc, seq=i + 1))


OLD_IDS = ["Ada", "bob", "\u00e9", "Gr\u00fc\u00dfe/../x", "L" * 300]


async def test_a_directory_in_the_old_layout_loads_and_is_renamed_once(tmp_path: Path) -> None:
    """A layout-1 directory opens with every session, its files are renamed to layout-2 names (a migrate event
    says how many), LAYOUT records it, and it loads again from the new names."""
    write_layout_1(tmp_path, OLD_IDS)
    events: list[Event] = []
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path), on_event=events.append) as db:
        for i, sid in enumerate(OLD_IDS):
            got = await db.get_session(sid)
            assert got is not None, sid
            assert got["session_data"] == {"n": i}, sid
        await db.upsert_session({"session_id": "New", "session_data": {"n": 99}})
    migrated = [e.data for e in events if e.kind == "migrate"]
    # "bob" and "\u00e9" already had their new names; Ada, the upper-case G and the hashed L... are renamed
    assert migrated == [{"path": str(tmp_path), "files": 3, "layout": 2}]
    assert sorted(p.name for p in files_of(tmp_path)) == sorted(f"{folded_name(i)}.json" for i in [*OLD_IDS, "New"])
    assert orjson.loads((tmp_path / "LAYOUT").read_bytes())["layout"] == 2
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path)) as again:
        assert again.stats().sessions == len(OLD_IDS) + 1


async def test_read_only_open_of_an_old_directory_reads_it_and_renames_nothing(tmp_path: Path) -> None:
    """A read-only persistence (the command line's reads) loads a layout-1 directory as it is."""
    write_layout_1(tmp_path, OLD_IDS)
    before = sorted(p.name for p in files_of(tmp_path))
    reader = DirectoryPersistence(tmp_path, read_only=True)
    await reader.open()
    snapshot = await reader.load()
    assert await reader.load_one("sessions", "Ada") is not None
    await reader.aclose()
    assert set(snapshot["sessions"]) == set(OLD_IDS)
    assert sorted(p.name for p in files_of(tmp_path)) == before
    assert not (tmp_path / "LAYOUT").exists()
    assert not (tmp_path / "LOCK").exists()


async def test_a_half_migrated_directory_loads_and_the_next_writer_finishes(tmp_path: Path) -> None:
    """A crash between the renames and the LAYOUT file leaves both kinds of names: they load, and the next
    writer renames the rest."""
    write_layout_1(tmp_path, OLD_IDS)
    old = tmp_path / "v1" / "sessions" / "Ada.json"
    old.rename(old.with_name(f"{folded_name('Ada')}.json"))  # the first rename happened, then the crash
    reader = DirectoryPersistence(tmp_path, read_only=True)
    await reader.open()
    assert set((await reader.load())["sessions"]) == set(OLD_IDS)
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path)) as db:
        assert db.stats().sessions == len(OLD_IDS)
    assert sorted(p.name for p in files_of(tmp_path)) == sorted(f"{folded_name(i)}.json" for i in OLD_IDS)


async def test_a_file_under_another_ids_name_is_corrupt_in_the_new_layout(tmp_path: Path) -> None:
    """Once migrated, an old-style name (a file copied in by hand) is refused, not read under the wrong id."""
    async with AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path), durability="manual") as db:
        await db.upsert_session({"session_id": "Ada"})
    (tmp_path / "v1/sessions/%41da.json").rename(tmp_path / "v1/sessions/Ada.json")
    with pytest.raises(CorruptDataError, match="does not match the id"):
        await AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path)).start()


async def test_a_layout_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    """A LAYOUT this version does not know is refused with a message to upgrade, and nothing is renamed."""
    tmp_path.joinpath("LAYOUT").write_bytes(orjson.dumps({"format_version": 1, "layout": 3}))
    db = AsyncInMemoryDb(persistence=DirectoryPersistence(tmp_path))
    with pytest.raises(CorruptDataError, match="newer aiomemdb"):
        await db.start()
    await db.aclose()
