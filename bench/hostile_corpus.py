"""The malformed-input corpus of bench/hostile_clients.py: bodies, headers and query strings.

Every case is invalid for its API (a range, a type, a role or block the API does not take, a
body that is not JSON, nested past any sane depth, a policy parameter out of range) except
the few marked as lenient controls (valid JSON under an odd header), which count only when
they get a 5xx or no answer. Vendor fields the gateway passes through are left out.
"""

from __future__ import annotations

import gzip
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx2
from hostile_harness import CHAT, COUNT, MESSAGES, MINI, chat, message


@dataclass
class Case:
    label: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    invalid: bool = True
    """False for the lenient controls (valid JSON under an odd header): they count only
    when they get a 5xx or no answer."""


COUNT_IGNORES = frozenset(
    {"max_tokens", "temperature", "top_p", "top_k", "stream", "stop_sequences", "metadata"}
)
"""Fields count_tokens does not take: mutating them tells nothing there."""


def _nested(depth: int, kind: str) -> str:
    return ("[" * depth + "]" * depth) if kind == "array" else ('{"a":' * depth + "1" + "}" * depth)


def _mutations(api: str) -> list[tuple[str, dict[str, Any] | None]]:
    """(label, fields to set; a value of ``...`` deletes the field)."""
    common: list[tuple[str, dict[str, Any] | None]] = []
    for value in (-1, 0, -(10**9), 10**30, 2**63, "16", 1.5, True, None, [], {}):
        if value is None and api == "openai":
            continue  # null is OpenAI's "no limit"
        common.append((f"max_tokens={value!r}", {"max_tokens": value}))
    for value in (-1, 2.5 if api == "openai" else 1.5, "hot", [], {}):
        common.append((f"temperature={value!r}", {"temperature": value}))
    for value in (-0.5, 1.5, "x"):
        common.append((f"top_p={value!r}", {"top_p": value}))
    for value in ("yes", 1, [], {}):
        common.append((f"stream={value!r}", {"stream": value}))
    for value in (5, [1, 2], {"a": 1}):
        common.append((f"stop={value!r}", {"stop" if api == "openai" else "stop_sequences": value}))
    for value in (None, "hi", {}, [], [1], ["hi"], [None]):
        common.append((f"messages={value!r}", {"messages": value}))
    bad_messages: list[Any] = [
        [{"role": "robot", "content": "x"}],
        [{"content": "x"}],
        [{"role": "user"}],
        [{"role": "user", "content": 5}],
        [{"role": "user", "content": {}}],
        [{"role": "user", "content": [1]}],
        [{"role": "user", "content": [{"type": "nope"}]}],
        [{"role": "user", "content": [{"type": "text"}]}],
        [{"role": "user", "content": [{"type": "text", "text": 5}]}],
        [{"role": 5, "content": "x"}],
    ]
    if api == "openai":
        bad_messages += [
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}],
                }
            ],
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}
                    ],
                }
            ],
            [{"role": "user", "content": [{"type": "image_url"}]}],
            [{"role": "tool", "content": "x"}],
            [{"role": "assistant", "tool_calls": "x"}],
        ]
    else:
        image = {"type": "base64", "media_type": "image/png", "data": "!!!not base64!!!"}
        bad_messages += [
            [{"role": "user", "content": [{"type": "image", "source": image}]}],
            [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {**image, "media_type": "text/html"}}],
                }
            ],
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "url", "url": "file:///etc/passwd"}}
                    ],
                }
            ],
            [{"role": "user", "content": [{"type": "image"}]}],
            [{"role": "system", "content": "x"}],
            [{"role": "user", "content": [{"type": "tool_result"}]}],
        ]
    for i, value in enumerate(bad_messages):
        common.append((f"messages#{i} {json.dumps(value)[:60]}", {"messages": value}))
    models: list[Any] = [
        ...,
        5,
        [],
        None,
        "",
        "x" * 10_000,
        "tierwise/",
        "tierwise/???",
        "../../etc/passwd",
        "fixed:",
        "tierwise/fixed:",
        "tierwise/cascade:",
        "tierwise/route:",
        "tierwise/route:learned",
        "tierwise/route:learned?artifact=../../etc",
        "tierwise/route:learned?artifact=/etc/passwd",
        "tierwise/route:learned?artifact=nonexistent",
        f"tierwise/fixed:{MINI}?budget_usd=nan",
        f"tierwise/fixed:{MINI}?budget_usd=-1",
        f"tierwise/fixed:{MINI}?budget_usd=1e999",
        f"tierwise/fixed:{MINI}?budget_usd=abc",
        f"tierwise/fixed:{MINI}?budget_tokens=-5",
        f"tierwise/fixed:{MINI}?budget_tokens=1e30",
        f"tierwise/fixed:{MINI}?fallback=",
        f"tierwise/fixed:{MINI}?fallback=nope:nope",
        f"tierwise/cascade:{MINI}?max_escalations=-1",
        f"tierwise/cascade:{MINI}?retries=abc",
        f"tierwise/cascade:{MINI}?retry_pass_rate=2",
        f"tierwise/cascade:{MINI}?gate_timeout=-1",
        f"tierwise/cascade:{MINI}?gate_timeout=nan",
        f"tierwise/cascade:{MINI}?on_gate_error=boom",
        f"tierwise/advisor:{MINI}?max_uses=-1",
        f"tierwise/advisor:{MINI}?max_tokens=0",
        "tierwise/advisor?caching=forever",
        "tierwise/route:rules?candidates=",
        "tierwise/route:cheapest?candidates=nope",
        f"tierwise/fixed:{MINI}?x=%00",
        "\u0000",
        "gpt-4.1-mini\r\nx-evil: 1",
        f"tierwise/fixed:{MINI}?budget_usd=inf",
    ]
    for value in models:
        common.append((f"model={str(value)[:60]!r}", {"model": value}))
    common += [
        (f"tools={v!r}", {"tools": v}) for v in ("x", [1], [{"type": "function"}], [{"name": 5}])
    ]
    common += [(f"tool_choice={v!r}", {"tool_choice": v}) for v in (5, "bogus", {"type": "nope"})]
    common += [(f"metadata={v!r}", {"metadata": v}) for v in ("x", [1], 5)]
    if api == "openai":
        for key, values in {
            "stream_options": ["x", [], 1, {"include_usage": "x"}],
            "n": [0, -1, 1000, "2"],
            "response_format": ["x", {"type": "nope"}, {"type": "json_schema"}],
            "seed": ["x", 1.5],
            "logit_bias": ["x", {"a": "b"}],
            "top_logprobs": [-1, 100],
            "presence_penalty": [5, "x"],
            "frequency_penalty": [-5],
            "user": [5],
            "max_completion_tokens": [-1, "x", 10**30],
            "reasoning_effort": ["ultra"],
        }.items():
            common += [(f"{key}={v!r}", {key: v}) for v in values]
    else:
        for key, values in {
            "system": [5, [1], [{"type": "image"}], {}],
            "top_k": [-1, "x"],
            "thinking": ["x", {"type": "enabled", "budget_tokens": -1}, {"type": "enabled"}],
        }.items():
            common += [(f"{key}={v!r}", {key: v}) for v in values]
    return common


