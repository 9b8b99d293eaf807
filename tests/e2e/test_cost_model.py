"""The cost model, on a real 3-host lab: what a run in sync costs in SSH connections and round trips.

Per host and run: one SSH connection; facts in one round trip. On a converged cluster a no-op `apply`
costs the kv host facts + lock take + lock release, and each docker host its facts alone; `plan`
takes no lock, so one round trip per host. The budget below is the measured figure; a change that
makes it grow fails here (raise the budget only together with the reason in the commit).

Environment: PROVISIONER_E2E_COST_LAB_DIR (default /var/lib/provisioner/lab-e2e-cost) and
PROVISIONER_E2E_COST_LAB_SUBNET (default 198.18.11.0/24) keep this lab apart from others.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.labkit import fresh_lab, run_json

pytestmark = pytest.mark.e2e

STATE = Path(os.environ.get("PROVISIONER_E2E_COST_LAB_DIR", "/var/lib/provisioner/lab-e2e-cost"))
SUBNET = os.environ.get("PROVISIONER_E2E_COST_LAB_SUBNET", "198.18.11.0/24")

# round trips per host on a converged lab (lab1: kv, lab2/lab3: docker)
NOOP_APPLY = {"lab1": 3, "lab2": 1, "lab3": 1}  # kv: facts, lock take, lock release
PLAN = {"lab1": 1, "lab2": 1, "lab3": 1}  # facts only


def run(command: str, inventory: Path) -> tuple[int, dict[str, Any]]:
    rc, report, _ = run_json(command, inventory, timeout=900)
    return rc, report


def costs(report: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    conns = report["connections"]
    return (
        {h: int(c["connects"]) for h, c in conns.items()},
        {h: int(c["round_trips"]) for h, c in conns.items()},
    )


@pytest.fixture(scope="module")
def converged() -> Iterator[Path]:
    with fresh_lab(STATE, SUBNET) as info:
        rc, report = run("apply", info.inventory_path)
        assert rc == 0 and report["changed"] > 0, json.dumps(report, indent=1)[-3000:]
        connects, _ = costs(report)
        assert connects == {"lab1": 1, "lab2": 1, "lab3": 1}  # even a first apply: one connection per host
        yield info.inventory_path


def test_noop_apply_stays_within_the_round_trip_budget(converged: Path) -> None:
    rc, report = run("apply", converged)
    assert rc == 0 and report["changed"] == 0, json.dumps(report, indent=1)[-3000:]
    connects, round_trips = costs(report)
    assert connects == {"lab1": 1, "lab2": 1, "lab3": 1}
    over = {h: (n, NOOP_APPLY.get(h, 0)) for h, n in round_trips.items() if n > NOOP_APPLY.get(h, 0)}
    assert not over, f"no-op apply: round trips (measured, budget) grew on {over}"


def test_plan_in_sync_is_one_round_trip_per_host(converged: Path) -> None:
    rc, report = run("plan", converged)
    assert rc == 0 and report["changed"] == 0, json.dumps(report, indent=1)[-3000:]
    connects, round_trips = costs(report)
    assert connects == {"lab1": 1, "lab2": 1, "lab3": 1}
    over = {h: (n, PLAN.get(h, 0)) for h, n in round_trips.items() if n > PLAN.get(h, 0)}
    assert not over, f"plan: round trips (measured, budget) grew on {over}"
