"""A trace of what a run sent to its hosts, for debugging and for the plan-equals-apply tests.

Set ``PROVISIONER_TRACE=FILE`` and every command sent to a host (and every file put) is appended to
FILE as one JSON line: ``{"host", "kind": "cmd"|"put", "text", "step"}``, where ``step`` is the printed
step that sent it (None outside a change: facts, lock, checks). The executor also writes one
``"kind": "step"`` line as each step starts. Secrets are masked as in every other output.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_SECRETS: set[str] = set()
_CURRENT = threading.local()


def enabled() -> bool:
    return bool(os.environ.get("PROVISIONER_TRACE"))


def add_secrets(*values: str) -> None:
    with _LOCK:
        _SECRETS.update(v for v in values if v)


def _mask(text: str) -> str:
    for s in _SECRETS:
        text = text.replace(s, "***")
    return text


def _write(host: str, kind: str, text: str, step: str | None) -> None:
    path = os.environ.get("PROVISIONER_TRACE")
    if not path:
        return
    with _LOCK:
        line = {"t": round(time.time(), 3), "host": host, "kind": kind, "text": _mask(text), "step": step}
        if step is not None:
            line["step"] = _mask(step)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def sent(host: str, kind: str, text: str) -> None:
    """A command (or put) went to ``host``."""
    if enabled():
        _write(host, kind, text, getattr(_CURRENT, "step", None))


@contextmanager
def step(host: str, rendered: str) -> Iterator[None]:
    """Commands sent by this thread inside the block belong to the printed step ``rendered``."""
    if not enabled():
        yield
        return
    _write(host, "step", rendered, rendered)
    previous = getattr(_CURRENT, "step", None)
    _CURRENT.step = rendered
    try:
        yield
    finally:
        _CURRENT.step = previous
