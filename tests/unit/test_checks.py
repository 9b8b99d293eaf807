"""The check engine (provisioner.checks): expectations, verdicts, matrices, the probe lifecycle.

Hosts are scripted FakeConnections (passed in through the ApplyContext); the start and test scripts
themselves run in a real ``sh`` against a stub ``docker`` on PATH, so the shell logic (retried start
under a fresh name, the per-test fallback for an image without ``sh``) is tested, not just its text.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from provisioner.checks import (
    BRIEF_ATTEMPTS,
    PING,
    Expectation,
    Net,
    Outcome,
    Port,
    Probe,
    Results,
    Trial,
    Via,
    cleanup_command,
    probe_script,
    run_checks,
    start_script,
)
from provisioner.connection.base import RunResult
from provisioner.connection.fake import FakeConnection
from provisioner.errors import ConnectError, TaskError
from provisioner.facts import HostFacts
from provisioner.inventory import Inventory, VerifySettings
from provisioner.modules.base import ApplyContext

SETTINGS = VerifySettings(image="provisioner-lab/probe:latest", retries=0, ping_count=1, timeout=1)


# ---- verdicts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "observed", "verdict", "cell", "failed"),
    [
        ("reach", "reached", "ok", "ok", False),
        ("reach", "no reply", "no reply", "FAIL", True),
        ("isolated", "no reply", "ok", "isolated", False),
        ("isolated", "reached", "isolation broken", "BROKEN", True),
        ("unknown", "reached", "unknown", "ok?", False),
        ("unknown", "no reply", "unknown", "none?", False),
        ("unknown", "not run", "unknown", "n/a", False),
        ("reach", "not run", "not run", "n/a", True),
        ("isolated", "not run", "not run", "n/a", True),
    ],
)
def test_verdict_per_expectation_and_observation(
    expected: Any, observed: Any, verdict: str, cell: str, failed: bool
) -> None:
    o = Outcome(Expectation("a", "b", Net("n1"), expected=expected, why="rule"), "198.19.1.2", observed)
    assert (o.verdict, o.cell(), o.failed) == (verdict, cell, failed)
    assert o.to_json()["verdict"] == verdict
    assert (o.to_json()["cause"] is not None) == failed


def test_networks_are_keyed_by_host_when_local() -> None:
    assert Net("net1", "lab2") != Net("net1", "lab3") and Net("ov_net1") == Net("ov_net1")
    assert (str(Net("net1", "lab2")), str(Net("ov_net1")), str(Port(32773))) == ("net1@lab2", "ov_net1", "32773/tcp")
    with pytest.raises(ValueError, match="exactly one of net and mode"):
        Probe("a", "lab2", "p", net=Net("n"), mode="container:a")
    with pytest.raises(ValueError, match="fixed ip needs a net"):
        Probe("a", "lab2", "p", mode="container:a", ip="198.19.1.9")


# ---- a scripted cluster ------------------------------------------------------------------------------

ADDR = {("lab2", "net1"): "198.19.9.2", ("lab3", "net1"): "198.19.9.2", ("lab2", "ov"): "198.19.1.2",
        ("lab3", "ov"): "198.19.1.3", ("lab4", "ov"): "198.19.1.4"}  # fmt: skip


class Host:
    """A docker host answering the start and test scripts: its probes get ADDR, a test passes when
    its target is in ``reaches``; ``start_fails`` / ``test_fails`` make that round trip fail."""

    def __init__(
        self, name: str, reaches: set[str], *, start_error: str = "", start_raises: bool = False,
        test_raises: BaseException | None = None,
    ) -> None:  # fmt: skip
        self.name, self.reaches = name, reaches
        self.start_error, self.start_raises, self.test_raises = start_error, start_raises, test_raises
        self.conn = FakeConnection(name).on(r"^sh -s$", respond=self.script).on(r"^docker rm -f ", rc=0)
        self.scripts: list[str] = []

    def script(self, _cmd: str, stdin: bytes | None) -> RunResult:
        text = (stdin or b"").decode()
        self.scripts.append(text)
        if "docker run -d" in text:
            if self.start_raises:
                raise ConnectError(self.name, "connection lost")
            out = []
            for m in re.finditer(r"^(?:\( )?n=(\S+); (?:.*?-f (\S+) \"\$n\")?.*?@@V@@ (p\d+) ok", text, re.M):
                name, net, tag = m.groups()
                if self.start_error:
                    out.append(f"@@V@@ {tag} err {self.start_error}")
                else:
                    out.append(f"@@V@@ {tag} ok {ADDR.get((self.name, net or ''), '-')} {name}")
            return RunResult(0, "\n".join(out) + "\n", "")
        if self.test_raises is not None:
            raise self.test_raises
        out = [
            f"@@V@@ {tag} {'ok' if target in self.reaches else 'FAIL'}"
            for target, tag in re.findall(r"^x_ping \S+ (\S+) (t\d+)(?: brief)? &$", text, re.M)
        ]
        return RunResult(0, "\n".join(out) + "\n", "")

    @property
    def cleaned(self) -> bool:
        return any(c.startswith("docker rm -f ") for c in self.conn.calls)


def ctx_for(hosts: dict[str, Host], fan_out: Callable[..., list[Any]] | None = None) -> ApplyContext:
    first = next(iter(hosts))
    inv = Inventory.model_validate({"hosts": {h: {"address": f"198.18.0.{i + 2}"} for i, h in enumerate(hosts)}})
    kw: dict[str, Any] = {"fan_out": fan_out} if fan_out else {}
    return ApplyContext(
        first, hosts[first].conn, HostFacts(host=first), inv, connection_to=lambda h: hosts[h].conn, **kw
    )


def bridge_probes(hosts: Sequence[str]) -> list[Probe]:
    return [Probe(h, h, f"prov-probe-net1-{h}", net=Net("net1", h)) for h in hosts]


def test_overlay_pairs_reach_and_a_clean_run_costs_three_round_trips_per_host() -> None:
    hosts = {h: Host(h, {"198.19.1.2", "198.19.1.3", "198.19.1.4"}) for h in ("lab2", "lab3", "lab4")}
    probes = [Probe(h, h, f"prov-probe-ov-{h}", net=Net("ov")) for h in hosts]
    exps = [Expectation(s, d, Net("ov")) for s in hosts for d in hosts if s != d]
    res = run_checks(ctx_for(hosts), probes, exps, settings=SETTINGS)
    assert res.ok and res.failures() == [] and {o.verdict for o in res.outcomes} == {"ok"}
    assert res.render().splitlines() == [
        "ov: ping from (row) to (column)",
        "        lab2    lab3    lab4",
        "lab2    -       ok      ok",
        "lab3    ok      -       ok",
        "lab4    ok      ok      -",
    ]
    for h in hosts.values():
        assert h.conn.stats.round_trips == 3 and h.cleaned  # start, test, cleanup
        (tests,) = [s for s in h.scripts if "x_ping" in s]
        assert tests.count("docker exec prov-probe-ov-") == 1  # one exec per probe runs all of its tests


def test_isolation_broken_unknown_and_local_networks_keyed_by_host() -> None:
    # lab2's and lab3's bridges "net1" both hand out 198.19.9.2: two networks, keyed (network, host)
    hosts = {"lab2": Host("lab2", {"198.19.1.3", "198.19.8.2"}), "lab3": Host("lab3", {"198.19.9.2"})}
    probes = [
        *bridge_probes(list(hosts)),
        *(Probe(h, h, f"prov-probe-ov-{h}", net=Net("ov")) for h in hosts),
        Probe("box", "lab2", "prov-probe-box", mode="container:box"),
        Probe("web", "lab3", "prov-probe-web", mode="container:web"),
    ]
    exps = [
        Expectation("lab2", "lab3", Net("ov"), why="overlay peers"),
        Expectation("lab3", "lab2", Net("ov"), why="overlay peers"),
        # must not reach, but does (isolation broken); must not, and does not
        Expectation("box", "httpd", Net("bridge", "lab2"), expected="isolated", why="box and httpd share no network"),
        Expectation("box", "lab2", Net("net1", "lab2"), expected="isolated", why="box is not on net1"),
        Expectation("web", "lab3", Net("net1", "lab3"), why="web is on lab3's net1"),
        Expectation("web", "box", Net("net1", "lab2"), expected="unknown", why="macvlan vepa: the switch decides"),
    ]
    addresses: dict[tuple[str, Via], str] = {
        ("httpd", Net("bridge", "lab2")): "198.19.8.2",
        ("box", Net("net1", "lab2")): "198.19.9.9",
    }
    res = run_checks(ctx_for(hosts), probes, exps, settings=SETTINGS, addresses=addresses)
    assert [(o.expectation.source, str(o.expectation.via), o.address, o.verdict) for o in res.outcomes] == [
        ("lab2", "ov", "198.19.1.3", "ok"),
        ("lab3", "ov", "198.19.1.2", "no reply"),
        ("box", "bridge@lab2", "198.19.8.2", "isolation broken"),
        ("box", "net1@lab2", "198.19.9.2", "ok"),
        ("web", "net1@lab3", "198.19.9.2", "ok"),
        ("web", "net1@lab2", "198.19.9.9", "unknown"),
    ]
    assert not res.ok
    assert res.failures() == [
        "lab3 -> lab2 (198.19.1.2) over ov: no reply",
        "box -> httpd (198.19.8.2) over bridge@lab2: isolation broken: it reached, but must not "
        "(box and httpd share no network)",
    ]
    text = res.render()
    assert "bridge@lab2: ping from (row) to (column)" in text and re.search(r"^box\s+-\s+BROKEN$", text, re.M)
    # net1@lab2's grid: rows and columns lab2, box, web (the order they first appear)
    assert re.search(r"^box\s+isolated\s+-\s+-$", text, re.M) and re.search(r"^web\s+-\s+none\?\s+-$", text, re.M)
    # pairs that must not reach (or are undecided) are tried briefly; reaches get the whole deadline
    assert re.findall(r"^x_ping \S+ \S+ (t\d) ?(\S*) &$", hosts["lab2"].scripts[1], re.M) == [
        ("t0", ""),
        ("t2", "brief"),
        ("t3", "brief"),
    ]
    assert "BROKEN: reached, isolation expected" in text and "ov: ping" in text.split("\n\n")[0]
    hints = res.hints("overlay")
    assert any("DOCKER-USER" in h for h in hints) and any("4789" in h for h in hints)
    data = json.loads(json.dumps(res.data()))  # JSON-ready
    assert data["pairs"][2] == {
        "kind": "ping", "source": "box", "destination": "httpd", "network": "bridge", "network_host": "lab2",
        "port": None, "address": "198.19.8.2", "expected": "isolated", "why": "box and httpd share no network",
        "observed": "reached", "verdict": "isolation broken",
        "cause": "box reached 198.19.8.2 over bridge@lab2, but isolation was expected",
    }  # fmt: skip
    assert data["pairs"][5]["verdict"] == "unknown" and data["pairs"][5]["cause"] is None
    assert data["ok"] is False and data["probes_not_started"] == {}


def test_probe_sharing_a_container_namespace_tests_from_it() -> None:
    hosts = {"lab2": Host("lab2", {"198.19.9.7"})}
    probe = Probe("box", "lab2", "prov-probe-box", mode="container:box")
    exp = Expectation("box", "httpd", Net("net1", "lab2"))
    res = run_checks(ctx_for(hosts), [probe], [exp], settings=SETTINGS, addresses={("httpd", exp.via): "198.19.9.7"})
    assert res.ok and res.outcomes[0].observed == "reached"
    (start, tests) = hosts["lab2"].scripts
    assert "s container:box" in start and "network disconnect" not in start.split("\n", 2)[2]
    assert "docker exec prov-probe-box sh -c" in tests and "x_ping prov-probe-box 198.19.9.7 t0 &" in tests


def test_a_probe_that_did_not_start_is_reported_once_and_its_pairs_are_not_run() -> None:
    hosts = {"lab2": Host("lab2", {"198.19.1.3"}), "lab3": Host("lab3", set(), start_error="No such image: probe")}
    probes = [Probe(h, h, f"prov-probe-ov-{h}", net=Net("ov")) for h in hosts]
    exps = [Expectation("lab2", "lab3", Net("ov")), Expectation("lab3", "lab2", Net("ov"))]
    res = run_checks(ctx_for(hosts), probes, exps, settings=SETTINGS)
    assert [o.verdict for o in res.outcomes] == ["not run", "not run"]
    assert res.failures() == ["lab3: probe did not start: No such image: probe"]
    assert res.start_errors == {"prov-probe-ov-lab3": "No such image: probe"}
    assert re.search(r"^lab2\s+-\s+n/a$", res.render(), re.M) and re.search(r"^lab3\s+n/a\s+-$", res.render(), re.M)
    assert all(h.cleaned for h in hosts.values())
    assert hosts["lab2"].conn.stats.round_trips == 2  # nothing to test from lab2: no test round trip


def test_cleanup_runs_when_a_start_round_trip_fails() -> None:
    hosts = {"lab2": Host("lab2", set()), "lab3": Host("lab3", set(), start_raises=True)}
    probes = [Probe(h, h, f"prov-probe-ov-{h}", net=Net("ov")) for h in hosts]
    res = run_checks(ctx_for(hosts), probes, [Expectation("lab2", "lab3", Net("ov"))], settings=SETTINGS)
    assert res.start_errors == {"prov-probe-ov-lab3": "lab3: connection lost"}
    assert all(h.cleaned for h in hosts.values())


def test_a_failed_test_round_trip_is_not_run_with_its_reason_and_probes_are_removed() -> None:
    hosts = {"lab2": Host("lab2", set(), test_raises=TaskError("timed out after 32s")), "lab3": Host("lab3", set())}
    probes = [Probe(h, h, f"prov-probe-ov-{h}", net=Net("ov")) for h in hosts]
    res = run_checks(ctx_for(hosts), probes, [Expectation("lab2", "lab3", Net("ov"))], settings=SETTINGS)
    assert res.failures() == ["lab2 -> lab3 (198.19.1.3) over ov: not run: lab2: timed out after 32s"]
    assert all(h.cleaned for h in hosts.values())


def test_cleanup_runs_when_the_run_is_interrupted() -> None:
    hosts = {"lab2": Host("lab2", set(), test_raises=KeyboardInterrupt()), "lab3": Host("lab3", set())}
    probes = [Probe(h, h, f"prov-probe-ov-{h}", net=Net("ov")) for h in hosts]
    with pytest.raises(KeyboardInterrupt):
        run_checks(ctx_for(hosts), probes, [Expectation("lab2", "lab3", Net("ov"))], settings=SETTINGS)
    assert all(h.cleaned for h in hosts.values())


def test_hosts_are_worked_on_through_the_executors_pool() -> None:
    calls: list[list[str]] = []

    def fan_out(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        calls.append(list(items))
        return [fn(i) for i in items]

    hosts = {h: Host(h, {"198.19.1.2", "198.19.1.3"}) for h in ("lab2", "lab3")}
    probes = [Probe(h, h, f"prov-probe-ov-{h}", net=Net("ov")) for h in hosts]
    exps = [Expectation(s, d, Net("ov")) for s in hosts for d in hosts if s != d]
    assert run_checks(ctx_for(hosts, fan_out), probes, exps, settings=SETTINGS).ok
    assert calls == [["lab2", "lab3"]] * 3  # start, test, cleanup: nothing runs outside the pool


def test_expectation_without_a_probe_or_an_address_is_not_run_with_the_reason() -> None:
    hosts = {"lab2": Host("lab2", set())}
    probes = [Probe("lab2", "lab2", "prov-probe-ov-lab2", net=Net("ov")), Probe("c", "lab2", "pc", mode="host")]
    exps = [Expectation("lab9", "lab2", Net("ov")), Expectation("c", "httpd", Port(32773))]
    res = run_checks(ctx_for(hosts), probes, exps, settings=SETTINGS)
    assert [o.cause for o in res.outcomes] == ["no probe runs as lab9 on ov", "no address of httpd on 32773/tcp"]
    with pytest.raises(TaskError, match="unknown check kind tcp"):
        run_checks(ctx_for(hosts), probes, [Expectation("lab2", "x", Port(80), kind="tcp")], settings=SETTINGS)


def test_results_of_nothing_are_ok_and_empty() -> None:
    assert Results([], []).ok and Results([], []).render() == "" and Results([], []).hints() == []


# ---- the scripts, run in a real sh against a stub docker ---------------------------------------------

STUB_DOCKER = r"""#!/bin/sh
echo "docker $*" >>"$LOG"
case "$1" in
ps) exit 0 ;;
rm|network) exit 0 ;;
inspect) echo 198.19.1.250 ;;
run)
  [ -n "$NO_IMAGE" ] && { echo "Unable to find image 'probe:1' locally" >&2; exit 125; }
  # a start fails while the probe's own name is taken (a stale endpoint in the store)
  case "$*" in *"--name $TAKEN "*) echo "endpoint with name $TAKEN already exists in network ov" >&2; exit 125 ;; esac
  case "$*" in *"--ip "*) [ -n "$IP_TAKEN" ] && { echo "Address already in use" >&2; exit 125; } ;; esac
  echo 0123abcd ;;
