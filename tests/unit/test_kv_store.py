"""kv_store, data-driven: (containers, images) -> plan; the health wait against a real HTTP server on loopback."""

from __future__ import annotations

import pytest

from provisioner.connection.fake import FakeConnection
from provisioner.engine.executor import apply_change
from provisioner.errors import TaskError
from provisioner.facts import ContainerFact
from provisioner.inventory import Inventory
from provisioner.modules import kv_store
from provisioner.modules._docker import LABEL_ARGS, LABEL_IMAGE, LABEL_SPEC, args_hash, spec_hash
from provisioner.modules.base import NoOp
from tests.builders import (
    CONSUL_ID,
    FakeStore,
    changes,
    ctx_for,
    facts,
    inventory,
    local_kv_inventory,
    plan,
)

_Store = FakeStore


def consul_container(inv: Inventory, host: str = "lab1", *, image_id: str = CONSUL_ID, labels: dict[str, str] | None
                     = None, running: bool = True) -> ContainerFact:  # fmt: skip
    b = kv_store.BACKENDS["consul"]
    opts, cmd = b.run_args(kv_store.store_node(inv, host))
    argv = [*opts, inv.kv_store.image, *cmd]
    if labels is None:
        labels = {LABEL_SPEC: spec_hash(image_id, argv), LABEL_IMAGE: image_id, LABEL_ARGS: args_hash(argv)}
    return ContainerFact(name="consul", image_id=image_id, running=running, status="running" if running else "exited",
                         labels=labels)  # fmt: skip


KV_IMAGES = {"provisioner-lab/consul:1.8.7": CONSUL_ID}
NEW_ID = "sha256:" + "d" * 64


@pytest.mark.parametrize(
    ("containers", "images", "expect"),
    [
        ([], KV_IMAGES, "create consul container (consul store on 198.18.0.11:8500)"),
        (["same"], KV_IMAGES, "noop:consul runs with the same spec"),
        (["same-stopped"], KV_IMAGES, "start consul (it is exited; same spec)"),
        (["same"], {"provisioner-lab/consul:1.8.7": NEW_ID}, "recreate consul: image changed (cccccccccccc -> dddd"),
        (["other-args"], KV_IMAGES, "recreate consul: arguments changed"),
        (["no-label"], KV_IMAGES, "recreate consul: it was not created by provisioner (no spec label)"),
    ],
)
def test_kv_store_plan(containers: list[str], images: dict[str, str], expect: str) -> None:
    inv = inventory()
    cs = []
    for kind in containers:
        c = consul_container(inv, running=kind != "same-stopped")
        if kind == "other-args":
            c = c.model_copy(update={"labels": {**c.labels, LABEL_SPEC: "0" * 16, LABEL_ARGS: "1" * 16}})
        elif kind == "no-label":
            c = c.model_copy(update={"labels": {}})
        cs.append(c)
    p = plan(kv_store.KVStoreModule(), facts("lab1", images=images, containers=cs), inv)
    if expect.startswith("noop:"):
        assert isinstance(p, NoOp) and expect[5:] in p.reason
    else:
        (change,) = changes(p)
        assert change.description.startswith(expect), change.description


def test_kv_single_host_command_publishes_on_the_host_address_only() -> None:
    (c,) = changes(plan(kv_store.KVStoreModule(), facts("lab1", images=KV_IMAGES), inventory()))
    run = c.commands[0]
    assert "docker run -d --restart unless-stopped --name consul" in run
    assert " -p 198.18.0.11:8500:8500 -h consul provisioner-lab/consul:1.8.7 agent -server " in run
    assert "-bootstrap -client=0.0.0.0" in run and "-data-dir=/consul/data" in run
    assert "0.0.0.0:8500" not in run
    assert f"--label {LABEL_SPEC}=" in run


