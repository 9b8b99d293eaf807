"""Every table the CLI prints stays readable at 80 columns and in CI logs: it switches layout, never cuts."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from provisioner.engine.results import HostReport, RunReport, TaskResult
from provisioner.facts import DockerFacts, HostFacts, NetworkFact, OSFacts
from provisioner.matrix_text import causes, fit, parse
from provisioner.report import LiveEvents, facts_table, recap


def _console(width: int, soft_wrap: bool = True) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    # what `provisioner` gets in a CI log: not a terminal, soft wrap on, COLUMNS=80
    return Console(file=buf, width=width, soft_wrap=soft_wrap, force_terminal=False, color_system=None), buf


def _facts(host: str, n: int) -> HostFacts:
    return HostFacts(
        host=host,
        os=OSFacts(id="debian", pretty_name="Debian GNU/Linux 11 (bullseye)"),
        docker=DockerFacts(
            installed=True,
            active=True,
            state="active",
            server_version="20.10.5+dfsg1",
            package="docker.io",
            package_version="20.10.5+dfsg1-1+deb11u2",
            cluster_store="consul://198.18.50.10:8500",
            cluster_advertise=f"198.18.50.{n}:2376",
            networks=[NetworkFact(name=x, driver="bridge") for x in ("bridge", "docker_gwbridge", "ov_net1")],
        ),
    )


WHOLE = [
    "Debian GNU/Linux 11 (bullseye)",
    "20.10.5+dfsg1",
    "docker.io 20.10.5+dfsg1-1+deb11u2",
    "consul://198.18.50.10:8500",
    "198.18.50.12:2376",
    "bridge, docker_gwbridge, ov_net1",
]


@pytest.mark.parametrize("soft_wrap", [True, False])
def test_facts_at_80_columns_cut_nothing(soft_wrap: bool) -> None:
    con, buf = _console(80, soft_wrap)
    gathered: dict[str, HostFacts | str] = {
        "lab1": _facts("lab1", 11),
        "lab2": _facts("lab2", 12),
        "lab3": "lab3: connection refused by 198.18.50.13:22\n    fix: is sshd running on it?",
    }
    facts_table(con, gathered)
    out = buf.getvalue()
    assert "…" not in out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    for value in WHOLE:
        assert value in out, f"{value!r} cut or missing:\n{out}"
    assert "lab3: connection refused by 198.18.50.13:22" in out and "is sshd running on it?" in out
    # one block per host: the host's name heads it, the engine version is on its own line
    assert [ln for ln in out.splitlines() if ln.startswith("lab")][:3] == ["lab1", "lab2", "lab3"]


def test_facts_on_a_wide_terminal_is_a_table() -> None:
    con, buf = _console(250)
    facts_table(con, {"lab1": _facts("lab1", 11)})
    out = buf.getvalue()
    header = next(ln for ln in out.splitlines() if "cluster store" in ln)
    assert "docker" in header and "networks" in header  # the columns side by side
    assert "…" not in out and "consul://198.18.50.10:8500" in out


def _report(names: list[str]) -> RunReport:
    report = RunReport(mode="plan")
    for name in names:
        h = report.host(name)
        h.results.append(TaskResult("p", "t", "file", name, "changed"))
        h.results.append(TaskResult("p", "u", "file", name, "ok"))
    report.hosts["gone"] = HostReport("gone", unreachable=True, unreachable_reason="gone: no route to host")
    return report


def test_recap_fits_80_columns_as_a_table() -> None:
    con, buf = _console(80)
    recap(con, _report(["lab1", "lab2", "lab3"]))
    out = buf.getvalue()
    assert "would change" in out and "unreachable" in out and "…" not in out
    assert any("lab1" in ln and "1" in ln for ln in out.splitlines())
    assert all(len(line) <= 80 for line in out.splitlines())


def test_recap_with_long_host_names_switches_to_blocks() -> None:
    long = ["build-agent-eu-west-1-0001.ci.example.com", "build-agent-eu-west-1-0002.ci.example.com"]
    con, buf = _console(80)
    recap(con, _report(long))
    out = buf.getvalue()
    assert "…" not in out and all(n in out for n in long)
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "  would change" in out  # a labelled line per value, under the host's name


def _matrix(hosts: list[str], fail: set[tuple[str, str]]) -> str:
    w = max(6, *(len(h) for h in hosts)) + 2
    lines = ["ov_net1: ping from (row) to (column)", " " * w + "".join(h.ljust(w) for h in hosts)]
    for s in hosts:
        cells = ["-" if s == d else ("FAIL" if (s, d) in fail else "ok") for d in hosts]
        lines.append(s.ljust(w) + "".join(c.ljust(w) for c in cells))
    return "\n".join(ln.rstrip() for ln in lines)


HOSTS20 = [f"lab{i}" for i in range(1, 21)]


def test_wide_matrix_becomes_one_line_per_host() -> None:
    text = "overlay check failed:\n    lab2 -> lab7 (198.18.51.250) over ov_net1: no reply\n" + _matrix(
        HOSTS20, {("lab2", "lab7")}
    )
    out = fit(text, 74)
    assert all(len(ln) <= 74 for ln in out.splitlines()), out
    assert "  lab1 -> all 19 others ok" in out
    assert "  lab2 -> FAIL: lab7; ok: 18 of 19" in out
    assert out.startswith("overlay check failed:\n    lab2 -> lab7")  # the rest of the message is kept
    assert fit(_matrix(HOSTS20[:3], set()), 74) == _matrix(HOSTS20[:3], set())  # fits: unchanged


def test_matrix_parse_and_causes() -> None:
    text = "x\n" + _matrix(["a", "b"], {("a", "b")}) + "\n    a -> b (10.0.0.3) over ov_net1: no reply\n"
    [g] = parse(text)
    assert g.network == "ov_net1" and g.hosts == ["a", "b"] and g.cells[("a", "b")] == "FAIL"
    assert (g.first_line, g.last_line) == (1, 4)
    assert causes(text) == {("ov_net1", "a", "b"): "a -> b (10.0.0.3): no reply"}


def test_live_matrix_output_fits_80_columns() -> None:
    con, buf = _console(80)
    events = LiveEvents(con, show_diff=False, verbose=True)
    message = "all 20 hosts reach each other over ov_net1\n" + _matrix(HOSTS20, set())
    events.host_result(TaskResult("verify", "ping matrix", "overlay_verify", "lab1", "ok", message, report=True), False)
    out = buf.getvalue()
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "lab20 -> all 19 others ok" in out


def test_matrices_of_every_kind_are_read_back() -> None:
    """Isolation matrices (isolated / BROKEN cells) and other kinds' headers are matrices too."""
    text = (
        "net1@lab2: ping from (row) to (column)\n"
        "        a         b         c\n"
        "a       -         ok        isolated\n"
        "b       ok        -         BROKEN\n"
        "c       isolated  n/a       -\n"
    )
    [g] = parse(text)
    assert g.network == "net1@lab2" and g.cells[("b", "c")] == "BROKEN"
    out = fit(text, 30)
    assert out.splitlines() == [
        "net1@lab2: ping from each host",
        "to the others",
        "  a -> ok: 1 of 2; isolated: 1",
        "    of 2",
        "  b -> BROKEN: c; ok: 1 of 2",
        "  c -> n/a: b; isolated: 1 of",
        "    2",
    ]
    assert all(len(line) <= 30 for line in out.splitlines())
