"""What `plan` prints is what `apply` runs, for every module, on a drifted real lab.

For each scenario: the lab is drifted by hand, `plan --output json` records every change's printed
``steps``; then `apply` runs with ``PROVISIONER_TRACE`` set, which logs each step as it starts and every
command and file put the connections send, under the step that sent it. Per host, the steps apply ran
must be the steps plan printed (same text, same order), and every command sent while a step ran must
appear in that step's printed text. Each apply is run twice; the second changes nothing.

Scenarios (one bullseye lab): a hand-drifted kv cluster (store container stopped, drop-in edited, probe
image removed, network recreated by hand with another subnet, a file and a command's marker removed:
kv_store, docker_daemon, docker_image, docker_network with --recreate-networks, file, command); the same
hosts with only a bridge network and no kv_store section (converges, and plan's drift exits 3, not 1);
then swarm mode, where a node that left the swarm is joined again (swarm, with the token captured by one
step and masked in every output).

Environment: PROVISIONER_E2E_PLAN_LAB_DIR (default /var/lib/provisioner/lab-e2e-plan) and
PROVISIONER_E2E_PLAN_LAB_SUBNET (default 198.18.13.0/24) keep this lab apart from others.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.e2e.labkit import ROOT, cli, fresh_lab, lab_sh, run_json

pytestmark = pytest.mark.e2e

STATE = Path(os.environ.get("PROVISIONER_E2E_PLAN_LAB_DIR", "/var/lib/provisioner/lab-e2e-plan"))
SUBNET = os.environ.get("PROVISIONER_E2E_PLAN_LAB_SUBNET", "198.18.13.0/24")
DROPIN = "/etc/systemd/system/docker.service.d/10-machine.conf"
MARKER = "/var/tmp/provisioner-e2e-command-ran"
NOTE = "/etc/provisioner-e2e.conf"

EXTRA_PLAY = f"""
- name: extras
  hosts: docker
  tasks:
    - name: a file
      file: {{path: {NOTE}, content: "managed by provisioner\\n", mode: "0640"}}
    - name: a command
      command: {{cmd: "touch {MARKER}", creates: {MARKER}}}
