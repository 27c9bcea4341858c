"""Tool calls written as text, taken out of a reply's stream.

Models with a tool-calling chat template (Qwen2.5) write a call as text: Qwen's
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, but the 1.5B Coder model mostly as a
```json fence, sometimes with doubled braces (FINDINGS.md, measured again in
docs/performance.md "Tools"). `ToolCallSplitter` passes a reply's ordinary words on at once and
holds back, from the first sign of a call, everything after it: a reply that opens with `{`, `[`,
a fence or a tool's name (`get_weather(city="Paris")`, as small models also write calls), or text
that reaches `<tool_call>` or a fence. At the end, `finish` reads the held
text leniently; calls naming a tool that was not offered are dropped (and reported), and held
text that holds no call at all is passed on after all.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .engine import ToolCall, new_call_id

# Qwen's tag; the 1.5B model also writes its call inside the <tools> tag its prompt lists the
# tools in (measured: docs/performance.md "Tools").
MARKERS = ("<tool_call>", "<tools>", "```")
_OPENERS = ("{", "[") + MARKERS
_TAGGED = re.compile(r"<(?:tool_call|tools)>(.*?)(?:</(?:tool_call|tools)>|$)", re.S)
_FENCED = re.compile(r"```[a-zA-Z]*\s*(.*?)(?:```|$)", re.S)
_MARKUP = re.compile(r"</?(?:tool_call|tools)>|```[a-zA-Z]*")
_NAMED = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*)\s*((?:\(.*\)|\{.*\})?)\s*$", re.S)
_IDENT = re.compile(r"[A-Za-z0-9_-]")


@dataclass
class Parsed:
    calls: list[ToolCall] = field(default_factory=list)
    text: str = ""  # held text that was no call after all: to be said
    unknown: list[str] = field(default_factory=list)  # names of tools that were not offered
    failed: bool = False  # call markup holding no call and no words

    @property
    def unusable(self) -> bool:
        """The model meant to call a tool but wrote nothing usable (ask it again without)."""
        return not self.calls and (bool(self.unknown) or self.failed)


def _objects(text: str) -> list[Any]:
    """The JSON values in `text`, read leniently: each `{...}` or `[...]` from where it starts;
    with doubled braces undone when the text as written holds no call."""
    found: list[Any] = []
    for candidate in (text, text.replace("{{", "{").replace("}}", "}")):
        found = _values(candidate)
        if any(_as_call(item) for value in found for item in _items(value)):
            return found
    return found


def _values(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    found: list[Any] = []
    at = 0
    while True:
        starts = [i for i in (text.find("{", at), text.find("[", at)) if i >= 0]
        if not starts:
            return found
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            at = start + 1
            continue
        found.append(value)
        at = end


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _as_call(value: Any) -> tuple[str, str] | None:
    """(name, arguments as JSON text) of one call object, in the shapes models write:
    {"name", "arguments"|"parameters"} or OpenAI's {"function": {...}}."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):
        value = value["function"]
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return None
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):
        return name, args.strip() or "{}"
    return name, json.dumps(args, ensure_ascii=False)


def _named_call(text: str, offered: set[str]) -> tuple[str, str] | None:
    """A call written as code: `name(key="value")`, `name{"key": ...}` or the bare name."""
    m = _NAMED.match(text)
    if m is None or m.group(1) not in offered:
        return None
    name, rest = m.group(1), m.group(2).strip()
    if not rest:
        return name, "{}"
    if rest.startswith("("):
        try:
            node = ast.parse(f"f{rest}", mode="eval").body
            assert isinstance(node, ast.Call) and not node.args
            args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        except (SyntaxError, ValueError, AssertionError):
            return None
        return name, json.dumps(args, ensure_ascii=False)
    objects = [v for v in _objects(rest) if isinstance(v, dict)]
    return (name, json.dumps(objects[0], ensure_ascii=False)) if objects else None


def parse_calls(text: str, offered: set[str], known: set[str] | None = None) -> Parsed:
    """The calls in held text (tagged, fenced, bare JSON, or written as code: of a tool in
    `known`, the offered ones by default)."""
    named = _named_call(text, offered if known is None else known)
    if named is not None and named[0] not in offered:
        return Parsed(unknown=[named[0]])
    if named is not None:
        return Parsed(calls=[ToolCall(id=new_call_id(), name=named[0], arguments=named[1])])
    blocks = _TAGGED.findall(text) or _FENCED.findall(text) or [text]
    parsed = Parsed()
    for block in blocks:
        for value in _objects(block):
            for item in _items(value):
                call = _as_call(item)
                if call is None:
                    continue
                name, args = call
                if name in offered:
                    parsed.calls.append(ToolCall(id=new_call_id(), name=name, arguments=args))
                else:
                    parsed.unknown.append(name)
    if not parsed.calls and not parsed.unknown:
        # No call: the words are said, without call markup (a bare "<tools></tools>" is none)
        parsed.text = _MARKUP.sub("", text)
        parsed.failed = not parsed.text.strip()
    return parsed


class ToolCallSplitter:
    """Feed a reply's pieces; `feed` returns the text to pass on now, `finish` the rest.
    `called`: tools the conversation called before but not offered now; a call to one is held
    too, and read as a tool not offered (a model that answers a result by calling again)."""

    def __init__(self, offered: set[str], called: set[str] | frozenset[str] = frozenset()) -> None:
        self.offered = offered
        self.names = offered | called  # a reply opening with one of them may be a call
        self._lead = ""  # the reply's start, until it shows whether it opens with a call
        self._tail = ""  # passed text's end that may be the start of a marker
        self._held: str | None = None  # everything from a call's first sign on
        self._started = False

    def feed(self, piece: str) -> str:
        if self._held is not None:
            self._held += piece
            return ""
        if not self._started:
            self._lead += piece
            start = self._lead.lstrip()
            if not start:
                return ""
            if start.startswith(_OPENERS) or self._names_a_tool(start):
                self._held, self._lead = self._lead, ""
                return ""
            if any(m.startswith(start) for m in MARKERS + tuple(self.names)):
                return ""  # "<tool", "`" or the start of a tool's name: wait for more
            self._started = True
            piece, self._lead = self._lead, ""
        text = self._tail + piece
        for marker in MARKERS:
            at = text.find(marker)
            if at >= 0:
                self._held, self._tail = text[at:], ""
                return text[:at]
        keep = _marker_prefix_len(text)
        self._tail = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def _names_a_tool(self, start: str) -> bool:
        """The reply opens with a tool's name as a word (a call written as code)."""
        for name in self.names:
            if start.startswith(name):
                after = start[len(name) : len(name) + 1]
                if after and not _IDENT.match(after):
                    return True
        return False

    def finish(self) -> Parsed:
        """The held text read as calls (or, holding none, as text to say)."""
        if self._held is None and self._lead.strip() in self.names:
            self._held, self._lead = self._lead, ""  # the reply was a tool's bare name
        if self._held is None:
            return Parsed(text=self._lead + self._tail)
        parsed = parse_calls(self._held, self.offered, self.names)
        if parsed.text:
            parsed.text = self._tail + parsed.text
        return parsed


def _marker_prefix_len(text: str) -> int:
    """The length of the longest end of `text` that begins a marker."""
    best = 0
    for marker in MARKERS:
        for n in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:n]):
                best = max(best, n)
                break
    return best
