"""overlay_verify: the ping matrix over the overlay networks, one user of the check engine.

Docker hosts are scripted FakeConnections answering the probe start, test and cleanup scripts; the
store is checked through the kv host's (fake) connection. The text of a failed matrix is compared with
what overlay_verify printed before it moved onto the check engine (the same scenario, byte for byte).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from provisioner.connection.base import RunResult, ShellConnection
from provisioner.connection.fake import FakeConnection, serve_facts
from provisioner.engine import Executor
from provisioner.errors import TaskError
from provisioner.facts import HostFacts
from provisioner.inventory import Inventory
from provisioner.modules import overlay_verify
from provisioner.modules.base import ApplyContext, Check, CheckFailed, CheckOutcome, NoOp, PlanContext
from provisioner.playbook import Play, Playbook, Task
from tests.builders import facts, inventory

MOD = overlay_verify.OverlayVerifyModule()


def overlays(*names: str) -> dict[str, Any]:
    return {n: {"driver": "overlay", "subnet": f"198.19.{n[-1]}.0/24"} for n in names}


def docker_hosts(*names: str, group: str = "docker") -> dict[str, Any]:
    return {h: {"address": f"198.18.0.{10 + int(h[-1])}", "groups": [group]} for h in names}


def ip_of(net: str, host: str) -> str:
    return f"198.19.{int(net[-1])}.{int(host[-1]) + 1}"


class ProbeHost:
    """A docker host answering the probe scripts: probe addresses from ``ip_of``, a ping reaches unless
    (network, target host) is in ``unreachable``; ``start_errors`` maps a network to its start error."""

    def __init__(
        self, name: str, unreachable: set[tuple[str, str]] | None = None, start_errors: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.unreachable = unreachable or set()
        self.start_errors = start_errors or {}
        self.conn = FakeConnection(name).on(r"^sh -s$", respond=self.script).on(r"^docker rm -f prov-probe-", rc=0)
        self.facts = serve_facts(FakeConnection(name))  # the executor's facts script goes there
        self.started: list[str] = []

    def script(self, cmd: str, stdin: bytes | None) -> RunResult:
        text = (stdin or b"").decode()
        if "docker run -d" in text:
            assert f"--label provisioner.probe={self.name} " in text
            out = []
            for m in re.finditer(
                r"^n=(prov-probe-(\S+)-\S+); docker network disconnect .*?@@V@@ (p\d+) ok", text, re.M
            ):
                name, net, tag = m.groups()
                assert f"s {net} --ip 198.19." in m.group(0)  # the fixed address per host, any when taken
                if net in self.start_errors:
                    out.append(f"@@V@@ {tag} err {self.start_errors[net]}")
                else:
                    self.started.append(net)
                    out.append(f"@@V@@ {tag} ok {ip_of(net, self.name)} {name}")
            return RunResult(0, "\n".join(out) + "\n", "")
        if "x_ping" in text:
            out = []
            for probe, ip, tag in re.findall(r"^x_ping (\S+) (\S+) (t\d+) &$", text, re.M):
                net = probe.removeprefix("prov-probe-").removesuffix(f"-{self.name}")
                target = f"lab{int(ip.rsplit('.', 1)[1]) - 1}"
                out.append(f"@@V@@ {tag} {'FAIL' if (net, target) in self.unreachable else 'ok'}")
            return RunResult(0, "\n".join(out) + "\n", "")
        return self.facts.run(cmd, stdin=stdin)

    @property
    def cleaned(self) -> bool:
        return any(c.startswith(f"docker rm -f prov-probe-ov_net1-{self.name} ") for c in self.conn.calls)


def kv_host(healthy: bool = True) -> FakeConnection:
    """The store host lab1 of the builders' inventory: its store answers curl there (check_via: ssh)."""
    conn = FakeConnection("lab1")
    return conn.on("curl", stdout='"198.18.0.11:8300"') if healthy else conn.on("curl", rc=7)


