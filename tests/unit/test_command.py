"""command, data-driven: the `creates` / `unless` guards (answered by probes in the facts round trip)."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.modules.base import NoOp
from provisioner.modules.command import CommandModule, _key
from tests.builders import changes, facts, plan

MODULE = CommandModule()
CREATES = {"cmd": "touch /var/tmp/x", "creates": "/var/tmp/x"}
UNLESS = {"cmd": "apt-get install -y jq", "unless": "command -v jq"}


@pytest.mark.parametrize(
    ("args", "probes", "expect"),
    [
        ({"cmd": "logger hi"}, {}, "run logger hi"),
        (CREATES, {_key("creates", "/var/tmp/x"): 1}, "run touch /var/tmp/x"),
        (CREATES, {_key("creates", "/var/tmp/x"): 0}, "noop:/var/tmp/x exists"),
        (UNLESS, {_key("unless", "command -v jq"): 1}, "run apt-get install -y jq"),
        (UNLESS, {_key("unless", "command -v jq"): 0}, "noop:`command -v jq` succeeded"),
        # a guard whose probe did not come back (255): the command runs
        (CREATES, {_key("creates", "/var/tmp/x"): 255}, "run touch /var/tmp/x"),
    ],
)
def test_command_plan(args: dict[str, Any], probes: dict[str, int], expect: str) -> None:
    p = plan(MODULE, facts("lab2", probes=probes), args=args)
    if expect.startswith("noop:"):
        assert isinstance(p, NoOp) and p.reason == expect[5:]
        return
    (c,) = changes(p)
    assert c.description == expect and c.commands == [args["cmd"]]


def test_guards_are_probes_of_the_facts_round_trip() -> None:
    assert MODULE.probes(MODULE.Args.model_validate(CREATES)) == {_key("creates", "/var/tmp/x"): "test -e /var/tmp/x"}
    assert MODULE.probes(MODULE.Args.model_validate(UNLESS)) == {_key("unless", "command -v jq"): "command -v jq"}
