"""One overlay mode for a whole mixed cluster (engines during an upgrade), or a refusal naming the host.

Engines as seen on the lab: bullseye's docker.io 20.10.5 (every backend), bookworm's 20.10.24 (no
Consul), trixie's 26.1.5 and forky's 28.5.2 (no cluster store at all).
"""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.facts import DockerFacts, HostFacts, Interface
from provisioner.inventory import Inventory
from provisioner.modules.capabilities import BACKENDS_PROBE, docker_host_reasons, overlay_mode

BULLSEYE = ("20.10.5+dfsg1-1+deb11u2", 64 + 1 + 2 + 4)
BOOKWORM = ("20.10.24+dfsg1-1+deb12u1+b6", 64 + 2 + 4)
TRIXIE = ("26.1.5+dfsg1-9+deb13u1+b1", 64)
FORKY = ("28.5.2+dfsg4-1", 64)
NO_STORE = "has no --cluster-store (removed in Docker 23)"


def inventory(mode: str = "auto", backend: str = "consul") -> Inventory:
    return Inventory.model_validate(
        {
            "hosts": {
                "lab1": {"address": "198.18.45.11", "groups": ["kv"]},
                "lab2": {"address": "198.18.45.12", "groups": ["docker"]},
                "lab3": {"address": "198.18.45.13", "groups": ["docker"]},
            },
            "kv_store": {"backend": backend, "hosts": ["lab1"]},
            "docker": {"overlay_mode": mode},
            "networks": {"ov_net1": {"subnet": "198.19.1.0/24"}},
        }
    )


def host(name: str, engine: tuple[str, int], **docker: Any) -> HostFacts:
    version, rc = engine
    address = {"lab2": "198.18.45.12", "lab3": "198.18.45.13"}[name]
    d: dict[str, Any] = {"installed": True, "active": True, "state": "active", "package": "docker.io",
                         "package_version": version, **docker}  # fmt: skip
    return HostFacts(
        host=name,
        init="systemd",
        interfaces={"eth0": Interface(name="eth0", up=True, addresses=[address])},
        probes={BACKENDS_PROBE: rc},
        docker=DockerFacts(**d),
    )


def reasons(inv: Inventory, facts: dict[str, HostFacts]) -> dict[str, list[str]]:
    return {h: r for h, f in facts.items() if (r := docker_host_reasons(inv, f, facts))}


@pytest.mark.parametrize(
    ("lab2", "lab3", "backend", "mode", "why"),
    [
        (BULLSEYE, BULLSEYE, "consul", "kv", "auto: every docker host can use consul://"),
        (BULLSEYE, BOOKWORM, "consul", "swarm", "auto: lab3: docker.io 20.10.24+dfsg1-1+deb12u1+b6 cannot use consul://"),
        (BULLSEYE, BOOKWORM, "etcd", "kv", "auto: every docker host can use etcd://"),
        (BULLSEYE, TRIXIE, "etcd", "swarm", f"auto: lab3: docker.io 26.1.5+dfsg1-9+deb13u1+b1 {NO_STORE}"),
        (FORKY, BOOKWORM, "etcd", "swarm", f"auto: lab2: docker.io 28.5.2+dfsg4-1 {NO_STORE}"),
        (TRIXIE, FORKY, "consul", "swarm", f"auto: lab2: docker.io 26.1.5+dfsg1-9+deb13u1+b1 {NO_STORE}"),
    ],
)  # fmt: skip
def test_auto_picks_one_mode_for_every_host(
    lab2: tuple[str, int], lab3: tuple[str, int], backend: str, mode: str, why: str
) -> None:
    inv = inventory("auto", backend)
    facts = {"lab2": host("lab2", lab2), "lab3": host("lab3", lab3)}
    choice = overlay_mode(inv, facts)
    assert (choice.mode, choice.blocked) == (mode, "")
    assert choice.why.startswith(why), choice.why
    # every host agrees (each module asks with its own facts merged in) and preflight passes everywhere
    for h, f in facts.items():
        assert overlay_mode(inv, {**facts, h: f}) == choice
    assert reasons(inv, facts) == {}


def test_a_bullseye_host_still_on_its_cluster_store_blocks_swarm_and_is_named() -> None:
    # mid-upgrade: lab2 is on trixie already (no kv), lab3 still runs the old kv configuration (no swarm)
    inv = inventory("auto")
    facts = {"lab2": host("lab2", TRIXIE), "lab3": host("lab3", BULLSEYE, cluster_store="consul://198.18.45.11:8500")}
    choice = overlay_mode(inv, facts)
    assert choice.mode == "swarm" and choice.blocked.startswith(f"lab2: docker.io 26.1.5+dfsg1-9+deb13u1+b1 {NO_STORE}")
    got = reasons(inv, facts)
    assert list(got) == ["lab3"]  # lab2 can run swarm: it blocks nothing
    (why,) = got["lab3"]
    assert why.startswith("Docker runs with cluster store consul://198.18.45.11:8500, which swarm mode refuses")
    assert "remove --cluster-store/--cluster-advertise" in why
    assert f"kv mode is no way out (lab2: docker.io 26.1.5+dfsg1-9+deb13u1+b1 {NO_STORE}" in why
    assert "or use docker.overlay_mode: kv" not in why


def test_live_restore_on_one_host_with_a_docker_26_elsewhere_is_refused_on_that_host() -> None:
    inv = inventory("auto", "etcd")
    facts = {"lab2": host("lab2", BOOKWORM, live_restore=True), "lab3": host("lab3", FORKY)}
    choice = overlay_mode(inv, facts)
    assert choice.mode == "swarm" and choice.blocked.startswith("lab3: docker.io 28.5.2+dfsg4-1")
    got = reasons(inv, facts)
    assert list(got) == ["lab2"] and got["lab2"][0].startswith("live-restore is enabled, which swarm mode refuses")
    assert "kv mode is no way out (lab3: docker.io 28.5.2" in got["lab2"][0]


def test_explicit_swarm_offers_kv_only_when_every_host_can_run_it() -> None:
    stored = {"cluster_store": "etcd://198.18.45.11:2379"}
    inv = inventory("swarm", "etcd")
    same = {"lab2": host("lab2", BOOKWORM, **stored), "lab3": host("lab3", BOOKWORM)}
    assert reasons(inv, same)["lab2"][0].endswith("and restart Docker; or use docker.overlay_mode: kv")
    mixed = {"lab2": host("lab2", BOOKWORM, **stored), "lab3": host("lab3", TRIXIE)}
    assert "kv mode is no way out (lab3: docker.io 26.1.5" in reasons(inv, mixed)["lab2"][0]


def test_kv_mode_on_a_mixed_cluster_refuses_only_the_newer_engine() -> None:
    inv = inventory("kv", "consul")
    facts = {"lab2": host("lab2", TRIXIE), "lab3": host("lab3", BULLSEYE)}
    got = reasons(inv, facts)
    assert list(got) == ["lab2"]
    assert got["lab2"] == [
        f"docker.io 26.1.5+dfsg1-9+deb13u1+b1 {NO_STORE}, so no key-value store overlay; use docker.overlay_mode: swarm"
    ]
