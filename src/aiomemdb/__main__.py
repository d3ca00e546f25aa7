"""``python -m aiomemdb``: the command line (see :mod:`aiomemdb.cli`)."""

from aiomemdb.cli import main

raise SystemExit(main())
