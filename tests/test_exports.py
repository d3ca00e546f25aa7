"""The public surface: everything public is exported, sorted, and importable."""

from __future__ import annotations

import types

import aiomemdb
import aiomemdb.persistence


def test_all_is_sorted_and_complete() -> None:
    """aiomemdb.__all__ is sorted and names every public (non-underscore) attribute of the package."""
    assert aiomemdb.__all__ == sorted(aiomemdb.__all__)
    public = {
        name
        for name in dir(aiomemdb)
        if not name.startswith("_")
        and name not in {"annotations", "TYPE_CHECKING", "Any"}
        and not isinstance(getattr(aiomemdb, name), types.ModuleType)  # subpackages imported by other tests
    }
    assert public - {"S3Persistence"} <= set(aiomemdb.__all__)
    for name in aiomemdb.__all__:
        assert getattr(aiomemdb, name) is not None


def test_exceptions_share_one_root() -> None:
    """Every exported exception derives from AiomemdbError."""
    errors = [getattr(aiomemdb, n) for n in aiomemdb.__all__ if n.endswith("Error")]
    assert len(errors) == 11
    assert all(issubclass(e, aiomemdb.AiomemdbError) for e in errors)


def test_py_typed_is_shipped() -> None:
    """The package ships the py.typed marker so type checkers use its annotations."""
    from pathlib import Path

    assert (Path(aiomemdb.__file__).parent / "py.typed").exists()


def test_store_options_match_the_constructor() -> None:
    """StoreOptions (used by InMemoryDb and the Agno classes) names exactly AsyncInMemoryDb's keywords."""
    import inspect

    from aiomemdb._async import StoreOptions

    params = set(inspect.signature(aiomemdb.AsyncInMemoryDb.__init__).parameters) - {"self"}
    assert set(StoreOptions.__annotations__) == params
