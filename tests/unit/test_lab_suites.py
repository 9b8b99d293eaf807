"""Lab suites: trixie/forky images, forky's cgroup v2 bind, mixed labs (one suite per host in turn)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.errors import LabError
from provisioner.inventory import load_inventory
from provisioner.lab import hosts, image, inventory, paths
from provisioner.lab.state import HostRecord, LabState


def test_suites_are_taken_in_turn_first_host_first() -> None:
    suites = paths.parse_suites("bullseye, trixie")
    assert suites == ["bullseye", "trixie"]
    assert [paths.host_suite(suites, i) for i in (1, 2, 3, 4)] == ["bullseye", "trixie", "bullseye", "trixie"]
    assert [paths.host_suite(["forky"], i) for i in (1, 2)] == ["forky", "forky"]


@pytest.mark.parametrize("spec", ["buster", "bullseye,sid", "", "trixie,"])
def test_unknown_suites_are_refused_with_the_choices(spec: str) -> None:
    with pytest.raises(LabError, match=r"unknown suite .*\n    fix: use --suite bullseye \| bookworm \| trixie"):
        paths.parse_suites(spec)


def test_trixie_and_forky_get_the_split_docker_client_and_their_own_cache_key() -> None:
    for suite in ("trixie", "forky"):
        assert {"docker.io", "docker-cli"} <= set(image.packages(suite))
    assert "docker-cli" not in image.packages("bookworm")
    keys = {image.host_image_key(s) for s in paths.SUITES}
    assert len(keys) == len(paths.SUITES)


def test_debootstrap_gets_the_sid_script_only_for_suites_it_does_not_know(tmp_path: Path) -> None:
    for name in ("bookworm", "trixie", "sid"):
        (tmp_path / name).write_text("")
    assert image.debootstrap_script("trixie", tmp_path) == []
    assert image.debootstrap_script("forky", tmp_path) == [str(tmp_path / "sid")]
    (tmp_path / "sid").unlink()
    with pytest.raises(LabError, match="knows neither forky nor sid"):
        image.debootstrap_script("forky", tmp_path)


def _cgroup_tree(root: Path, kind: str) -> Path:
    """A fake /sys/fs/cgroup: v1 (controllers only), hybrid (v1 + v2 at unified/) or v2."""
    (root / "memory").mkdir(parents=True)
    if kind == "hybrid":
        (root / "unified").mkdir()
        (root / "unified/cgroup.controllers").write_text("")
    elif kind == "v2":
        (root / "cgroup.controllers").write_text("cpu memory io\n")
    return root


@pytest.mark.parametrize(
    ("kind", "suite", "want"),
    [
        ("hybrid", "trixie", ""),
        ("hybrid", "bullseye", ""),
        ("hybrid", "forky", "unified"),  # forky's systemd refuses v1: only the v2 hierarchy
        ("v2", "forky", ""),
        ("v2", "bookworm", ""),
        ("v1", "bookworm", ""),
    ],
)
def test_cgroup_bind_source(tmp_path: Path, kind: str, suite: str, want: str) -> None:
    root = _cgroup_tree(tmp_path / "cg", kind)
    assert hosts.cgroup_source(suite, root) == str(root / want if want else root)


def test_forky_on_a_machine_without_cgroup_v2_is_refused_with_the_way_out(tmp_path: Path) -> None:
    root = _cgroup_tree(tmp_path / "cg", "v1")
    with pytest.raises(LabError, match=r"forky hosts need a cgroup v2 hierarchy.*\n    fix: .*--suite trixie"):
        hosts.cgroup_source("forky", root)


def test_mixed_inventory_notes_each_hosts_suite_and_validates(tmp_path: Path) -> None:
    for name in ("id_ed25519", "known_hosts", "consul.tar", "probe.tar"):
        (tmp_path / name).write_text("x")
    names = [("lab1", "198.18.40.11"), ("lab2", "198.18.40.12"), ("lab3", "198.18.40.13")]
    suites = {"lab1": "bullseye", "lab2": "trixie", "lab3": "bullseye"}
    images = {"consul": "provisioner-lab/consul:1.8.7", "probe": "provisioner-lab/probe:latest"}
    archives = {"consul": tmp_path / "consul.tar", "probe": tmp_path / "probe.tar"}
    text = inventory.render(tmp_path, names, images, archives, "bullseye,trixie", suites)
    assert "  lab2: {address: 198.18.40.12, groups: [docker]}  # trixie\n" in text
    path = tmp_path / "inventory.yml"
    path.write_text(text)
    assert list(load_inventory(path).hosts) == ["lab1", "lab2", "lab3"]
    # one suite: no per-host notes
    plain = inventory.render(tmp_path, names, images, archives, "trixie", dict.fromkeys(suites, "trixie"))
    assert "# trixie\n" not in plain


def test_state_keeps_each_hosts_suite_and_reads_older_files(tmp_path: Path) -> None:
    st = LabState(lab_id="abc", suite="bullseye,trixie")
    st.hosts.append(HostRecord("lab2", "198.18.40.12", "plab-abc-lab2", "v", "trixie", "provisioner-lab/host:t"))
    assert LabState.from_json(st.to_json(), tmp_path) == st
    old = '{"lab_id": "abc", "hosts": [{"name": "lab1", "address": "a", "container": "c", "volume": "v"}]}'
    assert LabState.from_json(old, tmp_path).hosts[0].suite == ""
