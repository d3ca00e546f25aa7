"""The Agno adapter's one source: ``aiomemdb.agno.AsyncInMemoryDb`` and its parts, one module per agno area.

``scripts/unasync.py`` generates the blocking twin, ``aiomemdb.agno._sync``, from these modules by token
substitution (``AsyncX`` → ``X``, ``async def`` → ``def``, ``await x`` → ``x``, ``aclose`` → ``close`` …);
``tests/agno/test_generated.py`` fails when the generated files are stale. Edit here, then run the script.
"""
