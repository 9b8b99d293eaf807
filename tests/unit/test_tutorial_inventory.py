"""inventories/tutorial.yml is the whole tutorial on the lab, and tutorial-connected.yml is the same file
with the tutorial's "connect box to docker0" step: checked on the files themselves, without a lab (the
lab's state dir is replaced by a folder holding stand-ins for its key, known_hosts and archives)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from provisioner.inventory import Inventory, load_inventory

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "inventories" / "tutorial.yml"
CONNECTED = ROOT / "inventories" / "tutorial-connected.yml"
LAB_DIR = "/var/lib/provisioner/lab/"
LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")


def raw(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def load_offline(path: Path, tmp_path: Path) -> Inventory:
    for name in ("id_ed25519", "known_hosts", "consul.tar", "probe.tar"):
        (tmp_path / name).write_text("x")
    copy = tmp_path / path.name
    copy.write_text(path.read_text().replace(LAB_DIR, f"{tmp_path}/"))
    return load_inventory(copy)


@pytest.mark.parametrize("path", [TUTORIAL, CONNECTED], ids=lambda p: p.name)
def test_validates_and_uses_only_the_default_lab(path: Path, tmp_path: Path) -> None:
    text = path.read_text()
    assert LAB_DIR in text and text.count("/var/lib/provisioner/") == text.count(LAB_DIR.rstrip("/"))
    inv = load_offline(path, tmp_path)
    assert inv.groups()["kv"] == ["lab1"] and inv.groups()["docker"] == ["lab2", "lab3"]


def test_connected_differs_only_by_box_on_the_default_bridge() -> None:
    a, b = raw(TUTORIAL), raw(CONNECTED)
    assert a["containers"]["box"]["networks"] == ["net1"]
    assert b["containers"]["box"]["networks"] == ["net1", "bridge"]
    b["containers"]["box"]["networks"] = ["net1"]
    assert a == b


def test_every_network_kind_and_container_of_the_tutorial(tmp_path: Path) -> None:
    inv = load_offline(TUTORIAL, tmp_path)
    c, n = inv.containers, inv.networks
    assert c["nonebox"].network_mode == "none" and c["hostbox"].network_mode == "host"
    assert list(c["httpd"].networks) == ["bridge"] and [p.text for p in c["httpd"].ports] == ["32773:80"]
    assert n["net1"].driver == "bridge" and list(c["box"].networks) == ["net1"]
    assert n["ov_net1"].driver == "overlay" and inv.docker.overlay_mode == "kv"
    assert "ov_net1" in c["box1"].networks and "ov_net1" in c["box2"].networks
    assert c["box1"].host != c["box2"].host
    mac = n["mac_net1"]
    assert (mac.driver, mac.parent) == ("macvlan", "eth0") and inv.network_hosts("mac_net1") == ["lab2", "lab3"]
    assert {c["mbox1"].host, c["mbox2"].host} == {"lab2", "lab3"}
    internal = [name for name, net in n.items() if net.internal]
    assert internal and any(name in ct.networks for ct in c.values() for name in internal)
    assert inv.verify.outside is not None and inv.verify.outside in LAB_RANGE


def test_every_address_is_a_lab_address(tmp_path: Path) -> None:
    inv = load_offline(TUTORIAL, tmp_path)
    addresses = [ipaddress.ip_address(h.address) for h in inv.hosts.values()]
    addresses += [a.ipv4_address for ct in inv.containers.values() for a in ct.networks.values() if a.ipv4_address]
    if inv.verify.outside is not None:
        addresses.append(inv.verify.outside)
    nets = [net.subnet for net in inv.networks.values()]
    assert all(a in LAB_RANGE for a in addresses), addresses
    assert all(isinstance(s, ipaddress.IPv4Network) and s.subnet_of(LAB_RANGE) for s in nets), nets