"""


def sh(host: str, cmd: str) -> str:
    return lab_sh(STATE, host, cmd)


def write_inventory(src: Path, dest: Path, edit: Any) -> Path:
    yaml = YAML()
    doc = yaml.load(src.read_text())
    edit(doc)
    with dest.open("w") as f:
        yaml.dump(doc, f)
    return dest


def planned_steps(report: dict[str, Any]) -> dict[str, list[str]]:
    """host -> every step of every change plan printed, in task order."""
    out: dict[str, list[str]] = {}
    for host, h in report["hosts"].items():
        for task in h["tasks"]:
            for change in task["changes"]:
                assert change["steps"] == change["commands"]  # the old key carries the same list
                out.setdefault(host, []).extend(change["steps"])
    return out


def traced(path: Path) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """(host -> steps apply started, in order; every command or put sent inside a step)."""
    steps: dict[str, list[str]] = {}
    sent: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["kind"] == "step":
            steps.setdefault(event["host"], []).append(event["text"])
        elif event["step"] is not None:
            sent.append(event)
    return steps, sent


def plan_then_apply(inventory: Path, playbook: Path, tmp: Path, *flags: str) -> dict[str, list[str]]:
    """plan, then apply with a trace: returns the planned steps after checking apply ran exactly those."""
    rc, plan, err = run_json("plan", inventory, *flags, playbook=playbook)
    assert rc == 3, f"plan should find the drift (exit 3), got {rc}\n{json.dumps(plan, indent=1)[-3000:]}{err}"
    planned = planned_steps(plan)
    trace = tmp / "trace.jsonl"
    trace.unlink(missing_ok=True)
    os.environ["PROVISIONER_TRACE"] = str(trace)
    try:
        rc, applied, err = run_json("apply", inventory, *flags, playbook=playbook)
    finally:
        del os.environ["PROVISIONER_TRACE"]
    assert rc == 0, json.dumps(applied, indent=1)[-4000:] + err[-2000:]
    assert planned_steps(applied) == planned  # the report of apply shows the same steps as the plan
    ran, sent = traced(trace)
    assert ran == planned, f"apply ran other steps than plan printed:\nplan: {planned}\napply: {ran}"
    for event in sent:
        step, text = event["step"], event["text"]
        # a command sent to another host is printed as "HOST: command" by the step that sends it
        assert text in step, f"{event['host']}: sent {text!r} inside step {step!r}, which does not show it"
    assert sent, "the trace recorded no command at all"
    again, report, err = run_json("apply", inventory, *flags, playbook=playbook)
    assert again == 0 and report["changed"] == 0, json.dumps(report, indent=1)[-3000:] + err
    return planned


@pytest.fixture(scope="module")
def lab() -> Iterator[Path]:
    with fresh_lab(STATE, SUBNET) as info:
        yield info.inventory_path


@pytest.fixture(scope="module")
def playbook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("playbook") / "overlay-and-extras.yml"
    path.write_text((ROOT / "playbooks" / "overlay.yml").read_text() + EXTRA_PLAY)
    return path


def test_kv_cluster_drifted_in_every_module(lab: Path, playbook: Path, tmp_path: Path) -> None:
    rc, report, err = run_json("apply", lab, playbook=playbook)
    assert rc == 0, json.dumps(report, indent=1)[-4000:] + err[-2000:]
    # drift every module's object by hand
    sh("lab2", "docker network rm ov_net1 && docker network create -d overlay --subnet 198.19.9.0/24 ov_net1")
    sh("lab2", f"sed -i 's/eth0:2376/eth0:2377/' {DROPIN}")
    sh("lab3", "docker rmi -f provisioner-lab/probe:latest")
    sh("lab3", f"rm -f {NOTE} {MARKER}")
    # without the flag, the drifted network is planned (exit 3) and apply refuses it
    rc, plan, _ = run_json("plan", lab, playbook=playbook)
    assert rc == 3, json.dumps(plan, indent=1)[-3000:]
    flagged = [c for t in plan["hosts"]["lab2"]["tasks"] for c in t["changes"] if c["requires"]]
    assert len(flagged) == 1, json.dumps(plan["hosts"]["lab2"]["tasks"], indent=1)[-5000:]
    (net,) = flagged
    assert net["requires"] == "--recreate-networks" and "subnet: 198.19.9.0/24 on the host" in net["description"]
    planned = plan_then_apply(lab, playbook, tmp_path, "--recreate-networks")
    modules = " ".join(s for steps in planned.values() for s in steps)
    for expected in (f"put {DROPIN}", "systemctl restart docker", "docker load -i",
                     "docker network rm ov_net1", f"put {NOTE} (mode 0640", f"touch {MARKER}"):  # fmt: skip
        assert expected in modules, f"{expected!r} not among the planned steps: {planned}"
    assert sh("lab2", "docker network inspect -f '{{(index .IPAM.Config 0).Subnet}}' ov_net1") == "198.19.1.0/24"
    # the store stopped: Docker lists no global network meanwhile, so plan says it cannot tell (not
    # "create"), and apply, which looks again once the store runs, finds the network in place
    sh("lab1", "docker stop consul")
    planned = plan_then_apply(lab, playbook, tmp_path)
    assert planned == {"lab1": ["docker start consul", planned["lab1"][1]]}, planned
    assert planned["lab1"][1].startswith("wait up to 90 s until a leader is elected")


def test_bridge_only_inventory_without_a_store(lab: Path, tmp_path: Path) -> None:
    def bridge_only(doc: Any) -> None:
        del doc["kv_store"]
        doc["networks"] = {"net1": {"driver": "bridge", "subnet": "198.19.40.0/24"}}

    inv = write_inventory(lab, tmp_path / "bridge.yml", bridge_only)
    assert cli("validate", "-i", str(inv), str(ROOT / "playbooks" / "overlay.yml")).returncode == 0
    rc, report, err = run_json("apply", inv)
    assert rc == 0, json.dumps(report, indent=1)[-4000:] + err[-2000:]
    for host in ("lab2", "lab3"):  # a local network on every docker host
        assert sh(host, "docker network inspect -f '{{(index .IPAM.Config 0).Subnet}}' net1") == "198.19.40.0/24"
    rc, report, _ = run_json("apply", inv)
    assert rc == 0 and report["changed"] == 0, json.dumps(report, indent=1)[-3000:]
    # drift on one host: plan exits 3 (drift), never 1, and names the flag; apply with it converges
    sh("lab3", "docker network rm net1 && docker network create --subnet 198.19.41.0/24 net1")
    planned = plan_then_apply(inv, ROOT / "playbooks" / "overlay.yml", tmp_path, "--recreate-networks")
    assert list(planned) == ["lab3"], planned


def test_swarm_node_that_left_is_joined_again(lab: Path, tmp_path: Path) -> None:
    # leave kv mode on this lab: Docker without its cluster store, then swarm mode from the same hosts
    for host in ("lab2", "lab3"):
        sh(host, f"rm -f {DROPIN} && systemctl daemon-reload && systemctl restart docker")

    def swarm(doc: Any) -> None:
        doc["docker"]["overlay_mode"] = "swarm"
        doc["networks"] = {"sw_net1": {"driver": "overlay", "subnet": "198.19.50.0/24"}}

    inv = write_inventory(lab, tmp_path / "swarm.yml", swarm)
    rc, report, err = run_json("apply", inv)
    assert rc == 0, json.dumps(report, indent=1)[-4000:] + err[-2000:]
    sh("lab3", "docker swarm leave --force")
    planned = plan_then_apply(inv, ROOT / "playbooks" / "overlay.yml", tmp_path)
    assert planned["lab3"][0] == "lab2: docker swarm join-token -q worker"
    assert planned["lab3"][1].startswith("docker swarm join --token *** ")
    token = sh("lab2", "docker swarm join-token -q worker")
    assert token not in (tmp_path / "trace.jsonl").read_text()