def run_matrix(
    hosts: dict[str, ProbeHost], inv: Inventory, all_facts: dict[str, HostFacts] | None = None, kv: bool = True
) -> tuple[str, dict[str, Any] | None]:
    first = next(iter(hosts))
    f = facts(first)
    ctx = PlanContext(host=first, facts=f, inventory=inv, all_facts=all_facts or {}, options={"verify": True})
    p = MOD.plan(ctx, MOD.Args.model_validate({}))
    assert isinstance(p, Check)
    store = kv_host(kv)

    def connection_to(h: str) -> ShellConnection:
        return store if h == "lab1" else hosts[h].conn

    actx = ApplyContext(first, hosts[first].conn, f, inv, connection_to=connection_to, all_facts=all_facts or {})
    try:
        out = p.run(actx)
    except CheckFailed as e:
        return "ERROR " + str(e), e.data
    assert isinstance(out, CheckOutcome)
    return out.text, out.data


def test_verify_all_pairs_ok() -> None:
    hosts = {h: ProbeHost(h) for h in ("lab2", "lab3")}
    out, data = run_matrix(hosts, inventory())
    assert out.startswith("all 2 hosts reach each other over ov_net1")
    assert re.search(r"^lab2\s+-\s+ok$", out, re.M) and re.search(r"^lab3\s+ok\s+-$", out, re.M)
    for h in hosts.values():
        assert h.started == ["ov_net1"] and h.cleaned
        assert h.conn.stats.round_trips == 3  # start, ping all, clean up
    assert data is not None and data["ok"] is True
    assert [(p["source"], p["destination"], p["network"], p["expected"], p["observed"], p["verdict"])
            for p in data["pairs"]] == [("lab2", "lab3", "ov_net1", "reach", "reached", "ok"),
                                        ("lab3", "lab2", "ov_net1", "reach", "reached", "ok")]  # fmt: skip


def test_verify_failure_names_the_pair_and_still_removes_probes() -> None:
    hosts = {"lab2": ProbeHost("lab2"), "lab3": ProbeHost("lab3", unreachable={("ov_net1", "lab2")})}
    out, data = run_matrix(hosts, inventory())
    assert out.startswith("ERROR overlay check failed")
    assert "lab3 -> lab2 (198.19.1.3) over ov_net1: no reply" in out
    assert re.search(r"^lab3\s+FAIL\s+-$", out, re.M)
    assert "UDP 4789" in out and "7946" in out and "MTU" in out and "NAT" in out
    assert all(h.cleaned for h in hosts.values())
    assert data is not None and data["ok"] is False
    (failed,) = [p for p in data["pairs"] if p["verdict"] != "ok"]
    assert failed["verdict"] == "no reply" and failed["cause"] == "no reply from 198.19.1.3 over ov_net1"


# overlay_verify's text for this scenario before it moved onto the check engine (swarm mode: no store)
BEFORE = """overlay check failed:
    lab3: probe did not start: docker: Error response from daemon: No such image
    lab1 -> lab2 (198.19.2.3) over ov_net2: no reply
ov_net1: ping from (row) to (column)
        lab1    lab2    lab3
lab1    -       ok      n/a
lab2    ok      -       n/a
lab3    n/a     n/a     -

ov_net2: ping from (row) to (column)
        lab1    lab2    lab3
lab1    -       FAIL    ok
lab2    ok      -       ok
lab3    ok      ok      -
  usual causes:
    - the probe image provisioner-lab/probe:latest is missing: apply playbooks/overlay.yml (it loads it)
    - UDP 4789 (VXLAN data), TCP/UDP 7946 (gossip) or TCP 2377 (swarm control) blocked between the hosts
    - NAT between the hosts (the advertise address must be the address the other hosts reach)
    - an MTU too small for VXLAN's 50 extra bytes on the path between the hosts
    - the network was created without --attachable (plain containers cannot join it)
    fix: fix the first cause that applies, then run `provisioner verify -i INVENTORY` again"""