def _raw_bodies(model: str) -> list[tuple[str, bytes]]:
    base = json.dumps(chat(model))[:-1]
    raws = [
        ("empty body", b""),
        ("truncated JSON", b"{"),
        ("array", b"[]"),
        ("null", b"null"),
        ("number", b"5"),
        ("string", b'"x"'),
        ("empty object", b"{}"),
        ("invalid UTF-8", b'{"model": "\xff\xfe", "messages": []}'),
        ("UTF-8 BOM", b"\xef\xbb\xbf" + json.dumps(chat(model)).encode()),
        ("NaN literal", (base + ', "temperature": NaN}').encode()),
        ("Infinity literal", (base + ', "temperature": Infinity}').encode()),
        ("1e400", (base + ', "temperature": 1e400}').encode()),
        ("lone surrogate", (base + ', "user": "\\ud800"}').encode()),
        ("duplicate model key", (base + ', "model": {"x": 1}}').encode()),
        ("form-encoded", b"model=gpt-4.1-mini&messages=hi"),
    ]
    for depth in (100, 1000, 5000, 100_000):
        for kind in ("array", "object"):
            raws.append(
                (
                    f"content nested {depth} ({kind})",
                    (base + f', "metadata": {_nested(depth, kind)}}}').encode(),
                )
            )
    return raws


