"""Inventory loading: the example inventory, defaults, connection merging, patterns, queries."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from pathlib import Path

import pytest

from provisioner.errors import InputError
from provisioner.inventory import Inventory, load_inventory

EXAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "example.yml"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with the dummy key and known_hosts the example inventory points at."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("dummy key\n")
    (home / ".ssh" / "known_hosts").write_text("")
    monkeypatch.setenv("HOME", str(home))
    return home


def write(tmp_path: Path, text: str, name: str = "inventory.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


MINIMAL = """
hosts:
  kv1: {address: 198.18.0.10, groups: [kv]}
  web1: {address: 198.18.0.11, groups: [docker, web]}
  web2: {address: 198.18.0.12, groups: [docker, web], user: deploy, port: 2222, become: false}
  db1: {address: db1.example.com, groups: [docker]}
kv_store:
  hosts: [kv1]
"""


def test_example_inventory_loads(home: Path) -> None:
    inv = load_inventory(EXAMPLE)
    assert inv.source == EXAMPLE
    assert list(inv.hosts) == ["consul", "host1", "host2"]
    assert inv.address_of("consul") == "192.168.115.20"
    assert inv.address_of("host2") == "192.168.115.22"
    assert inv.groups() == {
        "all": ["consul", "host1", "host2"],
        "kv_store": ["consul"],
        "kv": ["consul"],
        "docker": ["host1", "host2"],
    }
    assert inv.kv_endpoints() == [("consul", "192.168.115.20", 8500)]
    assert inv.networks["ov_net1"].subnet == ipaddress.ip_network("10.0.0.0/24")
    conn = inv.connection_for("host1")
    assert conn.private_key is None  # ssh-agent and the default keys, as ssh does
    assert conn.known_hosts == home / ".ssh" / "known_hosts"
    assert conn.host_key_policy == "accept-new"
    assert conn.become is False


def test_example_inventory_validates_on_a_fresh_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a new user's first step: no ~/.ssh at all, and the example must still validate
    monkeypatch.setenv("HOME", str(tmp_path))
    inv = load_inventory(EXAMPLE)
    assert inv.connection_for("consul").known_hosts == tmp_path / ".ssh" / "known_hosts"


def test_strict_inventory_without_ssh_files_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    strict = tmp_path / "strict.yml"
    strict.write_text(
        EXAMPLE.read_text()
        .replace("# private_key: ~/.ssh/id_ed25519 #", "private_key: ~/.ssh/id_ed25519   #")
        .replace("host_key_policy: accept-new ", "host_key_policy: strict     ")
    )
    with pytest.raises(InputError) as info:
        load_inventory(strict)
    problems = {p.field: p for p in info.value.problems}
    assert set(problems) == {"connection.private_key", "connection.known_hosts"}
    assert "ssh-keygen" in problems["connection.private_key"].fix
    assert "ssh-keyscan -H 192.168.115.20 192.168.115.21 192.168.115.22" in problems["connection.known_hosts"].fix
    assert problems["connection.private_key"].line == 14


def test_defaults(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, MINIMAL))
    assert inv.connection.user == "root" and inv.connection.port == 22
    assert inv.connection.host_key_policy == "strict"
    assert inv.kv_store.backend == "consul"
    assert inv.kv_store.image == "hashicorp/consul:1.15"
    assert inv.kv_store.port == 8500
    d = inv.docker
    assert d.config == "systemd-dropin"
    assert d.dropin == "/etc/systemd/system/docker.service.d/10-machine.conf"
    assert d.daemon_json == "/etc/docker/daemon.json"
    assert (d.advertise_interface, d.advertise_port, d.restart, d.overlay_mode) == ("eth0", 2376, "rolling", "kv")
    assert d.registry_mirrors == []
    assert inv.networks == {}
    v = inv.verify
    assert (v.image, v.image_archive, v.ping_count, v.timeout, v.retries) == ("busybox", None, 3, 10, 3)


@pytest.mark.parametrize(("backend", "port", "image"), [("etcd", 2379, "etcd"), ("zookeeper", 2181, "zookeeper")])
def test_kv_defaults_follow_the_backend(tmp_path: Path, backend: str, port: int, image: str) -> None:
    text = MINIMAL.replace("  hosts: [kv1]", f"  backend: {backend}\n  hosts: [kv1]")
    if backend == "zookeeper":  # refused as a cluster store; the section still loads in swarm mode
        text += "docker: {overlay_mode: swarm}\n"
    inv = load_inventory(write(tmp_path, text))
    assert inv.kv_store.port == port
    assert image in inv.kv_store.image
    assert inv.kv_endpoints() == [("kv1", "198.18.0.10", port)]


def test_connection_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ci").write_text("k")
    (tmp_path / "keys" / "web2").write_text("k")
    text = MINIMAL.replace(
        "hosts:\n  kv1",
        "connection:\n  private_key: keys/ci\n  connect_timeout: 3\n"
        "  password: s3cret\n  host_key_policy: accept-new\n  known_hosts: kh\nhosts:\n  kv1",
    )
    text = text.replace(
        "become: false}", "become: false, private_key: keys/web2, host_key_policy: strict, known_hosts: keys/web2}"
    )
    inv = load_inventory(write(tmp_path, text))
    kv1 = inv.connection_for("kv1")
    assert (kv1.user, kv1.port, kv1.become, kv1.connect_timeout, kv1.retries) == ("root", 22, False, 3, 2)
    assert kv1.private_key == tmp_path / "keys" / "ci"
    assert kv1.known_hosts == tmp_path / "kh"  # need not exist for accept-new
    assert kv1.password is not None and kv1.password.get_secret_value() == "s3cret"
    assert kv1.address == "198.18.0.10" and kv1.host == "kv1"
    web2 = inv.connection_for("web2")
    assert (web2.user, web2.port, web2.become) == ("deploy", 2222, False)
    assert web2.private_key == tmp_path / "keys" / "web2"
    assert web2.host_key_policy == "strict"
    # a non-root user gets sudo unless told otherwise
    text2 = MINIMAL.replace("port: 2222, become: false", "port: 2222")
    inv2 = load_inventory(write(tmp_path, text2, "second.yml"))
    assert inv2.connection_for("web2").become is True
    assert inv2.connection_for("web1").become is False
    # secrets never show up in dumps
    assert "s3cret" not in inv.model_dump_json() and "s3cret" not in repr(inv)


def test_ssh_config_default_and_disable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    inv = load_inventory(write(tmp_path, MINIMAL))
    assert inv.connection_for("web1").ssh_config is None  # no ~/.ssh/config
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host *\n")
    assert inv.connection_for("web1").ssh_config == tmp_path / ".ssh" / "config"
    off = MINIMAL.replace("hosts:\n  kv1", "connection:\n  ssh_config: false\nhosts:\n  kv1")
    off = off.replace("groups: [docker, web]}", "groups: [docker, web], ssh_config: ~/.ssh/config}", 1)
    inv = load_inventory(write(tmp_path, off, "off.yml"))
    assert inv.connection_for("web2").ssh_config is None
    assert inv.connection_for("web1").ssh_config == tmp_path / ".ssh" / "config"
    per_host_null = MINIMAL.replace("become: false}", "become: false, ssh_config: null}")
    inv = load_inventory(write(tmp_path, per_host_null, "null.yml"))
    assert inv.connection_for("web2").ssh_config is None
    assert inv.connection_for("web1").ssh_config == tmp_path / ".ssh" / "config"


def test_relative_paths_resolve_against_the_inventory_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "consul.tar").write_bytes(b"tar")
    text = MINIMAL.replace("  hosts: [kv1]", "  hosts: [kv1]\n  image_archive: consul.tar")
    write(sub, text)
    monkeypatch.chdir(tmp_path)  # the current directory does not matter
    inv = load_inventory(Path("conf") / "inventory.yml")
    assert inv.kv_store.image_archive == sub.resolve() / "consul.tar"


def test_pattern_resolution(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, MINIMAL))
    assert inv.resolve_pattern("all") == ["kv1", "web1", "web2", "db1"]
    assert inv.resolve_pattern("docker") == ["web1", "web2", "db1"]
    assert inv.resolve_pattern("web2,kv1") == ["kv1", "web2"]  # inventory order, not pattern order
    assert inv.resolve_pattern(["docker", "!web"]) == ["db1"]
    assert inv.resolve_pattern("docker, !web1") == ["web2", "db1"]
    assert inv.resolve_pattern("!docker") == ["kv1"]  # only exclusions: everything else
    assert inv.resolve_pattern("web*") == ["web1", "web2"]
    assert inv.resolve_pattern("kv,kv1") == ["kv1"]
    assert inv.resolve_pattern("all,!all") == []
    with pytest.raises(ValueError, match=r"'webb' is neither a host nor a group; did you mean 'web'\?"):
        inv.resolve_pattern("docker,!webb")
    with pytest.raises(ValueError, match="empty host pattern"):
        inv.resolve_pattern(" , ")


def test_groups_and_advertise_interface(tmp_path: Path) -> None:
    text = MINIMAL.replace("groups: [docker]}", "groups: [docker, docker], advertise_interface: ens3}")
    text += "docker:\n  advertise_interface: eth1\n"
    inv = load_inventory(write(tmp_path, text))
    groups = inv.groups()
    assert groups["docker"] == ["web1", "web2", "db1"]
    assert groups["web"] == ["web1", "web2"]
    assert "kv1" in groups["kv"] and next(iter(groups)) == "all"
    assert inv.advertise_interface("db1") == "ens3"
    assert inv.advertise_interface("web1") == "eth1"
    with pytest.raises(ValueError, match="unknown host 'nope'"):
        inv.address_of("nope")


def test_networks(tmp_path: Path) -> None:
    text = MINIMAL + textwrap.dedent("""
        networks:
          ov_net1: {subnet: 10.0.0.0/24, gateway: 10.0.0.1, ip_range: 10.0.0.128/25}
          v6: {driver: bridge, subnet: "fd00:1::/64", attachable: false, options: {com.docker.network.driver.mtu: 1450}}
          mv: {driver: macvlan, subnet: 192.168.200.0/24, parent: eth0.100}
        """)
    inv = load_inventory(write(tmp_path, text))
    n = inv.networks
    assert n["ov_net1"].gateway == ipaddress.ip_address("10.0.0.1")
    assert n["ov_net1"].attachable is True and n["ov_net1"].driver == "overlay"
    assert n["v6"].options == {"com.docker.network.driver.mtu": "1450"}
    assert n["mv"].parent == "eth0.100"
    dumped = json.loads(inv.model_dump_json())
    assert dumped["networks"]["ov_net1"]["subnet"] == "10.0.0.0/24"
    assert "source" not in dumped


def test_publish_address_and_odd_kv_cluster(tmp_path: Path) -> None:
    text = MINIMAL.replace("  hosts: [kv1]", "  hosts: [kv1]\n  publish_address: 198.18.1.1\n  port: 18500")
    inv = load_inventory(write(tmp_path, text))
    assert inv.kv_endpoints() == [("kv1", "198.18.1.1", 18500)]
    three = MINIMAL.replace("  hosts: [kv1]", "  hosts: [kv1, web1, db1]")
    inv = load_inventory(write(tmp_path, three, "three.yml"))
    assert [e[0] for e in inv.kv_endpoints()] == ["kv1", "web1", "db1"]
    assert inv.kv_endpoints()[2] == ("db1", "db1.example.com", 8500)


def test_models_are_frozen_and_strict(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, MINIMAL))
    with pytest.raises(Exception, match="frozen"):
        inv.kv_store.port = 1
    # built in code (no file): same validation, errors still carry field paths
    with pytest.raises(Exception, match="hosts"):
        Inventory.model_validate({"kv_store": {"hosts": ["a"]}})
    built = Inventory.model_validate({"hosts": {"a": {"address": "198.18.0.1"}}, "kv_store": {"hosts": ["a"]}})
    assert built.source is None and built.kv_endpoints() == [("a", "198.18.0.1", 8500)]


def test_store_is_optional_and_the_lock_follows_the_store_or_the_docker_hosts() -> None:
    hosts = {"a": {"address": "198.18.0.1"}, "b": {"address": "198.18.0.2", "groups": ["docker"]}}
    bridge = {"net1": {"driver": "bridge", "subnet": "198.19.1.0/24"}}
    plain = Inventory.model_validate({"hosts": hosts, "networks": bridge})
    assert plain.kv_store is None and plain.kv_endpoints() == [] and plain.groups()["kv_store"] == []
    assert plain.lock_host() == "b" and plain.docker_hosts() == ["b"]
    with_store = Inventory.model_validate({"hosts": hosts, "kv_store": {"hosts": ["a"]}})
    assert with_store.lock_host() == "a"
    pinned = Inventory.model_validate({"hosts": hosts, "lock": {"host": "b"}, "kv_store": {"hosts": ["a"]}})
    assert pinned.lock_host() == "b"
    grouped = Inventory.model_validate({"hosts": hosts, "docker": {"group": "a"}})
    assert grouped.docker_hosts() == ["a"]
    # swarm overlays need no store; kv overlays do
    overlay = {"o": {"subnet": "10.0.0.0/24"}}
    Inventory.model_validate({"hosts": hosts, "docker": {"overlay_mode": "swarm"}, "networks": overlay})
    with pytest.raises(Exception, match="invalid_many"):
        Inventory.model_validate({"hosts": hosts, "networks": overlay})


def test_leading_zero_numbers_keep_their_text(tmp_path: Path) -> None:
    # YAML 1.2 reads 0644 as decimal 644; the loader keeps "0644" so file modes stay octal
    from provisioner.yamlsrc import load_yaml

    path = tmp_path / "x.yml"
    path.write_text("mode: 0644\nport: 022\nplain: 22\nhex: 0x10\n")
    assert load_yaml(path, "test").data == {"mode": "0644", "port": "022", "plain": 22, "hex": 16}
    # and a port written as "022" still validates as 22
    inv = load_inventory(write(tmp_path, MINIMAL.replace("port: 2222", "port: 02222")))
    assert inv.connection_for("web2").port == 2222


def test_positions_fall_back_to_the_nearest_parent(tmp_path: Path) -> None:
    from provisioner.yamlsrc import load_yaml

    path = tmp_path / "x.yml"
    path.write_text("a:\n  b:\n    - c: 1\n      d: [x, y]\n")
    doc = load_yaml(path, "test")
    assert doc.where(("a", "b", 0, "d", 1)) == (4, 14)
    assert doc.where(("a", "b", "0", "c")) == (3, 10)
    assert doc.where(("a", "b", 0, "c"), prefer="key") == (3, 7)
    assert doc.where(("a", "b", 0, "nope", "deeper")) == (3, 7)
    assert doc.where(("zzz",)) == (1, 1)


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        hosts:
          web1: &web {address: 198.18.0.11, groups: [docker, web], user: deploy}
          web2:
            <<: *web
            address: 198.18.0.12
        kv_store:
          hosts: [web1]
        """,
    )
    inv = load_inventory(path)
    assert inv.hosts["web2"].groups == ["docker", "web"]
    assert inv.connection_for("web2").user == "deploy"
    assert inv.address_of("web2") == "198.18.0.12"


def test_kv_store_hosts_form_the_implicit_kv_store_group(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    inv = tmp_path / "inv.yml"
    inv.write_text(
        f"connection: {{private_key: {key}, host_key_policy: accept-new}}\n"
        "hosts:\n  s1: {address: 198.18.0.2}\n  d1: {address: 198.18.0.3, groups: [docker]}\n"
        "kv_store: {hosts: [s1]}\n"
    )
    loaded = load_inventory(inv)
    assert loaded.groups()["kv_store"] == ["s1"]
    assert loaded.resolve_pattern("kv_store") == ["s1"]
    inv.write_text(inv.read_text().replace("groups: [docker]", "groups: [kv_store]"))
    with pytest.raises(InputError, match=r"implicit group of kv_store\.hosts"):
        load_inventory(inv)
