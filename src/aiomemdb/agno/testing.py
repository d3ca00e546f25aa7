"""An offline, deterministic Agno model for tests, examples and benchmarks.

:class:`OfflineModel` is a real :class:`agno.models.base.Model`: agents, teams and workflows run through agno's
whole pipeline (messages, history, tool calls, metrics, storage) exactly as with a hosted model, but the reply
is computed from the messages the model sees, so runs are reproducible and need no network or API key:

- "What was my first question?" (or "... first message?") answers with the first user message in the
  conversation history it was given, so ``add_history_to_context=True`` can be checked end to end;
- any other prompt gets ``"Offline reply <hash>: ..."``, where ``<hash>`` is a SHA-256 prefix of the prompt;
- with ``enable_agentic_memory=True`` on the agent, a prompt that states a fact ("my name is ...",
  "remember ...", "I like ...") makes the model call agno's ``update_user_memory`` tool, and agno's memory
  manager (driven by this same model) then calls ``add_memory``, so user memories are written offline;
- token usage is reported like a provider would (about four characters per token), so run and session
  metrics are populated.

The model itself never touches the network, but agno's agents, teams and workflows post usage telemetry from a
background thread unless ``AGNO_TELEMETRY=false`` is set (or ``telemetry=False`` is passed to each of them):
set it in offline tests, examples and benchmarks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agno.metrics import MessageMetrics
from agno.models.base import Model
from agno.models.message import Message
from agno.models.response import ModelResponse

__all__ = ["OfflineModel", "prompt_hash"]

_FIRST_QUESTION = re.compile(r"\bfirst (question|message)\b", re.IGNORECASE)
_FACT = re.compile(
    r"\b(my name is|i am|i'm|i live|i like|i love|i prefer|i work|remember( that)?|my favou?rite)\b",
    re.IGNORECASE,
)
_FILLER = (
    "The offline model writes this sentence so that stored runs have a realistic size. "
    "It carries no information beyond its length. "
)


def prompt_hash(prompt: str) -> str:
    """The 12-hex-digit SHA-256 prefix the model puts in its reply to ``prompt``."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def _text(message: Message) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return message.get_content_string()


def _tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def _tool_names(tools: Sequence[Any] | None) -> set[str]:
    names: set[str] = set()
    for tool in tools or ():
        if isinstance(tool, dict):
            fn = tool.get("function")
            name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
            if isinstance(name, str):
                names.add(name)
    return names