def test_failed_matrix_text_is_what_it_was_before_the_check_engine() -> None:
    hosts = {
        "lab1": ProbeHost("lab1", unreachable={("ov_net2", "lab2")}),
        "lab2": ProbeHost("lab2", unreachable={("ov_net1", "lab3")}),
        "lab3": ProbeHost("lab3", start_errors={"ov_net1": "docker: Error response from daemon: No such image"}),
    }
    inv = inventory(
        hosts=docker_hosts("lab1", "lab2", "lab3"),
        kv_store=None,
        networks=overlays("ov_net1", "ov_net2"),
        docker={"overlay_mode": "swarm"},
    )
    out, _ = run_matrix(hosts, inv, {h: facts(h, swarm_state="active") for h in hosts})
    assert out == "ERROR " + BEFORE
    assert all(h.conn.stats.round_trips == 3 for h in hosts.values())


def test_verify_says_the_store_is_down_before_starting_probes() -> None:
    lab2 = ProbeHost("lab2")
    with pytest.raises(TaskError, match=r"the consul store \(consul://198.18.0.11:8500\) is not healthy"):
        run_matrix({"lab2": lab2}, inventory(), kv=False)
    assert not lab2.started and lab2.conn.calls == []


def test_verify_unknown_network_is_refused() -> None:
    ctx = PlanContext(host="lab2", facts=facts("lab2"), inventory=inventory())
    with pytest.raises(TaskError, match="'nope' is not in the inventory"):
        MOD.plan(ctx, MOD.Args.model_validate({"network": "nope"}))


def test_apply_runs_the_ping_matrix_only_when_the_run_changed_something() -> None:
    inv = inventory()
    f = facts("lab2")
    args = MOD.Args.model_validate({})

    def ctx(changed: int, **options: Any) -> PlanContext:
        return PlanContext(host="lab2", facts=f, inventory=inv, options=options, run_changed=changed)

    skipped = MOD.plan(ctx(0), args)
    assert isinstance(skipped, NoOp) and "provisioner verify" in skipped.reason
    assert isinstance(MOD.plan(ctx(2), args), Check)
    assert isinstance(MOD.plan(ctx(0, verify=True), args), Check)  # `provisioner verify` always runs it
    always = inv.model_copy(update={"verify": inv.verify.model_copy(update={"on_apply": "always"})})
    assert isinstance(MOD.plan(PlanContext(host="lab2", facts=f, inventory=always), args), Check)


def test_hosts_default_to_the_docker_group_setting() -> None:
    inv = inventory(hosts=docker_hosts("lab2", "lab3", group="workers"), docker={"group": "workers"})
    ctx = PlanContext(host="lab2", facts=facts("lab2"), inventory=inv, options={"verify": True})
    p = MOD.plan(ctx, MOD.Args.model_validate({}))
    assert isinstance(p, Check) and p.description.endswith("between lab2, lab3")


@pytest.mark.parametrize("forks", [1, 4])
def test_json_report_carries_every_pair_through_the_executor(tmp_path: Path, forks: int) -> None:
    hosts = {"lab2": ProbeHost("lab2"), "lab3": ProbeHost("lab3", unreachable={("ov_net1", "lab2")})}
    inv = inventory(docker={"overlay_mode": "swarm"})
    conns: dict[str, ShellConnection] = {h: p.conn for h, p in hosts.items()}
    task = Task(name="ping matrix", module="overlay_verify", args=MOD.Args.model_validate({}), run_once=True)
    play = Play(name="verify", hosts=list(hosts), pattern="docker", tasks=[task])
    ex = Executor(inv, conns.__getitem__, check=False, forks=forks, mode="verify", options={"verify": True})
    report = ex.run(Playbook(plays=[play], source=tmp_path / "inventory.yml")).to_json()
    (result,) = report["hosts"]["lab2"]["tasks"]
    assert result["status"] == "failed" and "lab3 -> lab2 (198.19.1.3) over ov_net1: no reply" in result["message"]
    assert [(p["source"], p["verdict"]) for p in result["verify"]["pairs"]] == [("lab2", "ok"), ("lab3", "no reply")]
    assert report["connections"]["lab3"] == {"connects": 1, "round_trips": 4}  # facts, start, ping, cleanup
    assert all(h.cleaned for h in hosts.values())