def test_kv_publish_address_override() -> None:
    inv = inventory(kv_store={"publish_address": "198.18.0.50"})
    (c,) = changes(plan(kv_store.KVStoreModule(), facts("lab1", images=KV_IMAGES), inv))
    assert "-p 198.18.0.50:8500:8500" in c.commands[0]
    assert kv_store.cluster_store_url(inv) == "consul://198.18.0.50:8500"


def test_kv_quorum_with_three_hosts() -> None:
    inv = inventory(
        hosts={f"kv{i}": {"address": f"198.18.0.2{i}", "groups": ["kv"]} for i in (1, 2, 3)},
        kv_store={"hosts": ["kv1", "kv2", "kv3"]},
    )
    (c,) = changes(plan(kv_store.KVStoreModule(), facts("kv2", ip="198.18.0.22", images=KV_IMAGES), inv))
    run = c.commands[0]
    for part in ("--network host", "-bootstrap-expect=3", "-bind=198.18.0.22", "-advertise=198.18.0.22",
                 "-client=198.18.0.22", "-retry-join=198.18.0.21", "-retry-join=198.18.0.23", "-node=kv2"):  # fmt: skip
        assert part in run
    assert "-bootstrap " not in run and "-retry-join=198.18.0.22" not in run


def test_kv_etcd_backend_enables_v2_and_lists_every_endpoint() -> None:
    inv = inventory(kv_store={"backend": "etcd", "image": "etcd:3.4"})
    (c,) = changes(plan(kv_store.KVStoreModule(), facts("lab1", images={"etcd:3.4": CONSUL_ID}), inv))
    assert "--enable-v2=true" in c.commands[0] and "--name etcd" in c.commands[0]
    assert kv_store.cluster_store_url(inv) == "etcd://198.18.0.11:2379"


def test_kv_refuses_unsupported_backend_and_wrong_host() -> None:
    # zookeeper never works as Docker's cluster store (issue 5): the inventory itself is refused
    with pytest.raises(ValueError, match="invalid_many"):
        inventory(kv_store={"backend": "zookeeper"})
    with pytest.raises(TaskError, match=r"lab2 is not one of kv_store\.hosts"):
        plan(kv_store.KVStoreModule(), facts("lab2"), inventory())


def test_kv_apply_waits_for_leader_with_py_consul(store: tuple[int, type[_Store]]) -> None:
    port, _ = store
    inv = local_kv_inventory(port)
    f = facts("store1", ip="127.0.0.1", images=KV_IMAGES)
    (c,) = changes(plan(kv_store.KVStoreModule(), f, inv))
    conn = FakeConnection("store1").on(r"^docker run -d", stdout="abc\n")
    apply_change(ctx_for(conn, f, inv), c)
    assert len(conn.calls) == 1  # the leader was asked directly, not through the host


def test_kv_wait_times_out_with_container_logs(store: tuple[int, type[_Store]]) -> None:
    port, handler = store
    handler.leader = '""'  # answering, but no leader
    inv = local_kv_inventory(port)
    f = facts("store1", ip="127.0.0.1")
    conn = FakeConnection("store1").on("docker logs --tail 30 consul", stdout="agent: No cluster leader\n")
    with pytest.raises(TaskError, match=r"did not become healthy within 0s[\s\S]*No cluster leader"):
        kv_store.wait_healthy(ctx_for(conn, f, inv), kv_store.BACKENDS["consul"], timeout=0)


def test_kv_health_falls_back_to_curl_on_the_host() -> None:
    # nothing listens on this loopback port, and the fake connection cannot forward ports
    inv = local_kv_inventory(1)
    conn = FakeConnection("store1").on(r"curl -fsS -m 5 http://127.0.0.1:1/v1/status/leader", stdout='"10.0.0.1:8300"')
    assert kv_store.check_health(lambda: conn, inv, "store1") is None
    conn2 = FakeConnection("store1").on("curl", rc=7)
    assert "no answer from 127.0.0.1:1" in (kv_store.check_health(lambda: conn2, inv, "store1") or "")
