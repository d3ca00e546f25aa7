"""Check the server, not the documentation: does this S3 endpoint enforce conditional writes?

Guarantee 9 (a conflict between replicas is never a silent overwrite) rests on the server refusing a
``PUT`` with ``If-None-Match: *`` over an existing object and a ``PUT`` with an ``If-Match`` that names another
version. Several S3-compatible servers (s3rver, older MinIO releases, some gateways) accept both headers and
ignore them. :func:`check_conditional_writes` finds out once per bucket and prefix:

1. ``GET {prefix}/v1/_meta/conditional-writes``: a verdict cached by an earlier probe that passed; if it says
   ``"enforced": true`` that is the answer (one request per start).
2. Otherwise, ``PUT`` a sentinel ``{prefix}/v1/_meta/probe-{random}`` (unconditionally), then ``PUT`` it again
   with ``If-None-Match: *`` and once more with a wrong ``If-Match``. Both must be refused with 412 (or 409,
   ``ConditionalRequestConflict``). The sentinel is deleted; a passing verdict is cached. A failing one is not
   cached: an upgraded server is re-checked at the next start.

The sentinel's name is random, so replicas that start together probe independently. Objects under ``_meta/``
are not records: loads and listings skip them.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

import orjson

from aiomemdb._exceptions import PersistenceError
from aiomemdb.persistence._s3_wire import Signal, Wire, describe, error_code

__all__ = ["META_DIR", "VERDICT_NAME", "Verdict", "check_conditional_writes"]

logger = logging.getLogger("aiomemdb.s3")

#: Under ``{prefix}/v1/``: objects of the store itself, not records.
META_DIR = "_meta/"
VERDICT_NAME = f"{META_DIR}conditional-writes"
_WRONG_ETAG = '"00000000000000000000000000000000"'


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a probe.

    Attributes:
        enforced: the server refused both conditional writes it should refuse.
        behaviour: what the server did, in words (for the error message and the logs).
        cached: the verdict came from the cached object, no probe was run.
    """

    enforced: bool
    behaviour: str
    cached: bool = False


async def check_conditional_writes(wire: Wire, root: str) -> Verdict:
    """The server's verdict for objects under ``root`` (``{prefix}/v1/``): cached, or probed now.

    Raises:
        PersistenceError: the probe could not run (no access, network down, a missing bucket).
    """
    verdict_key = f"{root}{VERDICT_NAME}"
    got = await wire.get(verdict_key)
    if got is not None:
        try:
            doc = orjson.loads(got[0])
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and doc.get("enforced") is True:
            return Verdict(True, str(doc.get("behaviour", "enforced")), cached=True)
        logger.warning("s3://%s/%s is not a verdict this version wrote; probing again", wire.bucket, verdict_key)
    verdict = await _probe(wire, f"{root}{META_DIR}probe-{secrets.token_hex(8)}")
    if verdict.enforced:
        body = orjson.dumps(
            {"format_version": 1, "enforced": True, "behaviour": verdict.behaviour, "checked_at": time.time()}
        )
        await wire.put(verdict_key, body, None, condition={})
    logger.info("s3://%s/%s conditional writes: %s", wire.bucket, root, verdict.behaviour)
    return verdict


async def _probe(wire: Wire, sentinel: str) -> Verdict:
    first = await wire.put(sentinel, b'{"probe":1}', None, condition={})
    if not isinstance(first, str):  # pragma: no cover - an unconditional PUT has nothing to conflict with
        raise PersistenceError(f"S3 PUT s3://{wire.bucket}/{sentinel} answered {first.value}", key=sentinel)
    try:
        create = await _conditional(wire, sentinel, {"IfNoneMatch": "*"})
        update = await _conditional(wire, sentinel, {"IfMatch": _WRONG_ETAG})
    finally:
        await wire.delete(sentinel, None)
    refused = [create is None, update is None]
    if all(refused):
        return Verdict(True, "refused If-None-Match: * on an existing object and a wrong If-Match (412)")
    what = []
    if create is not None:
        what.append(f"{create} to a PUT with If-None-Match: * over an existing object")
    if update is not None:
        what.append(f"{update} to a PUT with If-Match naming a version that does not exist")
    return Verdict(False, "answered " + " and ".join(what))


async def _conditional(wire: Wire, key: str, condition: dict[str, str]) -> str | None:
    """``None`` when the server refused the write as a precondition failure; else what it answered."""
    try:
        outcome = await wire.put(key, b'{"probe":2}', None, condition=condition)
    except PersistenceError as exc:
        _, status = error_code(exc.cause) if exc.cause is not None else ("", 0)
        if status and (status < 500 or status == 501):  # the header itself refused (400, 501 NotImplemented)
            return describe(exc.cause) if exc.cause is not None else str(exc)
        raise
    if outcome is Signal.CONFLICT:
        return None
    return "success (200)" if isinstance(outcome, str) else f"{outcome.value}"
