"""aiomemdb: an async-first in-memory session store for AI agents."""
