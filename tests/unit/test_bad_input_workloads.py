"""Bad input in the networks and containers sections: exit 2 material, each with file:line, field and fix.

Every case is a whole inventory file; the problem must name the exact field and line, carry a fix, and
render without a traceback (the same checks as tests/unit/test_bad_input.py, whose helpers it uses).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.inventory import Inventory, load_inventory
from tests.unit.test_bad_input import Case, _find, _load

BASE = """\
hosts:
  h1: {address: 198.18.0.11, groups: [docker]}
  h2: {address: 198.18.0.12, groups: [docker]}
networks:
  net1: {driver: bridge, subnet: 198.19.2.0/24}
  mac1: {driver: macvlan, subnet: 198.19.3.0/24, parent: eth0}
"""
C = "containers:\n"  # line 7 of BASE + C; the first container is on line 8


def case(id: str, extra: str, field: str, line: int, message: str, fix: str) -> Case:
    return Case(id, "inventory", BASE + extra, field, line, message, fix)


CASES = [
    case("container-unknown-host", C + "  box: {host: h9, image: busybox}\n",
         "containers.box.host", 8, "unknown host 'h9'", "name a host defined under 'hosts'"),
    case("container-unknown-network", C + "  box: {host: h1, image: busybox, networks: [nett1]}\n",
         "containers.box.networks.nett1", 8, "unknown network 'nett1'", "did you mean 'net1'"),
    case("network-mode-and-networks", C + "  box: {host: h1, image: busybox, network_mode: none, networks: [net1]}\n",
         "containers.box.network_mode", 8, "exclude each other", "remove network_mode, or remove networks"),
    case("same-static-address", C + "  a1: {host: h1, image: busybox, networks: {mac1: {ipv4_address: 198.19.3.5}}}\n"
         "  a2: {host: h2, image: busybox, networks: {mac1: {ipv4_address: 198.19.3.5}}}\n",
         "containers.a2.networks.mac1.ipv4_address", 9, "also given to container a1", "its own address"),
    case("static-outside-subnet",
         C + "  a1: {host: h1, image: busybox, networks: {net1: {ipv4_address: 198.19.9.5}}}\n",
         "containers.a1.networks.net1.ipv4_address", 8, "outside net1's subnet 198.19.2.0/24", "inside 198.19.2.0/24"),
    # 198.19.3.0/24 in 8 slices of /27: h1 gets .32/27, h2 .64/27
    case("static-in-another-hosts-slice",
         C + "  a1: {host: h1, image: busybox, networks: {mac1: {ipv4_address: 198.19.3.70}}}\n",
         "containers.a1.networks.mac1.ipv4_address", 8, "lies in h2's address slice of mac1", "198.19.3.32/27"),
    case("host-port-twice", C + "  a1: {host: h1, image: httpd, ports: ['8080:80']}\n"
         "  a2: {host: h1, image: httpd, ports: ['127.0.0.1:8080:80']}\n",
         "containers.a2.ports[0]", 9, "host port 8080/tcp on h1 is already published by a1", "once per host"),
    case("host-port-twice-in-one", C + "  a1: {host: h1, image: httpd, ports: ['8080:80', '8080:81']}\n",
         "containers.a1.ports[1]", 8, "published twice", "once"),
    case("bad-port", C + "  a1: {host: h1, image: httpd, ports: ['80:http']}\n",
         "containers.a1.ports[0]", 8, "is not a published port", "HOST:CONTAINER"),
    case("macvlan-without-parent", "  mac2: {driver: macvlan, subnet: 198.19.4.0/24}\n",
         "networks.mac2.driver", 7, "needs 'parent'", "parent: eth0"),
    case("local-network-hosts-match-nothing", "  br2: {driver: bridge, subnet: 198.19.5.0/24, hosts: h7}\n",
         "networks.br2.hosts", 7, "'h7' is neither a host nor a group", "name hosts or groups"),
    case("ip-ranges-overlap", "  mac2: {driver: macvlan, subnet: 198.19.4.0/24, parent: eth1, "
         "ip_ranges: {h1: 198.19.4.0/25, h2: 198.19.4.64/26}}\n",
         "networks.mac2.ip_ranges.h2", 7, "overlaps 198.19.4.0/25 of h1", "a slice of its own"),
    case("ip-ranges-leave-subnet", "  mac2: {driver: macvlan, subnet: 198.19.4.0/24, parent: eth1, "
         "ip_ranges: {h1: 198.19.5.0/25}}\n",
         "networks.mac2.ip_ranges.h1", 7, "is not inside subnet 198.19.4.0/24", "inside 198.19.4.0/24"),
    case("two-macvlans-one-parent", "  mac2: {driver: macvlan, subnet: 198.19.4.0/24, parent: eth0}\n",
         "networks.mac2.parent", 7, "both sit on eth0 of h1", "eth0.50"),
    case("container-name-docker-refuses", C + "  b: {host: h1, image: busybox}\n",
         "containers.b", 8, "not a name Docker accepts", "rename it"),
    case("third-party-flannel", "  fl: {driver: flannel, subnet: 198.19.6.0/24}\n",
         "networks.fl.driver", 7, "flanneld is not packaged", "overlay (VXLAN"),
    case("third-party-weave", "  wv: {driver: weave, subnet: 198.19.6.0/24}\n",
         "networks.wv.driver", 7, "closed in 2024", "macvlan"),
    case("third-party-calico", "  ca: {driver: calico, subnet: 198.19.6.0/24}\n",
         "networks.ca.driver", 7, "dropped its Docker (libnetwork) plugin in v3.0", "ipvlan mode l3"),
    case("declared-default-bridge", "  bridge: {driver: bridge, subnet: 198.19.7.0/24}\n",
         "networks.bridge", 7, "Docker's own network", "another name"),
    case("container-on-a-network-not-on-its-host",
         "  br2: {driver: bridge, subnet: 198.19.5.0/24, hosts: h2}\n" + C
         + "  a1: {host: h1, image: x, networks: [br2]}\n",
         "containers.a1.networks.br2", 9, "network br2 is not on h1", "add h1 to networks.br2.hosts"),
    case("env-from-missing-variable", C + "  a1: {host: h1, image: x, env: {TOKEN: {from_env: PROV_TEST_UNSET_VAR}}}\n",
         "containers.a1.env.TOKEN", 8, "PROV_TEST_UNSET_VAR is not set", "export PROV_TEST_UNSET_VAR"),
    case("command-as-a-string", C + "  a1: {host: h1, image: x, command: sleep 1000}\n",
         "containers.a1.command", 8, "command must be a list", "['sleep', '1000']"),
    case("gateway-in-a-slice", "  mac2: {driver: macvlan, subnet: 198.19.4.0/24, gateway: 198.19.4.40, parent: eth1}\n",
         "networks.mac2.gateway", 7, "lies in h1's address slice 198.19.4.32/27", "move the gateway"),
]  # fmt: skip


@pytest.fixture()
def good_inventory(tmp_path: Path) -> Inventory:
    path = tmp_path / "good.yml"
    path.write_text(BASE)
    return load_inventory(path)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_workload_input(c: Case, tmp_path: Path, good_inventory: Inventory) -> None:
    err = _load(c, tmp_path, good_inventory)
    problem = _find(err.problems, c)
    assert problem.line == c.line, f"{c.id}: line {problem.line}, expected {c.line}\n{err}"
    assert c.fix.lower() in problem.fix.lower(), f"{c.id}: fix {problem.fix!r}"
    text = str(err)
    assert f"{problem.file}:{problem.line}" in text and "fix: " in text
    assert "Traceback" not in text and "pydantic" not in text.lower()


def test_a_whole_workload_inventory_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROV_TEST_SECRET", "s3cret")
    (tmp_path / "token").write_text("from-file\n")
    path = tmp_path / "inv.yml"
    path.write_text(BASE + C + """\
  box: {host: h1, image: busybox, command: [sleep, "3600"], networks: [net1, bridge]}
  httpd: {host: h1, image: httpd, ports: ["32773:80", "127.0.0.1:8081:80/udp"], restart: always}
  m1: {host: h1, image: busybox, networks: {mac1: {ipv4_address: 198.19.3.10, aliases: [m]}}}
  m2: {host: h2, image: busybox, networks: {mac1: {}}, env: {A: 1, B: {from_env: PROV_TEST_SECRET},
       C: {from_file: token}}}
  solo: {host: h2, image: busybox, network_mode: none}
""")
    inv = load_inventory(path)
    assert inv.containers["box"].networks.keys() == {"net1", "bridge"}
    assert [p.host_port for p in inv.containers["httpd"].ports] == [32773, 8081]
    assert inv.containers["m2"].env_values() == {"A": "1", "B": "s3cret", "C": "from-file"}
    assert inv.containers["m2"].secrets() == ["s3cret", "from-file"]
    assert {h: str(r) for h, r in inv.slices("mac1").items()} == {"h1": "198.19.3.32/27", "h2": "198.19.3.64/27"}
    # a host added at the end takes a new slice; the others keep theirs
    grown = inv.model_copy(update={"hosts": {**inv.hosts, "h3": inv.hosts["h2"].model_copy(update={"address": "x"})}})
    assert str(grown.slices("mac1")["h1"]) == "198.19.3.32/27" and str(grown.slices("mac1")["h3"]) == "198.19.3.96/27"