def corpus(quick: bool) -> list[Case]:
    cases: list[Case] = []
    counted = message("claude-haiku-4-5")
    del counted["max_tokens"]
    for path, base in (
        (CHAT, chat("gpt-4.1-mini")),
        (MESSAGES, message("claude-haiku-4-5")),
        (COUNT, counted),
    ):
        api = "openai" if path == CHAT else "anthropic"
        for label, change in _mutations(api):
            if path == COUNT and set(change or {}) & COUNT_IGNORES:
                continue
            body = dict(base)
            for key, value in (change or {}).items():
                if value is ...:
                    body.pop(key, None)
                else:
                    body[key] = value
            cases.append(Case(f"{path} {label}", path, json.dumps(body).encode()))
        model = base["model"]
        for label, raw in _raw_bodies(model):
            cases.append(Case(f"{path} {label}", path, raw, invalid=label != "UTF-8 BOM"))
        good = json.dumps(base).encode()
        for label, headers in (
            ("content-type text/plain", {"content-type": "text/plain"}),
            ("content-type form", {"content-type": "application/x-www-form-urlencoded"}),
            ("content-encoding gzip (not gzip)", {"content-encoding": "gzip"}),
            ("content-encoding br", {"content-encoding": "br"}),
            ("anthropic-version garbage", {"anthropic-version": "not-a-version"}),
            ("anthropic-beta garbage", {"anthropic-beta": ",,,;;;"}),
        ):
            cases.append(Case(f"{path} {label}", path, good, headers, invalid=False))
        idem = {"idempotency-key": "hostile-" + uuid.uuid4().hex}
        cases += [
            Case(
                f"{path} Idempotency-Key + plain text",
                path,
                b"hello there",
                {**idem, "content-type": "text/plain"},
            ),
            Case(
                f"{path} Idempotency-Key + truncated JSON",
                path,
                b"{",
                {"idempotency-key": uuid.uuid4().hex},
            ),
            Case(
                f"{path} Idempotency-Key + nested 100000",
                path,
                _nested(100_000, "array").encode(),
                {"idempotency-key": uuid.uuid4().hex},
            ),
            Case(
                f"{path} Idempotency-Key + stream_options x",
                path,
                json.dumps({**base, "stream": True, "stream_options": "x"}).encode(),
                {"idempotency-key": uuid.uuid4().hex},
            ),
            Case(
                f"{path} gzip body of nested JSON",
                path,
                gzip.compress(_nested(100_000, "array").encode()),
                {"content-encoding": "gzip"},
            ),
        ]
        for query in (
            "?budget_usd=nan",
            "?a=%ZZ",
            "?" + "a=1&" * 2000,
            "?model=tierwise/route:learned?artifact=../x",
        ):
            cases.append(
                Case(
                    f"{path}{query[:30]}",
                    path + query,
                    json.dumps({**base, "max_tokens": -1}).encode(),
                )
            )
    if quick:
        cases = cases[::4]
    return cases


def in_envelope(path: str, reply: httpx2.Response) -> bool:
    try:
        body = reply.json()
    except ValueError:
        return False
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return False
    return body.get("type") == "error" if path.startswith(MESSAGES) else True