exec)
  probe=$2; shift 2
  if [ "$1" = sh ]; then
    [ "$probe" = "$NO_SH" ] && { echo 'exec: "sh": executable file not found in $PATH' >&2; exit 126; }
    exec sh -c "$3"
  fi
  exec "$@" ;;
esac
"""
STUB_PING = """#!/bin/sh
echo "ping $*" >>"$LOG"
for target; do :; done
grep -qx "$target" "$REACH"
"""


@pytest.fixture
def stub(tmp_path: Path) -> Callable[..., tuple[str, list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("docker", STUB_DOCKER), ("ping", STUB_PING)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "reach").write_text("198.19.1.3\n")

    def run(script: str, **env: str) -> tuple[str, list[str]]:
        log = tmp_path / "log"
        log.write_text("")
        full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "REACH": str(tmp_path / "reach"), **env}
        res = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, env=full, timeout=30)
        return res.stdout, log.read_text().splitlines()

    return run


def test_start_script_retries_under_a_fresh_name_with_label_and_fixed_address(stub: Any) -> None:
    p = Probe("lab2", "lab2", "prov-probe-ov-lab2", net=Net("ov"), ip="198.19.1.254")
    out, log = stub(start_script("lab2", [p], "probe:1", 60), TAKEN="prov-probe-ov-lab2")
    assert re.fullmatch(r"@@V@@ p0 ok 198\.19\.1\.250 prov-probe-ov-lab2-\d+\n", out)
    assert log[0] == "docker ps -aq --filter label=provisioner.probe"  # leftovers of earlier runs first
    assert "docker network disconnect -f ov prov-probe-ov-lab2" in log  # a stale endpoint of the name
    runs = [line for line in log if line.startswith("docker run")]
    assert all("--label provisioner.probe=lab2 " in r for r in runs)
    assert "--ip 198.19.1.254" in runs[0] and re.search(r"--name prov-probe-ov-lab2-\d+ --ip 198\.19\.1\.254", runs[2])


def test_start_script_takes_any_address_when_the_fixed_one_is_taken_and_reports_errors(stub: Any) -> None:
    p = Probe("lab2", "lab2", "prov-probe-ov-lab2", net=Net("ov"), ip="198.19.1.254")
    out, _ = stub(start_script("lab2", [p], "probe:1", 60), IP_TAKEN="1")
    assert out == "@@V@@ p0 ok 198.19.1.250 prov-probe-ov-lab2\n"
    out, _ = stub(start_script("lab2", [p], "probe:1", 60), NO_IMAGE="1")
    assert out == "@@V@@ p0 err Unable to find image 'probe:1' locally\n"


def test_probe_script_falls_back_to_one_exec_per_test_without_sh(stub: Any) -> None:
    tests = [
        Trial(probe, PING, target, f"t{i}", False)
        for i, (probe, target) in enumerate(
            [("with-sh", "198.19.1.3"), ("with-sh", "198.19.1.4"), ("no-sh", "198.19.1.3"), ("no-sh", "198.19.1.4")]
        )
    ]
    out, log = stub(probe_script(tests, SETTINGS), NO_SH="no-sh")
    assert sorted(out.splitlines()) == ["@@V@@ t0 ok", "@@V@@ t1 FAIL", "@@V@@ t2 ok", "@@V@@ t3 FAIL"]
    execs = [shlex.split(line)[1:4] for line in log if line.startswith("docker exec")]
    assert execs.count(["exec", "with-sh", "sh"]) == 1  # all of a probe's tests in one exec
    assert ["exec", "no-sh", "ping"] in execs and ["exec", "with-sh", "ping"] not in execs


def test_a_pair_that_must_not_reach_is_tried_briefly_not_for_the_whole_deadline(stub: Any) -> None:
    patient = VerifySettings(retries=3, timeout=10, ping_count=1)  # a reach gets 20 tries, one a second
    tests = [Trial("p", PING, "198.19.1.4", "t0", True), Trial("p", PING, "198.19.1.3", "t1", True)]
    out, log = stub(probe_script(tests, patient))
    assert sorted(out.splitlines()) == ["@@V@@ t0 FAIL", "@@V@@ t1 ok"]  # isolated; reached (isolation broken)
    assert log.count("ping -c 1 -W 1 198.19.1.4") == BRIEF_ATTEMPTS


def test_cleanup_removes_probes_by_name_and_label_and_forces_endpoints_out(stub: Any) -> None:
    probes = [
        Probe("lab2", "lab2", "prov-probe-ov-lab2", net=Net("ov")),
        Probe("box", "lab2", "pb", mode="container:box"),
    ]
    _, log = stub(cleanup_command(probes))
    assert log == [
        "docker rm -f prov-probe-ov-lab2 pb",
        "docker ps -aq --filter label=provisioner.probe",
        "docker network disconnect -f ov prov-probe-ov-lab2",
    ]
