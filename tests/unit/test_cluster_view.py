"""Tasks that read other hosts' state look again after the run changed something (``cluster_view``).

A global network shows on a docker host only once its store runs; a network one host made is used on
another. Such a task's facts are gathered again in apply when anything changed earlier in the run, and
never in plan or in a run that changed nothing (the cost model of a no-op run stays one round trip).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from provisioner.facts import ContainerFact
from provisioner.inventory import Inventory
from provisioner.modules.base import Module, ModuleArgs, NoOp, Plan, PlanContext, register
from provisioner.modules.docker_network import DockerNetworkModule
from tests import builders
from tests.builders import STORE, facts, plan
from tests.unit.test_engine import Cluster, inventory, run  # noqa: F401  (inventory: the fixture)

PLAY = "- name: p\n  hosts: web\n  tasks:\n    - command: {cmd: touch /x, creates: /x}\n    - test_view: {}\n"


class ViewArgs(ModuleArgs):
    pass


def facts_gathered(cluster: Cluster, host: str) -> int:
    return sum(1 for c in cluster.conns[host].calls if c == "sh -s")


def test_a_cluster_view_task_looks_again_after_a_change(inventory: Inventory, tmp_path: Path) -> None:  # noqa: F811
    seen: list[int] = []

    class View(Module[ViewArgs]):
        name = "test_view"
        Args = ViewArgs
        cluster_view: ClassVar[bool] = True

        def plan(self, ctx: PlanContext, args: ViewArgs) -> Plan:
            seen.append(ctx.run_changed)
            return NoOp("looked")

    register(View)
    # the command runs on every host (changed), so the view task gathers its facts again first
    changed = Cluster(setup=lambda c: c.on("^touch /x$"))
    report = run(inventory, tmp_path, PLAY, changed)
    assert report.ok and report.changed == 4
    assert all(facts_gathered(changed, h) == 2 for h in ("h1", "h2", "h3", "h4"))
    # in sync: nothing changed, so one facts round trip per host and no more
    in_sync = Cluster(setup=lambda c: c.on("^test -e /x$", rc=0))
    report = run(inventory, tmp_path, PLAY, in_sync)
    assert report.ok and report.changed == 0
    assert all(facts_gathered(in_sync, h) == 1 for h in ("h1", "h2", "h3", "h4"))
    # plan never looks again (nothing changed on the hosts)
    planned = Cluster()
    report = run(inventory, tmp_path, PLAY, planned, check=True)
    assert report.changed == 4 and all(facts_gathered(planned, h) == 1 for h in ("h1", "h2", "h3", "h4"))


def test_while_the_store_is_down_an_unseen_overlay_is_unknown_not_created() -> None:
    inv = builders.inventory()
    stopped = facts("lab1", containers=[ContainerFact(name="consul", running=False, status="exited")])
    lab2 = facts("lab2", cluster_store=STORE)
    p = plan(DockerNetworkModule(), lab2, inv, all_facts={"lab1": stopped, "lab2": lab2})
    assert isinstance(p, NoOp) and "cannot be seen while the store is down (consul on lab1 is exited)" in p.reason
    running = facts("lab1", containers=[ContainerFact(name="consul", running=True)])
    p = plan(DockerNetworkModule(), lab2, inv, all_facts={"lab1": running, "lab2": lab2})
    assert isinstance(p, list) and p[0].description.startswith("create network ov_net1")

