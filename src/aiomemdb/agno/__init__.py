"""The Agno adapter: agno's database interfaces over aiomemdb's store.

- :class:`InMemoryDb` (an ``agno.db.base.BaseDb``) for ``Agent.run`` and other blocking agno code;
- :class:`AsyncInMemoryDb` (an ``agno.db.base.AsyncBaseDb``) for ``await Agent.arun`` in async servers.

Both are drop-ins for ``agno.db.in_memory.InMemoryDb`` with agno's semantics, plus persistence
(``persistence=DirectoryPersistence(path)``, S3, hooks), ``storage_dict=`` and the seed operations of agno 1.x's
``InMemoryStorage``. :mod:`aiomemdb.agno.testing` has an offline model for tests and examples. This package is
the only part of aiomemdb that imports agno (``pip install 'aiomemdb[agno]'``).

Both classes have the same methods and semantics; the blocking one is generated from the async source
(``_async``) by ``scripts/unasync.py``. It is named ``InMemoryDb`` on purpose: agno dispatches some migrations on
``type(db).__name__``.
"""

from __future__ import annotations

from aiomemdb.agno._async.db import AsyncInMemoryDb
from aiomemdb.agno._sync.db import InMemoryDb

__all__ = ["AsyncInMemoryDb", "InMemoryDb"]
