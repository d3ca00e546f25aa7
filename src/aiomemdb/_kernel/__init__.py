"""The sans-I/O kernel: the store's state and its one commit path (see ``_kernel.py``)."""

from aiomemdb._kernel._effects import Blob, Drop, Effect, SetRecord, SetRun, SetSession, journal_line, parse_entry
from aiomemdb._kernel._kernel import FlushTicket, JournalSink, Kernel, Key, LoadTicket, NeedsLoad, check_ids
from aiomemdb._kernel._query import Query, SortBy, SortOrder, check_limit, check_optional_str
from aiomemdb._kernel._residency import Residency

__all__ = [
    "Blob",
    "Drop",
    "Effect",
    "FlushTicket",
    "JournalSink",
    "Kernel",
    "Key",
    "LoadTicket",
    "NeedsLoad",
    "Query",
    "Residency",
    "SetRecord",
    "SetRun",
    "SetSession",
    "SortBy",
    "SortOrder",
    "check_ids",
    "check_limit",
    "check_optional_str",
    "journal_line",
    "parse_entry",
]
