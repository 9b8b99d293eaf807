"""Lab naming, subnet rules, image cache keys, mirror discovery, state round trip, inventory shape."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from provisioner.errors import LabError
from provisioner.inventory import load_inventory
from provisioner.lab import image, inventory, paths
from provisioner.lab.state import HostRecord, LabState


@pytest.mark.parametrize("cidr", ["10.0.0.0/24", "198.20.0.0/24", "192.168.1.0/24", "fd00::/64"])
def test_subnets_outside_198_18_slash_15_are_refused(cidr: str) -> None:
    with pytest.raises(LabError, match=r"outside 198\.18\.0\.0/15"):
        paths.check_subnet(cidr)


def test_bad_and_tiny_subnets_are_refused() -> None:
    with pytest.raises(LabError, match="not a valid network"):
        paths.check_subnet("198.18.0.1/24")
    with pytest.raises(LabError, match="too small"):
        paths.check_subnet("198.18.0.0/29")


def test_host_addresses_and_names() -> None:
    net = paths.check_subnet("198.19.4.0/24")
    assert [paths.host_address(net, i) for i in (1, 2, 3)] == ["198.19.4.11", "198.19.4.12", "198.19.4.13"]
    assert paths.gateway(net) == "198.19.4.1"
    with pytest.raises(LabError, match="no room"):
        paths.host_address(ipaddress.IPv4Network("198.18.0.0/27"), 30)


def test_names_derive_from_state_dir_and_fit_interface_limit() -> None:
    a, b = paths.lab_id(Path("/var/lib/provisioner/lab")), paths.lab_id(Path("/tmp/other"))
    assert a != b and len(paths.bridge_name(a)) <= 15
    assert paths.container_name(a, "lab1") != paths.container_name(b, "lab1")


def test_image_key_depends_on_suite_and_packages() -> None:
    assert "consul" in image.packages("bullseye") and "consul" not in image.packages("bookworm")
    assert image.host_image_key("bullseye") == image.host_image_key("bullseye")
    assert image.host_image_key("bullseye") != image.host_image_key("bookworm")


def test_mirror_is_taken_from_apt_sources(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    )
    oneline = tmp_path / "sources.list"
    oneline.write_text("# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://other.example/debian bookworm main\n")
    assert image.debian_mirror([deb822]) == "http://mirror.example/debian"
    assert image.debian_mirror([oneline]) == "http://other.example/debian"
    assert image.debian_mirror([tmp_path / "missing"]) == "http://deb.debian.org/debian"


def test_state_round_trip_and_unreadable_state(tmp_path: Path) -> None:
    st = LabState(lab_id="abc", subnet="198.18.0.0/24", engine_owned=True, dockerd_pid=42)
    st.hosts.append(HostRecord("lab1", "198.18.0.11", "plab-abc-lab1", "plab-abc-lab1-docker"))
    st.iptables_rules.append(["-t", "filter", "FORWARD", "-j", "ACCEPT"])
    assert LabState.from_json(st.to_json(), tmp_path) == st
    with pytest.raises(LabError, match="unreadable"):
        LabState.from_json("{not json", tmp_path / "state.json")


def test_written_inventory_validates(tmp_path: Path) -> None:
    for name in ("id_ed25519", "known_hosts", "consul.tar", "probe.tar"):
        (tmp_path / name).write_text("x")
    text = inventory.render(
        tmp_path,
        [("lab1", "198.18.0.11"), ("lab2", "198.18.0.12"), ("lab3", "198.18.0.13")],
        {"consul": "provisioner-lab/consul:1.8.7", "probe": "provisioner-lab/probe:latest"},
        {"consul": tmp_path / "consul.tar", "probe": tmp_path / "probe.tar"},
        "bullseye",
    )
    path = tmp_path / "inventory.yml"
    path.write_text(text)
    inv = load_inventory(path)
    assert inv.groups()["kv"] == ["lab1"] and inv.groups()["docker"] == ["lab2", "lab3"]
    assert inv.kv_store.image == "provisioner-lab/consul:1.8.7"
    assert str(inv.networks["ov_net1"].subnet) == "198.19.1.0/24"
    assert str(inv.verify.outside) == "198.18.0.11"  # a lab address: NAT-out probes never leave the lab
