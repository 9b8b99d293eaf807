"""overlay_verify (moving to test_overlay_verify.py): the ping matrix on fake probe hosts."""

from __future__ import annotations

import re
from typing import Any

import pytest

from provisioner.connection.base import RunResult, ShellConnection
from provisioner.connection.fake import FakeConnection
from provisioner.errors import TaskError
from provisioner.modules import overlay_verify
from provisioner.modules.base import Check, NoOp, PlanContext
from tests.builders import (
    FakeStore,
    ctx_for,
    facts,
    inventory,
    local_kv_inventory,
    plan,
)

_Store = FakeStore


# ---- overlay_verify ------------------------------------------------------------------------------------


class ProbeHost:
    """A fake docker host answering the probe start/ping/cleanup scripts."""

    def __init__(self, name: str, ip: str, unreachable: set[str] | None = None) -> None:
        self.name, self.ip = name, ip
        self.unreachable = unreachable or set()
        self.conn = FakeConnection(name)
        self.conn.on(r"^sh -s$", respond=self.script)
        self.conn.on(rf"^docker rm -f prov-probe-ov_net1-{name} ", rc=0)
        self.started = False

    def script(self, _cmd: str, stdin: bytes | None) -> RunResult:
        text = (stdin or b"").decode()
        if f"n=prov-probe-ov_net1-{self.name};" in text and "s ov_net1 --ip 198.19.1." in text:
            assert f"--label provisioner.probe={self.name} " in text
            self.started = True
            return RunResult(0, f"@@V@@ ov_net1 ok {self.ip} prov-probe-ov_net1-{self.name}\n", "")
        lines = []
        for m in re.finditer(rf"^p prov-probe-ov_net1-{self.name} (\S+) ov_net1 (\S+) &$", text, re.M):
            ok = m.group(2) not in self.unreachable
            lines.append(f"@@V@@ ov_net1 {m.group(2)} {'ok' if ok else 'FAIL'}")
        return RunResult(0, "\n".join(lines) + "\n", "")


def run_matrix(port: int, unreachable: dict[str, set[str]] | None = None) -> tuple[str, dict[str, ProbeHost]]:
    inv = local_kv_inventory(port)
    ips = {"lab2": "198.19.1.2", "lab3": "198.19.1.3"}
    hosts = {h: ProbeHost(h, ip, (unreachable or {}).get(h)) for h, ip in ips.items()}
    f = facts("lab2", cluster_store=f"consul://127.0.0.1:{port}")
    p = plan(overlay_verify.OverlayVerifyModule(), f, inv, verify=True)
    assert isinstance(p, Check)

    def connection_to(h: str) -> ShellConnection:
        if h == "store1":
            raise AssertionError("the store answers directly; no connection to the kv host needed")
        return hosts[h].conn

    try:
        return p.run(ctx_for(hosts["lab2"].conn, f, inv, connection_to=connection_to)), hosts
    except TaskError as e:
        return "ERROR " + str(e), hosts


def test_verify_all_pairs_ok(store: tuple[int, type[_Store]]) -> None:
    out, hosts = run_matrix(store[0])
    assert out.startswith("all 2 hosts reach each other over ov_net1")
    assert re.search(r"^lab2\s+-\s+ok$", out, re.M) and re.search(r"^lab3\s+ok\s+-$", out, re.M)
    for h in hosts.values():
        assert h.started and any(c.startswith(f"docker rm -f prov-probe-ov_net1-{h.name} ") for c in h.conn.calls)
        assert h.conn.stats.round_trips == 3  # start, ping all, clean up


def test_verify_failure_names_the_pair_and_still_removes_probes(store: tuple[int, type[_Store]]) -> None:
    out, hosts = run_matrix(store[0], unreachable={"lab3": {"lab2"}})
    assert out.startswith("ERROR overlay check failed")
    assert "lab3 -> lab2 (198.19.1.2) over ov_net1: no reply" in out
    assert re.search(r"^lab3\s+FAIL\s+-$", out, re.M)
    assert "UDP 4789" in out and "7946" in out and "MTU" in out and "NAT" in out
    for h in hosts.values():
        assert any(c.startswith(f"docker rm -f prov-probe-ov_net1-{h.name} ") for c in h.conn.calls)


def test_verify_says_the_store_is_down_before_starting_probes() -> None:
    # nothing listens on loopback port 1: the store is down; the kv host's curl fails too
    inv = local_kv_inventory(1)
    kv = FakeConnection("store1").on("curl", rc=7)
    lab2 = ProbeHost("lab2", "198.19.1.2")
    f = facts("lab2")
    p = plan(overlay_verify.OverlayVerifyModule(), f, inv, verify=True)
    assert isinstance(p, Check)
    with pytest.raises(TaskError, match=r"the consul store \(consul://127.0.0.1:1\) is not healthy"):
        p.run(ctx_for(lab2.conn, f, inv, connection_to=lambda h: kv if h == "store1" else lab2.conn))
    assert not lab2.started


def test_verify_unknown_network_is_refused() -> None:
    with pytest.raises(TaskError, match="'nope' is not in the inventory"):
        plan(overlay_verify.OverlayVerifyModule(), facts("lab2"), args={"network": "nope"})


def test_apply_runs_the_ping_matrix_only_when_the_run_changed_something() -> None:
    inv = inventory()
    f = facts("lab2")
    mod = overlay_verify.OverlayVerifyModule()
    args = mod.Args.model_validate({})

    def ctx(changed: int, **options: Any) -> PlanContext:
        return PlanContext(host="lab2", facts=f, inventory=inv, options=options, run_changed=changed)

    skipped = mod.plan(ctx(0), args)
    assert isinstance(skipped, NoOp) and "provisioner verify" in skipped.reason
    assert isinstance(mod.plan(ctx(2), args), Check)
    assert isinstance(mod.plan(ctx(0, verify=True), args), Check)  # `provisioner verify` always runs it
    always = inv.model_copy(update={"verify": inv.verify.model_copy(update={"on_apply": "always"})})
    assert isinstance(mod.plan(PlanContext(host="lab2", facts=f, inventory=always), args), Check)
