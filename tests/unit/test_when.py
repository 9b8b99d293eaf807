"""``when`` conditions: parse errors are precise, evaluation follows the documented rules."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.when import parse

FACTS: dict[str, Any] = {
    "docker": {
        "active": True,
        "server_version": "20.10.24+dfsg1",
        "networks": ["bridge", "ov_net1"],
        "cluster_store": None,
        "containers": 3,
    },
    "os": {"id": "debian", "version_id": "12"},
    "swarm": {"state": "inactive"},
    "empty": "",
}

TRUE_FALSE = [
    ("docker.active", True),
    ("not docker.active", False),
    ("docker.cluster_store", False),
    ("not docker.cluster_store", True),
    ("missing.path", False),
    ("not missing.path", True),
    ("missing.path == null", True),
    ("docker.cluster_store == null", True),
    ("docker.active == true", True),
    ("docker.active != true", False),
    ('os.id == "debian"', True),
    ("os.id == 'ubuntu'", False),
    ('os.id != "ubuntu"', True),
    ('docker.server_version >= "20.10"', True),
    ('docker.server_version >= "20.10.25"', False),
    ('docker.server_version < "21"', True),
    ('docker.server_version > "9.3"', True),  # as versions, not as text ("9" > "2" as text)
    ('docker.server_version == "20.10.24"', True),
    ('os.version_id >= "9"', True),
    ("docker.containers > 2", True),
    ("docker.containers <= 2", False),
    ("docker.containers == 3.0", True),
    ('os.id in ["debian", "ubuntu"]', True),
    ('os.id not in ["debian", "ubuntu"]', False),
    ('"ov_net1" in docker.networks', True),
    ('"ov_net2" not in docker.networks', True),
    ('os.id in "debian-like"', True),
    ("missing.path in [1, 2]", False),
    ('"x" in missing.path', False),
    ("missing.path > 3", False),  # None cannot be ordered: false, not an exception
    ('docker.containers > "abc"', False),
    ("docker.active and os.id == 'debian'", True),
    ("docker.active and not docker.active", False),
    ("missing.path or docker.active", True),
    ("not (docker.active or missing.path)", False),
    ("empty", False),
    ("docker.containers == -3", False),
    ('swarm.state == "inactive" and docker.server_version < "23.0"', True),
]


@pytest.mark.parametrize(("expr", "expected"), TRUE_FALSE, ids=[e for e, _ in TRUE_FALSE])
def test_evaluate(expr: str, expected: bool) -> None:
    assert parse(expr).evaluate(FACTS) is expected


def test_attribute_facts_and_sequences() -> None:
    class Docker:
        active = True
        networks = ("a", "b")

    facts = {"docker": Docker(), "list": [{"x": 1}]}
    assert parse("docker.active").evaluate(facts)
    assert parse('"b" in docker.networks').evaluate(facts)
    assert parse("list.0.x == 1").evaluate(facts)
    assert not parse("list.5.x").evaluate(facts)


ERRORS = [
    ("", "empty condition"),
    ("   ", "empty condition"),
    ("docker.active = true", "'=' is not an operator at column 15; use '=='"),
    ("docker.server_version >= 20.10.1", "at column 26; write versions and other dotted values in quotes"),
    ('os.id == "debian', "unterminated string at column 10"),
    ("os.id ==", "condition ends too early at column 9"),
    ("docker.active docker.x", "unexpected 'docker.x' after a complete condition at column 15"),
    ("1 == 2", "both sides are constants at column 1"),
    ("true", "is a constant, not a fact"),
    ("x in 3", "'in' needs a list or a string on its right at column 6"),
    ("x in [a, b]", "lists may hold only constants at column 7"),
    ("x in [1 2]", "expected ',' or ']' in the list opened at column 6"),
    ("(x or y", "expected ')' but found 'end of condition'"),
    ("x == and", "expected a fact or a value but found 'and' at column 6"),
    ("x $ 3", "unexpected character '$' at column 3"),
    ("__import__('os')", "unexpected '(' after a complete condition"),
]


@pytest.mark.parametrize(("expr", "message"), ERRORS, ids=[e or "blank" for e, _ in ERRORS])
def test_parse_errors(expr: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(expr)
    text = str(info.value)
    for part in message.split("; "):
        if " at column " in part:
            what, _, col = part.partition(" at column ")
            assert what in text and f"at column {col}" in text, text
        else:
            assert part in text, text


def test_condition_keeps_its_source() -> None:
    c = parse("docker.active")
    assert str(c) == "docker.active"
    assert "docker.active" in repr(c)
