"""Preflight matrix: engine version/build x store backend x overlay mode -> verdict, from facts alone.

The engines in the tables are the ones seen on real hosts: bullseye's docker.io 20.10.5+dfsg1 (Consul,
etcd and ZooKeeper compiled in), bookworm's 20.10.24+dfsg1 (no Consul) and Docker 24 (no cluster store).
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from provisioner.facts import DockerFacts, HostFacts, Interface
from provisioner.inventory import Inventory
from provisioner.modules import docker_daemon, kv_store
from provisioner.modules.base import Module, NoOp, PlanContext
from provisioner.modules.capabilities import (
    BACKENDS_PROBE,
    BACKENDS_SCRIPT,
    REACH_PREFIX,
    ZOOKEEPER_REASON,
    docker_host_reasons,
    engine_of,
    kv_refusal,
    overlay_mode,
    parse_version,
    reach_probes,
)

BULLSEYE = ("docker.io", "20.10.5+dfsg1-1+deb11u2", 64 + 1 + 2 + 4)
BOOKWORM = ("docker.io", "20.10.24+dfsg1-1+deb12u1+b6", 64 + 2 + 4)
DOCKER_CE_24 = ("docker-ce", "5:24.0.7-1~debian.12~bookworm", 64)
STORE_ADDR = "198.18.0.11:2379"


def inventory(backend: str = "consul", mode: str = "kv", **docker: Any) -> Inventory:
    return Inventory.model_validate(
        {
            "hosts": {
                "lab1": {"address": "198.18.0.11", "groups": ["kv"]},
                "lab2": {"address": "198.18.0.12", "groups": ["docker"]},
                "lab3": {"address": "198.18.0.13", "groups": ["docker"]},
            },
            "kv_store": {"backend": backend, "hosts": ["lab1"]},
            "docker": {"overlay_mode": mode, **docker},
            "networks": {"ov_net1": {"subnet": "198.19.1.0/24"}},
        }
    )


def host(
    name: str = "lab2",
    engine: tuple[str, str, int | None] = BOOKWORM,
    *,
    init: str = "systemd",
    addresses: list[str] | None = None,
    probes: dict[str, int] | None = None,
    **docker: Any,
) -> HostFacts:
    package, version, rc = engine
    addr = {"lab1": "198.18.0.11", "lab2": "198.18.0.12", "lab3": "198.18.0.13"}[name]
    d: dict[str, Any] = {"installed": True, "active": True, "state": "active", "package": package,
                         "package_version": version}  # fmt: skip
    d.update(docker)
    return HostFacts(
        host=name,
        init=init,
        interfaces={"eth0": Interface(name="eth0", up=True, addresses=[addr] if addresses is None else addresses)},
        probes={**({BACKENDS_PROBE: rc} if rc is not None else {}), **(probes or {})},
        docker=DockerFacts(**d),
    )


def verdict(inv: Inventory, f: HostFacts, others: dict[str, HostFacts] | None = None) -> list[str]:
    return docker_host_reasons(inv, f, {f.host: f, **(others or {})})


# ---- the matrix ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "backend", "mode", "expect"),
    [
        (BULLSEYE, "consul", "kv", None),
        (BULLSEYE, "etcd", "kv", None),
        (BULLSEYE, "consul", "swarm", None),
        (BOOKWORM, "consul", "kv", "cannot use consul:// (its consul backend is not in this build); use "
                                   "kv_store.backend: etcd, or docker.overlay_mode: swarm"),
        (BOOKWORM, "etcd", "kv", None),
        (BOOKWORM, "consul", "swarm", None),
        (BOOKWORM, "consul", "auto", None),  # auto picks swarm there
        (DOCKER_CE_24, "etcd", "kv", "has no --cluster-store (removed in Docker 23), so no key-value store overlay; "
                                     "use docker.overlay_mode: swarm"),
        (DOCKER_CE_24, "consul", "auto", None),
        (DOCKER_CE_24, "etcd", "swarm", None),
        # no probe result: Debian's build is judged by its version
        (("docker.io", "20.10.24+dfsg1-1", None), "consul", "kv", "cannot use consul://"),
        (("docker.io", "20.10.5+dfsg1-1", None), "consul", "kv", None),
    ],
)  # fmt: skip
def test_preflight_matrix(engine: tuple[str, str, int | None], backend: str, mode: str, expect: str | None) -> None:
    reasons = verdict(inventory(backend, mode), host(engine=engine))
    if expect is None:
        assert reasons == []
    else:
        (reason,) = reasons
        assert expect in reason
        assert reason.startswith(f"{engine[0]} {engine[1]}")


def test_zookeeper_is_refused_on_every_engine_with_the_alternatives() -> None:
    for engine in (BULLSEYE, BOOKWORM):
        why = kv_refusal(engine_of(host(engine=engine)), "zookeeper")
        assert why is not None and why.startswith(ZOOKEEPER_REASON)
        assert why.endswith("use kv_store.backend: etcd, or docker.overlay_mode: swarm")
    with pytest.raises(ValueError, match="invalid_many"):
        inventory("zookeeper", "kv")
    with pytest.raises(ValueError, match="invalid_many"):
        inventory("zookeeper", "auto")
    assert inventory("zookeeper", "swarm").kv_store.backend == "zookeeper"  # unused in swarm mode


@pytest.mark.parametrize(
    ("text", "want"),
    [("20.10.24+dfsg1-1+b3", (20, 10, 24)), ("5:24.0.7-1~debian.12~bookworm", (24, 0, 7)), ("1.13", (1, 13)),
     ("", None), ("unknown", None)],
)  # fmt: skip
def test_parse_version(text: str, want: tuple[int, ...] | None) -> None:
    assert parse_version(text) == want


def test_running_server_version_wins_over_the_package() -> None:
    f = host(engine=("docker-ce", "5:20.10.9-3", 64 + 7), server_version="24.0.2")
    assert engine_of(f).version == (24, 0, 2) and not engine_of(f).has_cluster_store


# ---- mode selection -----------------------------------------------------------------------------


def test_auto_picks_swarm_for_the_whole_cluster_when_one_host_cannot_use_the_store() -> None:
    inv = inventory("consul", "auto")
    choice = overlay_mode(inv, {"lab2": host("lab2", BULLSEYE), "lab3": host("lab3", BOOKWORM)})
    assert choice.mode == "swarm" and choice.why.startswith("auto: lab3: docker.io 20.10.24")
    choice = overlay_mode(inv, {"lab2": host("lab2", BULLSEYE), "lab3": host("lab3", BULLSEYE)})
    assert choice.mode == "kv" and choice.why == "auto: every docker host can use consul://"
    choice = overlay_mode(inv, {"lab2": host("lab2", BULLSEYE), "lab3": host("lab3", BULLSEYE, swarm_state="active")})
    assert choice.mode == "swarm" and "lab3 already in a swarm" in choice.why
    assert overlay_mode(inventory("consul", "kv"), {"lab2": host("lab2", BOOKWORM)}).mode == "kv"


def test_modules_say_which_mode_auto_picked_and_skip_in_swarm_mode() -> None:
    inv = inventory("consul", "auto")
    all_facts = {"lab1": host("lab1"), "lab2": host("lab2"), "lab3": host("lab3")}
    mods: list[tuple[Module[Any], str]] = [
        (docker_daemon.DockerDaemonModule(), "lab2"),
        (kv_store.KVStoreModule(), "lab1"),
    ]
    for mod, name in mods:
        ctx = PlanContext(host=name, facts=all_facts[name], inventory=inv, all_facts=all_facts)
        result = mod.plan(ctx, mod.Args())
        assert isinstance(result, NoOp)
        assert result.reason.startswith("overlay mode swarm (auto: lab2: docker.io 20.10.24")


# ---- the other checks ---------------------------------------------------------------------------


def test_kv_mode_checks_init_interface_and_swarm_membership() -> None:
    inv = inventory("etcd", "kv")
    assert "init system is sysvinit, not systemd" in verdict(inv, host(init="sysvinit"))[0]
    assert verdict(inventory("etcd", "kv", config="daemon-json"), host(init="sysvinit")) == []
    (missing,) = verdict(inventory("etcd", "kv", advertise_interface="eth9"), host())
    assert missing.startswith("advertise interface eth9 does not exist (interfaces: eth0)")
    (bare,) = verdict(inv, host(addresses=["fe80::1"]))
    assert "advertise interface eth0 has no usable IPv4 address (fe80::1)" in bare
    (swarm,) = verdict(inv, host(swarm_state="active", swarm_node_id="n1"))
    assert "in a swarm (state active, node n1)" in swarm and "docker.overlay_mode: swarm" in swarm
    assert verdict(inv, host(engine=("docker.io", "x", 64 + 2), installed=False)) == []  # the probe found it
    assert verdict(inv, host(engine=("", "", None), installed=False)) == [
        "Docker is not installed; install it first (apt-get install docker.io)"
    ]


def test_swarm_mode_checks_live_restore_cluster_store_and_running_docker() -> None:
    inv = inventory("consul", "swarm")
    reasons = verdict(inv, host(live_restore=True, cluster_store="etcd://198.18.0.11:2379"))
    assert any(r.startswith("Docker runs with cluster store etcd://") for r in reasons)
    assert any(r.startswith("live-restore is enabled, which swarm mode refuses") for r in reasons)
    (down,) = verdict(inv, host(active=False, state="inactive"))
    assert down.startswith("Docker is not running (inactive)")


@pytest.mark.parametrize(
    ("rc", "store_running", "expect"),
    [
        (0, True, None),
        (1, False, None),  # refused while the store is not started yet: the host answers
        (1, True, "refused the connection from here although its container runs"),
        (124, False, "gave no answer within 3s"),
        (127, True, None),  # no bash on the host: cannot tell
    ],
)
def test_store_reachability_from_each_docker_host(rc: int, store_running: bool, expect: str | None) -> None:
    inv = inventory("etcd", "kv")
    containers = [{"name": "etcd", "running": True}] if store_running else []
    kv = host("lab1", containers=containers)
    reasons = verdict(inv, host(probes={f"{REACH_PREFIX}{STORE_ADDR}": rc}), {"lab1": kv})
    if expect is None:
        assert reasons == []
    else:
        (reason,) = reasons
        assert reason.startswith(f"the etcd store on lab1 ({STORE_ADDR}) {expect}")
        assert "open TCP 2379 from lab2 to 198.18.0.11" in reason


def test_reach_probe_commands_and_the_backends_probe_in_a_real_shell(tmp_path: Any) -> None:
    assert reach_probes(inventory("etcd")) == {
        f"{REACH_PREFIX}{STORE_ADDR}": "timeout 3 bash -c '</dev/tcp/198.18.0.11/2379'"
    }
    # a fake dockerd naming two libkv stores, found through PATH as on a host
    (tmp_path / "dockerd").write_bytes(b"\x00github.com/docker/libkv/store/etcd.New\x00libkv/store/zookeeper.New\x00")
    (tmp_path / "dockerd").chmod(0o755)
    rc = subprocess.run(["sh", "-c", BACKENDS_SCRIPT], env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, check=False)
    assert rc.returncode == 64 + 2 + 4
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = subprocess.run(["/bin/sh", "-c", BACKENDS_SCRIPT], env={"PATH": str(empty)}, check=False)
    assert rc.returncode == 100
