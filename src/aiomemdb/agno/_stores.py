"""The two stores the adapter runs over, by the names its async source and generated sync twin use.

The async source says ``AsyncStore``; ``scripts/unasync.py`` turns that into ``Store``. Both are the public classes
of :mod:`aiomemdb`, so mypy checks every store call of the adapter: method name, arguments and result type.
"""

from __future__ import annotations

from aiomemdb import AsyncInMemoryDb as AsyncStore
from aiomemdb import InMemoryDb as Store

__all__ = ["AsyncStore", "Store"]
