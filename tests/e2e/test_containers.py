"""The inventory's containers end to end on a 3-host bullseye lab (Docker 20.10), through the real CLI
and playbooks/networks.yml (networks, containers, checks; no store, no daemon configuration).

The scenarios share one lab and run in order, each leaving it converged: from scratch (applied twice, the
second changes nothing; a secret env value is in the container and in no output or trace); a container
removed by hand (plan exit 3, apply restores); stopped and disconnected by hand (started and reconnected,
same id); `docker update --restart no` by hand; the inventory's image changed (plan names the field,
apply recreates); a tag moved to another image id; `box` connected to `bridge` by a changed inventory
without recreation (the tutorial's step); an undeclared managed container (plan exit 3, apply leaves it
and says so, --prune removes it); an unmanaged container of a declared name (plan exit 3, apply refuses,
--adopt takes it); a network recreated with --recreate-networks (its container reconnected, same id).
Every apply that converges is run twice; the second changes nothing, and plan then exits 0.

Environment: PROVISIONER_E2E_CONTAINERS_DIR (default /var/lib/provisioner/h14e-containers) and
PROVISIONER_E2E_CONTAINERS_SUBNET (default 198.18.82.0/24) keep this lab apart from others; the
container networks inside the lab hosts use 198.18.83.0/24.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.e2e.labkit import ROOT, fresh_lab, lab_sh, run_json

pytestmark = pytest.mark.e2e

STATE = Path(os.environ.get("PROVISIONER_E2E_CONTAINERS_DIR", "/var/lib/provisioner/h14e-containers"))
SUBNET = os.environ.get("PROVISIONER_E2E_CONTAINERS_SUBNET", "198.18.82.0/24")
PLAYBOOK = ROOT / "playbooks" / "networks.yml"
SECRET_VAR = "PROVISIONER_E2E_CONTAINER_SECRET"
SECRET = "e2e-s3cret-value-4711"
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 2147483647 & wait"]
LABEL = "io.provisioner.container"


def sh(host: str, cmd: str) -> str:
    return lab_sh(STATE, host, cmd)


def cid(host: str, name: str) -> str:
    return sh(host, f"docker inspect -f '{{{{.Id}}}}' {name}")


def names(host: str) -> set[str]:
    return set(sh(host, "docker ps -a --format '{{.Names}}'").split())


class Lab:
    """The lab's inventory as a document: each scenario edits a copy and writes it next to the base."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.yaml = YAML()
        self.base: dict[str, Any] = self.yaml.load(path.read_text())
        self.n = 0

    def write(self, doc: dict[str, Any]) -> Path:
        self.n += 1
        out = self.path.parent / f"containers-{self.n}.yml"
        with out.open("w") as f:
            self.yaml.dump(doc, f)
        return out

    def doc(self) -> dict[str, Any]:
        return copy.deepcopy(self.base)


def converge(inv: Path, *flags: str, changed: int | None = None) -> dict[str, Any]:
    """apply (the first run may change things), apply again (nothing), plan (exit 0)."""
    rc, report, err = run_json("apply", inv, *flags, playbook=PLAYBOOK)
    assert rc == 0, json.dumps(report, indent=1)[-5000:] + err[-2000:]
    if changed is not None:
        assert report["changed"] == changed, json.dumps(report, indent=1)[-5000:]
    rc, again, err = run_json("apply", inv, *flags, playbook=PLAYBOOK)
    assert rc == 0 and again["changed"] == 0, json.dumps(again, indent=1)[-5000:] + err[-2000:]
    rc, planned, err = run_json("plan", inv, playbook=PLAYBOOK)
    assert rc == 0, json.dumps(planned, indent=1)[-5000:] + err[-2000:]
    return report


def container_changes(report: dict[str, Any], host: str) -> list[dict[str, Any]]:
    return [c for t in report["hosts"][host]["tasks"] if t["module"] == "docker_container" for c in t["changes"]]


def container_task(report: dict[str, Any], host: str) -> dict[str, Any]:
    (task,) = [t for t in report["hosts"][host]["tasks"] if t["module"] == "docker_container"]
    return task


def plan_drift(inv: Path) -> dict[str, Any]:
    rc, report, err = run_json("plan", inv, playbook=PLAYBOOK)
    assert rc == 3, json.dumps(report, indent=1)[-5000:] + err[-2000:]
    return report


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    os.environ[SECRET_VAR] = SECRET
    try:
        with fresh_lab(STATE, SUBNET) as info:
            lab = Lab(info.inventory_path)
            archive = str(lab.base["verify"]["image_archive"])
            lab.base.pop("kv_store", None)  # no store: networks.yml works on any engine
            lab.base["networks"] = {
                "net1": {"driver": "bridge", "subnet": "198.18.83.0/25", "hosts": ["lab2"]},
                "net2": {"driver": "bridge", "subnet": "198.18.83.128/26", "hosts": ["lab3"]},
            }
            probe = {"image": "provisioner-lab/probe:latest", "image_archive": archive}
            lab.base["containers"] = {
                "box": {"host": "lab2", **probe, "command": SLEEPER,
                        "networks": {"net1": {"ipv4_address": "198.18.83.10", "aliases": ["b"]}},
                        "env": {"A": "1", "PW": {"from_env": SECRET_VAR}}},
                "web": {"host": "lab2", **probe, "networks": ["bridge"], "ports": ["32773:80"], "restart": "always",
                        "command": ["sh", "-c", "echo ok > /tmp/index.html && exec httpd -f -p 80 -h /tmp"]},
                "box3": {"host": "lab3", **probe, "command": SLEEPER, "networks": ["net2"]},
            }  # fmt: skip
            yield lab
    finally:
        os.environ.pop(SECRET_VAR, None)


