"""Conflict detection on the lab subnet and leftover-mount discovery, on recorded kernel views."""

from __future__ import annotations

import ipaddress

import pytest

from provisioner.lab.safety import Conflict, NetView, conflict_error, find_conflicts, mounts_under, rule_as_save_line

NET = ipaddress.IPv4Network("198.18.0.0/24")
OURS = "plab-abc123"


def view(**kw: object) -> NetView:
    v = NetView()
    for k, val in kw.items():
        setattr(v, k, val)
    return v


def test_clean_machine_has_no_conflict() -> None:
    v = view(routes=[("192.0.2.0/24", "eth0")], addresses=[("eth0", "192.0.2.2/24")], links={"eth0": ""})
    assert find_conflicts(v, NET, "", OURS, []) == []


def test_own_bridge_route_and_address_are_not_conflicts() -> None:
    v = view(routes=[("198.18.0.0/24", OURS)], addresses=[(OURS, "198.18.0.1/24")], links={OURS: "bridge"})
    assert find_conflicts(v, NET, OURS, OURS, []) == []


def test_foreign_bridge_with_address_in_subnet_is_refused_with_delete_command() -> None:
    v = view(
        routes=[("198.18.0.0/24", "br-1234")],
        addresses=[("br-1234", "198.18.0.1/24")],
        links={"br-1234": "bridge"},
    )
    conflicts = find_conflicts(v, NET, "", OURS, [])
    assert conflicts == [Conflict("interface br-1234 (bridge) has 198.18.0.1/24", ("ip link delete br-1234",))]
    text = str(conflict_error(NET, conflicts, docker_hint=True))
    assert "already in use" in text and "ip link delete br-1234" in text and "docker network rm" in text


def test_overlapping_route_without_address_is_refused() -> None:
    v = view(routes=[("198.18.0.0/16", "tun0")], links={"tun0": "tun"})
    (c,) = find_conflicts(v, NET, "", OURS, [])
    assert c.cleanup == ("ip route del 198.18.0.0/16 dev tun0",)


def test_unrecorded_bridge_with_our_name_is_stale() -> None:
    v = view(links={OURS: "bridge"})
    (c,) = find_conflicts(v, NET, "", OURS, [])
    assert "does not record" in c.what and c.cleanup == (f"ip link delete {OURS}",)


@pytest.mark.parametrize(
    ("rule", "conflict"),
    [
        ("-A POSTROUTING -s 198.18.0.0/24 ! -o br-x -j MASQUERADE", True),
        ("-A POSTROUTING -s 198.18.0.128/25 -j MASQUERADE", True),
        ("-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE", False),
        ("-A DOCKER -i br-x -j RETURN", False),
    ],
)
def test_masquerade_rules_on_the_subnet(rule: str, conflict: bool) -> None:
    conflicts = find_conflicts(view(nat_rules=[rule]), NET, "", OURS, [])
    assert bool(conflicts) is conflict
    if conflict:
        assert conflicts[0].cleanup == ("iptables -t nat -D " + rule[3:],)
    # a rule the lab recorded as its own is not a conflict
    assert find_conflicts(view(nat_rules=[rule]), NET, "", OURS, [rule]) == []


def test_rule_as_save_line_matches_iptables_S() -> None:
    rule = ["-t", "filter", "FORWARD", "-i", OURS, "-o", OURS, "-j", "ACCEPT"]
    assert rule_as_save_line(rule) == f"-A FORWARD -i {OURS} -o {OURS} -j ACCEPT"


def test_mounts_under_root_deepest_first_with_escapes() -> None:
    info = "\n".join(
        [
            "22 1 254:0 / / rw - ext4 /dev/vda rw",
            "42 27 254:0 /x /var/lib/provisioner/lab/docker rw - ext4 /dev/vda rw",
            "43 42 0:50 / /var/lib/provisioner/lab/docker/overlay2/abc/merged rw - overlay overlay rw",
            "44 27 0:4 net:[1] /var/lib/provisioner/lab/run/netns/a\\040b rw - nsfs nsfs rw",
            "45 27 0:4 / /var/lib/provisioner/lab-other/run rw - tmpfs tmpfs rw",
        ]
    )
    roots = ["/var/lib/provisioner/lab/docker", "/var/lib/provisioner/lab/run"]
    assert mounts_under(roots, info) == [
        "/var/lib/provisioner/lab/docker/overlay2/abc/merged",
        "/var/lib/provisioner/lab/run/netns/a b",
        "/var/lib/provisioner/lab/docker",
    ]
