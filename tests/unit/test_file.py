"""file, data-driven: (what the host has, the task's arguments) -> the change plan shows, or why none."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from provisioner.facts import FileFact
from provisioner.modules.base import NoOp
from provisioner.modules.file import FileModule
from provisioner.steps import Put, Run
from tests.builders import changes, facts, plan

PATH = "/etc/motd"


def on_host(content: str | None, mode: str = "644", owner: str = "root:root") -> dict[str, FileFact]:
    if content is None:
        return {}
    digest = hashlib.sha256(content.encode()).hexdigest()
    return {PATH: FileFact(exists=True, content=content, sha256=digest, mode=mode, owner=owner)}


CASES: list[tuple[str, dict[str, FileFact], dict[str, Any], str, list[str]]] = [
    ("absent, created", on_host(None), {"content": "hi\n"}, "create /etc/motd",
     ["put /etc/motd (mode 0644, owner root:root, atomic)"]),
    ("mode given for a new file", on_host(None), {"content": "hi\n", "mode": "0600"}, "create /etc/motd",
     ["put /etc/motd (mode 0600, owner root:root, atomic)"]),
    ("different content keeps the host's mode and owner", on_host("old\n", "640", "root:adm"), {"content": "hi\n"},
     "update /etc/motd", ["put /etc/motd (mode 0640, owner root:adm, atomic)"]),
    ("same content", on_host("hi\n"), {"content": "hi\n"}, "noop:/etc/motd is up to date", []),
    ("same content, other mode", on_host("hi\n", "600"), {"content": "hi\n", "mode": "0644"},
     "set mode/owner of /etc/motd", ["chmod 644 /etc/motd"]),
    ("same content, other owner", on_host("hi\n"), {"content": "hi\n", "owner": "www-data"},
     "set mode/owner of /etc/motd", ["chown www-data /etc/motd"]),
    ("absent wanted, present", on_host("hi\n"), {"state": "absent"}, "remove /etc/motd", ["rm -f /etc/motd"]),
    ("absent wanted, absent", on_host(None), {"state": "absent"}, "noop:/etc/motd is absent", []),
]  # fmt: skip


@pytest.mark.parametrize(("case", "files", "args", "expect", "steps"), CASES, ids=[c[0] for c in CASES])
def test_file_plan(case: str, files: dict[str, FileFact], args: dict[str, Any], expect: str, steps: list[str]) -> None:
    f = facts("lab2")
    f.files.update(files)
    p = plan(FileModule(), f, args={"path": PATH, **args})
    if expect.startswith("noop:"):
        assert isinstance(p, NoOp) and p.reason == expect[5:]
        return
    (c,) = changes(p)
    assert c.description == expect
    assert c.commands == steps
    assert all(isinstance(s, (Put, Run)) for s in c.steps)
    assert c.retry_safe  # an atomic write, chmod, chown or rm -f can be repeated after a dropped connection


def test_the_diff_shows_the_host_content_against_the_wanted_one() -> None:
    f = facts("lab2")
    f.files.update(on_host("old\n"))
    (c,) = changes(plan(FileModule(), f, args={"path": PATH, "content": "new\n"}))
    assert (c.path, c.before, c.after) == (PATH, "old\n", "new\n")