@dataclass
class OfflineModel(Model):
    """A deterministic model that answers from the messages it is given (no network, no API key).

    Attributes:
        reply_chars: pad each plain reply with filler text up to about this many characters, so benchmark
            sessions reach a realistic size (about 2.4 KB per run gives the ~24 KB, 10-run session of a real
            agent). 0 (the default) keeps replies short.
        latency: seconds each model call waits (``time.sleep`` in ``invoke``, ``asyncio.sleep`` in
            ``ainvoke``), to imitate a provider's round trip in concurrency tests.
        memory_tools: call agno's memory tools when a prompt states a fact (see the module docstring).
    """

    id: str = "offline-1"
    name: str | None = "OfflineModel"
    provider: str | None = "Offline"
    reply_chars: int = 0
    latency: float = 0.0
    memory_tools: bool = True

    # -- the provider round trip: build a raw response, then parse it like any provider --

    def _respond(self, messages: list[Message], tools: Sequence[Any] | None) -> dict[str, Any]:
        """The raw provider payload for ``messages``: a reply or one tool call, plus usage."""
        prompt_tokens = sum(_tokens(_text(m)) for m in messages)
        last = messages[-1] if messages else None
        names = _tool_names(tools)
        tool_call = None
        if last is not None and last.role == "user" and self.memory_tools:
            tool_call = self._memory_tool_call(_text(last), names)
        if tool_call is not None:
            completion = json.dumps(tool_call["function"])
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": [tool_call],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": _tokens(completion)},
            }
        content = self._reply(messages)
        return {
            "role": "assistant",
            "content": content,
            "tool_calls": [],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": _tokens(content)},
        }

    def _memory_tool_call(self, prompt: str, tools: set[str]) -> dict[str, Any] | None:
        if "add_memory" in tools:
            # agno's memory manager: its user message is the task (agentic) or the conversation to mine.
            fact = _extract_fact(prompt)
            if fact is None:
                return None
            args: dict[str, Any] = {"memory": fact, "topics": _topics(fact)}
            name = "add_memory"
        elif "update_user_memory" in tools and _FACT.search(prompt):
            args = {"task": f"Add a memory: {prompt.strip()}"}
            name = "update_user_memory"
        else:
            return None
        call_id = f"call_{prompt_hash(name + prompt)}"
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}

    def _reply(self, messages: list[Message]) -> str:
        conversation = [m for m in messages if m.role not in ("system", "developer")]
        last = conversation[-1] if conversation else None
        if last is not None and last.role == "tool":
            reply = f"Done: {_text(last).strip()[:200]}"
        else:
            prompt = _text(last).strip() if last is not None else ""
            user_messages = [m for m in conversation if m.role == "user"]
            if _FIRST_QUESTION.search(prompt):
                earlier = [m for m in user_messages[:-1] if _text(m).strip()]
                if earlier:
                    reply = f"Your first question was: {_text(earlier[0]).strip()}"
                else:
                    reply = "I have no record of an earlier question in this conversation."
            else:
                reply = f"Offline reply {prompt_hash(prompt)}: you said {prompt[:200]!r}."
        if self.reply_chars > len(reply):
            need = self.reply_chars - len(reply) - 1
            reply = reply + " " + (_FILLER * (need // len(_FILLER) + 1))[:need]
        return reply

    def _parse_provider_response(self, response: Any, **kwargs: Any) -> ModelResponse:
        """Turn the raw payload built by :meth:`_respond` into a :class:`ModelResponse`."""
        model_response = ModelResponse(role=response.get("role", "assistant"))
        if response.get("content") is not None:
            model_response.content = response["content"]
        if response.get("tool_calls"):
            model_response.tool_calls = [dict(tc) for tc in response["tool_calls"]]
        usage = response.get("usage")
        if usage:
            model_response.response_usage = _metrics(usage)
        return model_response

    def _parse_provider_response_delta(self, response: Any) -> ModelResponse:
        """A streamed chunk has the same shape as a whole response here."""
        return self._parse_provider_response(response)

    # -- the four entry points agno calls --

    def invoke(
        self,
        messages: list[Message],
        assistant_message: Message,
        response_format: Any = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        run_response: Any = None,
        compress_tool_results: bool = False,
    ) -> ModelResponse:
        """Answer ``messages`` synchronously."""
        assistant_message.metrics.start_timer()  # type: ignore[no-untyped-call]
        if self.latency:
            time.sleep(self.latency)
        raw = self._respond(messages, tools)
        assistant_message.metrics.stop_timer()
        return self._parse_provider_response(raw, response_format=response_format)

    async def ainvoke(
        self,
        messages: list[Message],
        assistant_message: Message,
        response_format: Any = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        run_response: Any = None,
        compress_tool_results: bool = False,
    ) -> ModelResponse:
        """Answer ``messages`` asynchronously."""
        assistant_message.metrics.start_timer()  # type: ignore[no-untyped-call]
        if self.latency:
            await asyncio.sleep(self.latency)
        raw = self._respond(messages, tools)
        assistant_message.metrics.stop_timer()
        return self._parse_provider_response(raw, response_format=response_format)

    def invoke_stream(
        self,
        messages: list[Message],
        assistant_message: Message,
        response_format: Any = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        run_response: Any = None,
        compress_tool_results: bool = False,
    ) -> Iterator[ModelResponse]:
        """Stream the answer as one chunk."""
        assistant_message.metrics.start_timer()  # type: ignore[no-untyped-call]
        if self.latency:
            time.sleep(self.latency)
        raw = self._respond(messages, tools)
        yield self._parse_provider_response_delta(raw)
        assistant_message.metrics.stop_timer()

    async def ainvoke_stream(
        self,
        messages: list[Message],
        assistant_message: Message,
        response_format: Any = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        run_response: Any = None,
        compress_tool_results: bool = False,
    ) -> AsyncIterator[ModelResponse]:
        """Stream the answer asynchronously as one chunk."""
        assistant_message.metrics.start_timer()  # type: ignore[no-untyped-call]
        if self.latency:
            await asyncio.sleep(self.latency)
        raw = self._respond(messages, tools)
        yield self._parse_provider_response_delta(raw)
        assistant_message.metrics.stop_timer()


def _metrics(usage: dict[str, int]) -> MessageMetrics:
    metrics = MessageMetrics()
    metrics.input_tokens = usage.get("prompt_tokens", 0)
    metrics.output_tokens = usage.get("completion_tokens", 0)
    metrics.total_tokens = metrics.input_tokens + metrics.output_tokens
    return metrics


_TASK_PREFIX = re.compile(r"^\s*(add a memory|task)\s*:\s*", re.IGNORECASE)


def _extract_fact(text: str) -> str | None:
    """The fact a memory-manager prompt states, as a memory sentence; ``None`` when it states none."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in lines:
        candidate = _TASK_PREFIX.sub("", line)
        # The conversation-mining prompt quotes messages as "user: ..." lines.
        candidate = re.sub(r"^(user|human)\s*:\s*", "", candidate, flags=re.IGNORECASE)
        if _FACT.search(candidate):
            return "The user said: " + candidate.rstrip(".") + "."
    return None


def _topics(fact: str) -> list[str]:
    lowered = fact.lower()
    topics = [t for t, words in _TOPIC_WORDS.items() if any(w in lowered for w in words)]
    return topics or ["general"]


_TOPIC_WORDS: dict[str, tuple[str, ...]] = {
    "name": ("my name", "i am", "i'm"),
    "location": ("i live", "from "),
    "preferences": ("i like", "i love", "i prefer", "favourite", "favorite"),
    "work": ("i work", "job"),
}