def test_from_scratch_twice_and_the_secret_stays_out_of_every_output(lab: Lab, tmp_path: Path) -> None:
    inv = lab.write(lab.doc())
    trace = tmp_path / "trace.jsonl"
    os.environ["PROVISIONER_TRACE"] = str(trace)
    try:
        rc, report, err = run_json("apply", inv, playbook=PLAYBOOK)
    finally:
        os.environ.pop("PROVISIONER_TRACE")
    assert rc == 0, json.dumps(report, indent=1)[-5000:] + err[-2000:]
    created = [c["description"] for h in ("lab2", "lab3") for c in container_changes(report, h)]
    assert any(d.startswith("create container box ") for d in created), created
    assert any(d.startswith("create container box3 ") for d in created), created
    assert SECRET not in json.dumps(report) + err and SECRET not in trace.read_text()
    assert "put /run/provisioner-container-box.env (mode 0600" in trace.read_text()
    # the secret reached the container, and its file is gone from the host
    assert sh("lab2", "docker exec box sh -c 'echo $PW'") == SECRET
    assert sh("lab2", "ls /run | grep -c provisioner-container || true") == "0"
    assert sh("lab2", "docker inspect -f '{{.NetworkSettings.Networks.net1.IPAddress}}' box") == "198.18.83.10"
    assert LABEL in sh("lab2", "docker inspect -f '{{json .Config.Labels}}' box")
    # the published port answers on lab2's own address (from a container on lab3: another host)
    address = lab.base["hosts"]["lab2"]["address"]
    get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} 32773"
    assert sh("lab3", f'docker exec box3 sh -c "{get}"').splitlines()[-1] == "ok"
    converge(inv, changed=0)


def test_a_container_removed_by_hand_is_restored(lab: Lab) -> None:
    inv = lab.write(lab.doc())
    sh("lab3", "docker rm -f box3")
    report = plan_drift(inv)
    (change,) = container_changes(report, "lab3")
    assert change["description"].startswith("create container box3")
    converge(inv, changed=1)
    assert "box3" in names("lab3")


def test_stopped_and_disconnected_by_hand_are_fixed_in_place(lab: Lab) -> None:
    inv = lab.write(lab.doc())
    before = cid("lab2", "box")
    sh("lab2", "docker network disconnect net1 box && docker stop -t 1 box")
    report = plan_drift(inv)
    (change,) = container_changes(report, "lab2")
    assert change["description"] == "update container box: connect to net1; start it (it is exited)"
    converge(inv, changed=1)
    assert cid("lab2", "box") == before
    assert sh("lab2", "docker inspect -f '{{.State.Running}} {{.NetworkSettings.Networks.net1.IPAddress}}' box") == (
        "true 198.18.83.10"
    )


def test_docker_update_restart_no_by_hand_is_drift(lab: Lab) -> None:
    inv = lab.write(lab.doc())
    before = cid("lab2", "web")
    sh("lab2", "docker update --restart no web")
    report = plan_drift(inv)
    (change,) = container_changes(report, "lab2")
    assert change["description"] == "update container web: restart policy no -> always"
    assert change["steps"] == ["docker update --restart always web"]
    converge(inv, changed=1)
    assert sh("lab2", "docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' web") == "always"
    assert cid("lab2", "web") == before


def test_an_image_changed_in_the_inventory_is_shown_and_recreated(lab: Lab) -> None:
    doc = lab.doc()
    doc["containers"]["box3"]["image"] = "provisioner-lab/probe:v2"  # the same archive, loaded under a new tag
    inv = lab.write(doc)
    before = cid("lab3", "box3")
    report = plan_drift(inv)
    image, box3 = container_changes(report, "lab3")
    assert image["description"].startswith("tag ") and "as provisioner-lab/probe:v2" in image["description"]
    assert box3["description"] == "recreate container box3 (image differs)"
    assert "image: provisioner-lab/probe:latest on the host, provisioner-lab/probe:v2 declared" in box3["notes"]
    converge(inv, changed=1)
    assert cid("lab3", "box3") != before
    assert sh("lab3", "docker inspect -f '{{.Config.Image}}' box3") == "provisioner-lab/probe:v2"
    converge(lab.write(lab.doc()), changed=1)  # back to the base inventory (recreated once more)


def test_a_tag_that_now_points_at_another_image_is_drift(lab: Lab) -> None:
    # a locally built image, used without an archive: what its tag names on the host is what must run
    sh("lab2", "docker tag provisioner-lab/probe:latest provisioner-lab/probe:local")
    doc = lab.doc()
    doc["containers"]["local"] = {"host": "lab2", "image": "provisioner-lab/probe:local", "command": SLEEPER}
    inv = lab.write(doc)
    converge(inv, changed=1)
    before = cid("lab2", "local")
    new = sh("lab2", "docker commit local provisioner-lab/probe:local")  # a rebuild: the tag moves to a new id
    report = plan_drift(inv)
    (change,) = container_changes(report, "lab2")
    assert change["description"] == "recreate container local (image differs)"
    assert any(n.startswith("image: the container runs ") and new.removeprefix("sha256:")[:12] in n
               for n in change["notes"]), change["notes"]  # fmt: skip
    converge(inv, changed=1)
    assert cid("lab2", "local") != before
    assert sh("lab2", "docker inspect -f '{{.Image}}' local") == new
    sh("lab2", "docker rm -f local && docker rmi provisioner-lab/probe:local")


def test_box_connected_to_bridge_by_the_inventory_without_recreation(lab: Lab) -> None:
    doc = lab.doc()
    doc["containers"]["box"]["networks"]["bridge"] = None  # the tutorial's "connect box to docker0"
    inv = lab.write(doc)
    before = cid("lab2", "box")
    report = plan_drift(inv)
    (change,) = container_changes(report, "lab2")
    assert change["description"] == "update container box: connect to bridge"
    assert change["steps"] == ["docker network connect bridge box"]
    converge(inv, changed=1)
    assert cid("lab2", "box") == before
    assert sh("lab2", "docker inspect -f '{{range $n, $e := .NetworkSettings.Networks}}{{$n}} {{end}}' box") == (
        "bridge net1"
    )
    # and back: disconnected, still the same container
    converge(lab.write(lab.doc()), changed=1)
    assert cid("lab2", "box") == before


def test_an_undeclared_managed_container_is_left_until_prune(lab: Lab) -> None:
    doc = lab.doc()
    del doc["containers"]["box3"]
    inv = lab.write(doc)
    report = plan_drift(inv)
    (change,) = container_changes(report, "lab3")
    assert change["description"].startswith("remove undeclared container box3")
    assert change["requires"] == "--prune"
    for _ in (1, 2):  # apply alone: nothing changes, the run succeeds and says what it left
        rc, report, err = run_json("apply", inv, playbook=PLAYBOOK)
        assert rc == 0 and report["changed"] == 0, json.dumps(report, indent=1)[-4000:] + err[-2000:]
        task = container_task(report, "lab3")
        assert task["status"] == "ok" and "left as is, since this needs --prune" in task["message"]
        assert "box3" in names("lab3")
    converge(inv, "--prune", changed=1)
    assert "box3" not in names("lab3")
    converge(lab.write(lab.doc()), changed=1)  # declared again: created again


def test_an_unmanaged_container_of_a_declared_name_is_taken_only_with_adopt(lab: Lab) -> None:
    inv = lab.write(lab.doc())
    sh("lab3", "docker rm -f box3 && docker run -d --name box3 provisioner-lab/probe:latest sleep 100000")
    theirs = cid("lab3", "box3")
    report = plan_drift(inv)
    (change,) = container_changes(report, "lab3")
    assert change["description"].startswith("replace container box3: it exists")
    assert change["requires"] == "--adopt"
    rc, report, _ = run_json("apply", inv, playbook=PLAYBOOK)
    assert rc == 1
    task = container_task(report, "lab3")
    assert task["status"] == "failed" and "not applied, since this needs --adopt" in task["message"]
    assert cid("lab3", "box3") == theirs
    converge(inv, "--adopt", changed=1)
    assert cid("lab3", "box3") != theirs
    assert LABEL in sh("lab3", "docker inspect -f '{{json .Config.Labels}}' box3")


def test_a_recreated_network_gets_its_containers_back(lab: Lab) -> None:
    doc = lab.doc()
    doc["networks"]["net2"]["subnet"] = "198.18.83.192/26"
    inv = lab.write(doc)
    before = cid("lab3", "box3")
    report = plan_drift(inv)
    (recreate,) = [c for t in report["hosts"]["lab3"]["tasks"] if t["module"] == "docker_network" for c in t["changes"]]
    assert recreate["requires"] == "--recreate-networks" and "box3" in " ".join(recreate["notes"])
    rc, report, err = run_json("apply", inv, "--recreate-networks", playbook=PLAYBOOK)
    assert rc == 0, json.dumps(report, indent=1)[-5000:] + err[-2000:]
    (change,) = container_changes(report, "lab3")
    assert change["description"] == "update container box3: connect to net2"
    converge(inv, changed=0)
    assert cid("lab3", "box3") == before
    addr = sh("lab3", "docker inspect -f '{{.NetworkSettings.Networks.net2.IPAddress}}' box3")
    assert addr.startswith("198.18.83.") and int(addr.rsplit(".", 1)[1]) >= 192, addr
