"""Bad-input corpus: every user mistake becomes an InputError naming file, line, field and a fix.

Each case is a YAML text (line numbers in the expectations refer to it), what kind of file it is, and
what the first matching problem must say. Playbook cases run against GOOD_INVENTORY.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.errors import InputError, Problem
from provisioner.inventory import Inventory, load_inventory
from provisioner.modules.base import Module, ModuleArgs, NoOp, Plan, PlanContext
from provisioner.playbook import load_playbook

GOOD_INVENTORY = """\
hosts:
  consul: {address: 192.168.115.20, groups: [kv]}
  host1: {address: 192.168.115.21, groups: [docker]}
  host2: {address: 192.168.115.22, groups: [docker]}
kv_store:
  hosts: [consul]
"""


class EchoArgs(ModuleArgs):
    message: str
    times: int = 1
    level: Literal["info", "warn"] = "info"


class Echo(Module[EchoArgs]):
    name = "echo"
    Args = EchoArgs

    def plan(self, ctx: PlanContext, args: EchoArgs) -> Plan:
        return NoOp("test module")


class PingArgs(ModuleArgs):
    pass


class Ping(Module[PingArgs]):
    name = "ping"
    Args = PingArgs

    def plan(self, ctx: PlanContext, args: PingArgs) -> Plan:
        return NoOp("test module")


MODULES: dict[str, type[Module[Any]]] = {"echo": Echo, "ping": Ping}


@dataclass
class Case:
    id: str
    kind: Literal["inventory", "playbook"]
    text: str | bytes
    field: str  # the problem's field must equal this
    line: int | None
    message: str  # substring of the message (case-insensitive)
    fix: str = ""  # substring of the fix hint (case-insensitive); every problem must have some fix
    column: int | None = None


def inv(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def pb(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


CASES = [
    # ---------------------------------------------------------------- file level
    Case("empty-file", "inventory", "", "", 1, "inventory file is empty", "inventories/example.yml"),
    Case("only-comments", "inventory", "# nothing yet\n\n", "", 1, "is empty"),
    Case("top-level-list", "inventory", "- host1\n- host2\n", "", 1, "must be a mapping", "connection:"),
    Case("not-utf8", "inventory", b"hosts:\n  h\xe9: {address: 10.1.1.1}\n", "", 2, "not valid UTF-8", "utf-8",
         column=4),
    Case("yaml-syntax-error", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21
        kv_store:
          hosts: [host1]
        """), "", 3, "YAML syntax error"),
    Case("tab-indentation", "inventory", "hosts:\n\thost1: {address: 10.1.1.1}\n", "", 2, "tab", "spaces"),
    Case("duplicate-host-key", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
          host2: {address: 192.168.115.22}
          host1: {address: 192.168.115.23}
        kv_store:
          hosts: [host1]
        """), "", 4, "duplicate key 'host1'", "remove or rename", column=3),
    Case("two-documents", "inventory", "hosts: {}\n---\nhosts: {}\n", "", 2, "more than one YAML document", "---"),
    Case("unsupported-tag", "inventory", "hosts:\n  h: {address: !weird 10.1.1.1}\nkv_store: {hosts: [h]}\n",
         "hosts.h.address", 2, "unsupported YAML tag '!weird'", "remove the tag", column=16),
    Case("mapping-as-key", "inventory", "hosts:\n  ? {a: 1}\n  : {address: 10.1.1.1}\n", "hosts", 2,
         "unsupported YAML construct", "plain text as keys"),
    # found by fuzzing: the YAML parser itself raised TypeError here
    Case("parser-trips-on-complex-key", "inventory", "networks:\nnetworks:\n ? n1: {subnet: 10.0.0.0/24}\n", "", None,
         "unsupported YAML construct", "plain text as keys"),
    # ---------------------------------------------------------------- inventory keys and values
    Case("unknown-key-typo", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21, grups: [docker]}
        kv_store:
          hosts: [host1]
        """), "hosts.host1.grups", 2, "unknown key 'grups'", "did you mean 'groups'", column=36),
    Case("unknown-top-level-key", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        netwroks: {}
        """), "netwroks", 5, "unknown key", "did you mean 'networks'", column=1),
    Case("missing-kv-store", "inventory",
         "hosts:\n  host1: {address: 192.168.115.21}\nnetworks:\n  ov_net1: {subnet: 10.0.0.0/24}\n",
         "networks.ov_net1.driver", 4, "needs Docker's cluster store, and the inventory has no kv_store",
         "add kv_store: {backend: etcd, hosts: [HOST]}"),
    Case("lock-host-unknown", "inventory",
         "hosts:\n  host1: {address: 192.168.115.21}\nlock: {host: hots1}\n",
         "lock.host", 3, "unknown host 'hots1'", "did you mean 'host1'?"),
    Case("docker-group-unknown", "inventory",
         "hosts:\n  host1: {address: 192.168.115.21, groups: [web]}\ndocker: {group: dockr}\n",
         "docker.group", 3, "'dockr' is neither a host nor a group", "name a group"),
    Case("missing-address", "inventory", inv("""
        hosts:
          host1:
            groups: [docker]
        kv_store:
          hosts: [host1]
        """), "hosts.host1", 2, "missing required key 'address'", "add 'address: ...'"),
    Case("bad-ip", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.300}
        kv_store:
          hosts: [host1]
        """), "hosts.host1.address", 2, "not a valid IPv4 address", "0-255", column=20),
    Case("bad-ipv6", "inventory", inv("""
        hosts:
          host1: {address: "2001:db8::zz"}
        kv_store:
          hosts: [host1]
        """), "hosts.host1.address", 2, "not a valid IPv6 address", "2001:db8::21"),
    Case("address-with-port", "inventory", inv("""
        hosts:
          host1: {address: "myhost 22"}
        kv_store:
          hosts: [host1]
        """), "hosts.host1.address", 2, "neither an IP address nor a valid DNS name", "no spaces or ports"),
    Case("duplicate-address", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
          host2: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        """), "hosts.host2.address", 3, "also used by host 'host1'", "its own address"),
    Case("unsafe-host-name", "inventory", inv("""
        hosts:
          "host;rm -rf /": {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        """), "hosts.host;rm -rf /", 2, "unsafe host name", "rename it", column=3),
    Case("unsafe-group-name", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21, groups: ["web servers"]}
        kv_store:
          hosts: [host1]
        """), "hosts.host1.groups[0]", 2, "unsafe group name", "web-servers"),
    Case("no-hosts", "inventory", "hosts: {}\nkv_store:\n  hosts: [host1]\n", "hosts", 1, "no hosts defined",
         "add at least one host"),
    Case("host-named-all", "inventory", inv("""
        hosts:
          all: {address: 192.168.115.21}
        kv_store:
          hosts: [all]
        """), "hosts.all", 2, "'all' is reserved", "rename"),
    Case("port-70000", "inventory", inv("""
        connection:
          port: 70000
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        """), "connection.port", 2, "port 70000 is out of range", "between 1 and 65535", column=9),
    Case("port-not-a-number", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21, port: ssh}
        kv_store:
          hosts: [host1]
        """), "hosts.host1.port", 2, "whole number", "between 1 and 65535"),
    Case("bad-enum-backend", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          backend: redis
          hosts: [host1]
        """), "kv_store.backend", 4, "'redis' is not allowed", "consul, etcd, zookeeper", column=12),
    Case("enum-typo-policy", "inventory", inv("""
        connection:
          host_key_policy: accept_new
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        """), "connection.host_key_policy", 2, "not allowed", "did you mean 'accept-new'"),
    Case("even-kv-count", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
          host2: {address: 192.168.115.22}
        kv_store:
          hosts: [host1, host2]
        """), "kv_store.hosts", 5, "odd number", "add or remove one host"),
    Case("duplicate-kv-host", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
          host2: {address: 192.168.115.22}
        kv_store:
          hosts: [host1, host2, host1]
        """), "kv_store.hosts", 5, "listed twice: host1", "once"),
    Case("unknown-kv-host", "inventory", inv("""
        hosts:
          consul: {address: 192.168.115.20}
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [consol]
        """), "kv_store.hosts[0]", 5, "unknown host 'consol'", "did you mean 'consul'", column=11),
    Case("empty-kv-hosts", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: []
        """), "kv_store.hosts", 4, "empty", "name the host"),
    Case("missing-key-file", "inventory", inv("""
        connection:
          private_key: keys/missing_ed25519
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        """), "connection.private_key", 2, "keys/missing_ed25519 does not exist", "ssh-keygen"),
    Case("strict-without-known-hosts", "inventory", inv("""
        connection:
          known_hosts: nowhere/known_hosts
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        """), "connection.known_hosts", 2, "does not exist and host_key_policy is strict",
         "ssh-keyscan -H 192.168.115.21"),
    Case("missing-image-archive", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
          image_archive: consul.tar
        """), "kv_store.image_archive", 5, "consul.tar does not exist", "docker save"),
    Case("cidr-host-bits", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        networks:
          ov_net1: {subnet: 10.0.0.1/24}
        """), "networks.ov_net1.subnet", 6, "host bits set", "did you mean 10.0.0.0/24"),
    Case("cidr-no-prefix", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        networks:
          ov_net1: {subnet: 10.0.0.0}
        """), "networks.ov_net1.subnet", 6, "not a network in CIDR notation", "10.0.0.0/24"),
    Case("overlapping-subnets", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        networks:
          ov_net1: {subnet: 10.0.0.0/16}
          ov_net2: {subnet: 10.0.5.0/24}
        """), "networks.ov_net2.subnet", 7, "overlaps 10.0.0.0/16 of network 'ov_net1'", "non-overlapping"),
    Case("gateway-outside-subnet", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        networks:
          ov_net1:
            subnet: 10.0.0.0/24
            gateway: 10.0.1.1
        """), "networks.ov_net1.gateway", 8, "outside subnet 10.0.0.0/24", "10.0.0.1", column=14),
    Case("ip-range-outside-subnet", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        networks:
          ov_net1: {subnet: 10.0.0.0/24, ip_range: 10.0.0.0/23}
        """), "networks.ov_net1.ip_range", 6, "not inside subnet", "inside 10.0.0.0/24"),
    Case("unsafe-network-name", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        networks:
          "ov net$(id)": {subnet: 10.0.0.0/24}
        """), "networks.ov net$(id)", 6, "unsafe network name", "rename it"),
    Case("interface-too-long", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21, advertise_interface: enp0s31f6verylong0}
        kv_store:
          hosts: [host1]
        """), "hosts.host1.advertise_interface", 2, "Linux allows at most 15", "ip -br link"),
    Case("parent-on-overlay", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        networks:
          ov_net1: {subnet: 10.0.0.0/24, parent: eth0}
        """), "networks.ov_net1.parent", 6, "only applies to macvlan", "driver: macvlan"),
    Case("bad-mirror-url", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        docker:
          registry_mirrors: [mirror.example.com]
        """), "docker.registry_mirrors[0]", 6, "not an http(s) URL", "https://"),
    Case("relative-dropin", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21}
        kv_store:
          hosts: [host1]
        docker:
          dropin: docker.conf
        """), "docker.dropin", 6, "not an absolute path", "/etc/"),
    Case("hosts-is-a-list", "inventory", inv("""
        hosts:
          - host1
        kv_store:
          hosts: [host1]
        """), "hosts", 2, "expected a mapping", "key: value"),
    Case("password-not-echoed", "inventory", inv("""
        hosts:
          host1: {address: 192.168.115.21, password: 123456}
        kv_store:
          hosts: [host1]
        """), "hosts.host1.password", 2, "expected text", "quote"),
    # ---------------------------------------------------------------- playbooks
    Case("pb-empty", "playbook", "\n", "", 1, "playbook file is empty", "list of plays"),
    Case("pb-top-level-mapping", "playbook", "hosts: all\ntasks: []\n", "", 1, "must be a list", "list of plays"),
    Case("pb-unknown-module", "playbook", pb("""
        - hosts: all
          tasks:
            - name: say hi
              ehco: {message: hi}
        """), "[0].tasks[0].ehco", 4, "unknown module 'ehco'", "did you mean 'echo'", column=7),
    Case("pb-two-modules", "playbook", pb("""
        - hosts: all
          tasks:
            - echo: {message: hi}
              ping:
        """), "[0].tasks[0].ping", 4, "two modules", "one task per module"),
    Case("pb-no-module", "playbook", pb("""
        - hosts: all
          tasks:
            - name: nothing to do
        """), "[0].tasks[0]", 3, "task has no module", "echo, ping"),
    Case("pb-bad-module-arg", "playbook", pb("""
        - hosts: all
          tasks:
            - echo:
                message: hi
                times: many
        """), "[0].tasks[0].echo.times", 5, "whole number", "without quotes", column=16),
    Case("pb-module-arg-typo", "playbook", pb("""
        - hosts: all
          tasks:
            - echo:
                mesage: hi
        """), "[0].tasks[0].echo.mesage", 4, "unknown key 'mesage'", "did you mean 'message'"),
    Case("pb-missing-module-arg", "playbook", pb("""
        - hosts: all
          tasks:
            - echo: {times: 2}
        """), "[0].tasks[0].echo", 3, "missing required key 'message'", "add 'message: ...'"),
    Case("pb-module-arg-enum", "playbook", pb("""
        - hosts: all
          tasks:
            - echo: {message: hi, level: debug}
        """), "[0].tasks[0].echo.level", 3, "'debug' is not allowed", "info, warn"),
    Case("pb-args-not-mapping", "playbook", pb("""
        - hosts: all
          tasks:
            - echo: hello there
        """), "[0].tasks[0].echo", 3, "must be a mapping", "message"),
    Case("pb-templating", "playbook", pb("""
        - hosts: all
          tasks:
            - echo: {message: "{{ inventory_hostname }}"}
        """), "[0].tasks[0].echo.message", 3, "templating", "literally"),
    Case("pb-notify-unknown-handler", "playbook", pb("""
        - hosts: all
          tasks:
            - echo: {message: hi}
              notify: restart dokcer
          handlers:
            - name: restart docker
              ping:
        """), "[0].tasks[0].notify", 4, "unknown handler 'restart dokcer'", "did you mean 'restart docker'"),
    Case("pb-notify-list-item", "playbook", pb("""
        - hosts: all
          tasks:
            - echo: {message: hi}
              notify: [restart docker, reload]
          handlers:
            - name: restart docker
              ping:
        """), "[0].tasks[0].notify[1]", 4, "unknown handler 'reload'", "'restart docker'"),
    Case("pb-duplicate-handler", "playbook", pb("""
        - hosts: all
          handlers:
            - name: restart
              ping:
            - name: restart
              ping:
        """), "[0].handlers[1]", 5, "used twice", "own name"),
    Case("pb-pattern-matches-nothing", "playbook", pb("""
        - hosts: "!all"
          tasks:
            - ping:
        """), "[0].hosts", 1, "matches no host", "groups: all, kv_store, kv, docker"),
    Case("pb-unknown-group", "playbook", pb("""
        - name: web
          hosts: webservers
          tasks:
            - ping:
        """), "[0].hosts", 2,
         "'webservers' is neither a host nor a group (hosts: consul, host1, host2", "a group or host names"),
    Case("pb-bad-when", "playbook", pb("""
        - hosts: all
          tasks:
            - ping:
              when: docker.active = true
        """), "[0].tasks[0].when", 4, "'=' is not an operator", "docker.server_version"),
    Case("pb-serial-zero", "playbook", pb("""
        - hosts: all
          serial: 0
          tasks:
            - ping:
        """), "[0].serial", 2, "serial 0", "1 or more"),
    Case("pb-serial-150-percent", "playbook", pb("""
        - hosts: all
          serial: 150%
          tasks:
            - ping:
        """), "[0].serial", 2, "not a percentage between 1% and 100%", "25%"),
    Case("pb-unknown-play-key", "playbook", pb("""
        - hosts: all
          gather_facts: false
          tasks:
            - ping:
        """), "[0].gather_facts", 2, "unknown key 'gather_facts'", "allowed keys here: name, hosts, serial"),
    Case("pb-play-key-typo", "playbook", pb("""
        - hosts: all
          taks:
            - ping:
        """), "[0].taks", 2, "unknown key 'taks'", "did you mean 'tasks'"),
    Case("pb-task-key-typo", "playbook", pb("""
        - hosts: all
          tasks:
            - nmae: ping them
              ping:
        """), "[0].tasks[0].nmae", 3, "unknown task key 'nmae'", "did you mean 'name'"),
    Case("pb-missing-hosts", "playbook", pb("""
        - name: no hosts
          tasks:
            - ping:
        """), "[0]", 1, "missing required key 'hosts'", "add 'hosts: ...'"),
    Case("pb-max-fail-percentage", "playbook", pb("""
        - hosts: all
          max_fail_percentage: 120
          tasks:
            - ping:
        """), "[0].max_fail_percentage", 2, "at most 100", "100 or less"),
    Case("pb-play-not-mapping", "playbook", "- just a string\n", "[0]", 1, "a play must be a mapping", "hosts:"),
    Case("pb-task-not-mapping", "playbook", pb("""
        - hosts: all
          tasks:
            - ping
        """), "[0].tasks[0]", 3, "a task must be a mapping", "write '- ping:'"),
    Case("pb-run-once-not-bool", "playbook", pb("""
        - hosts: all
          tasks:
            - ping:
              run_once: sometimes
        """), "[0].tasks[0].run_once", 4, "true or false", "write true or false"),
    Case("pb-handler-notifies", "playbook", pb("""
        - hosts: all
          handlers:
            - name: a
              ping:
              notify: b
            - name: b
              ping:
        """), "[0].handlers[0].notify", 5, "cannot notify", "notify both"),
]


@pytest.fixture
def good_inventory(tmp_path: Path) -> Inventory:
    path = tmp_path / "inventory.yml"
    path.write_text(GOOD_INVENTORY)
    return load_inventory(path)


def _load(case: Case, tmp_path: Path, inventory: Inventory) -> InputError:
    name = "inventory.yml" if case.kind == "inventory" else "playbook.yml"
    path = tmp_path / "case" / name
    path.parent.mkdir()
    if isinstance(case.text, bytes):
        path.write_bytes(case.text)
    else:
        path.write_text(case.text)
    try:
        if case.kind == "inventory":
            load_inventory(path)
        else:
            load_playbook(path, inventory, modules=MODULES)
    except InputError as exc:
        for p in exc.problems:
            assert p.file == str(path)
        return exc
    # any other exception type propagates and fails the test with its traceback
    pytest.fail(f"{case.id}: no InputError raised")


def _find(problems: list[Problem], case: Case) -> Problem:
    for p in problems:
        if p.field == case.field and case.message.lower() in p.message.lower():
            return p
    pytest.fail(f"{case.id}: no problem with field {case.field!r} and message ~{case.message!r}; got:\n"
                + "\n".join(f"  {p.field!r}: {p.message}" for p in problems))


def test_corpus_is_large_enough() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.kind == "inventory" for c in CASES) >= 15
    assert sum(c.kind == "playbook" for c in CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, good_inventory: Inventory) -> None:
    err = _load(case, tmp_path, good_inventory)
    problem = _find(err.problems, case)
    assert problem.line == case.line, f"{case.id}: line {problem.line}, expected {case.line}\n{err}"
    if case.column is not None:
        assert problem.column == case.column, f"{case.id}: column {problem.column}, expected {case.column}\n{err}"
    assert problem.fix, f"{case.id}: no fix hint\n{err}"
    assert case.fix.lower() in problem.fix.lower(), f"{case.id}: fix {problem.fix!r}"
    for p in err.problems:
        assert p.fix, f"{case.id}: a problem without a fix: {p}"
    # the rendered text the CLI prints carries the location and the fix
    text = str(err)
    where = problem.file if problem.line is None else f"{problem.file}:{problem.line}"
    assert where in text and "fix: " in text
    assert "Traceback" not in text and "pydantic" not in text.lower()


def test_password_value_is_not_echoed(tmp_path: Path, good_inventory: Inventory) -> None:
    case = next(c for c in CASES if c.id == "password-not-echoed")
    err = _load(case, tmp_path, good_inventory)
    assert "123456" not in str(err)


def test_all_problems_of_a_file_are_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yml"
    path.write_text(inv("""
        connection:
          port: 0
        hosts:
          host1: {address: 300.1.1.1, grups: [a]}
          "bad name": {address: 192.168.115.22}
        kv_store:
          backend: redis
          hosts: [host1]
        networks:
          n1: {subnet: 10.0.0.1/24}
        verify:
          ping_count: 0
        """))
    with pytest.raises(InputError) as info:
        load_inventory(path)
    fields = [p.field for p in info.value.problems]
    assert fields == [
        "connection.port",
        "hosts.host1.address",
        "hosts.host1.grups",
        "hosts.bad name",
        "kv_store.backend",
        "networks.n1.subnet",
        "verify.ping_count",
    ]
    assert [p.line for p in info.value.problems] == [2, 4, 4, 5, 7, 10, 12]


def test_playbook_reports_problems_of_every_play(tmp_path: Path, good_inventory: Inventory) -> None:
    path = tmp_path / "playbook.yml"
    path.write_text(pb("""
        - hosts: nosuch
          tasks:
            - ehco: {message: hi}
        - hosts: docker
          serial: 0
          tasks:
            - echo: {message: hi, times: x}
              when: "not"
        """))
    with pytest.raises(InputError) as info:
        load_playbook(path, good_inventory, modules=MODULES)
    got = [(p.field, p.line) for p in info.value.problems]
    assert got == [
        ("[0].hosts", 1),
        ("[0].tasks[0].ehco", 3),
        ("[1].serial", 5),
    ]


def test_second_play_checked_when_first_is_fine(tmp_path: Path, good_inventory: Inventory) -> None:
    path = tmp_path / "playbook.yml"
    path.write_text(pb("""
        - hosts: docker
          tasks:
            - echo: {message: hi}
        - hosts: kv
          tasks:
            - echo: {message: hi, times: x}
              when: "not"
        """))
    with pytest.raises(InputError) as info:
        load_playbook(path, good_inventory, modules=MODULES)
    got = [(p.field, p.line) for p in info.value.problems]
    assert got == [("[1].tasks[0].echo.times", 6), ("[1].tasks[0].when", 7)]


@pytest.mark.parametrize(
    "path",
    ["does/not/exist.yml", "."],
    ids=["missing-file", "directory"],
)
def test_unreadable_paths(path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as info:
        load_inventory(path)
    (problem,) = info.value.problems
    assert problem.file == path
    assert problem.fix
    assert "not found" in problem.message or "directory" in problem.message


# ---------------------------------------------------------------------------------------------------
# mutation fuzzing: whatever the edit, the only possible failure is an InputError

FUZZ_PLAYBOOK = """\
- name: main
  hosts: [docker, "!host2"]
  serial: 1
  tasks:
    - name: hello
      echo: {message: hi, times: 2}
      notify: again
      when: docker.server_version >= "20.10"
    - ping:
  handlers:
    - name: again
      ping: null
"""

_TOKENS = [":", " ", "\t", "-", "- ", "'", '"', "{", "}", "[", "]", ",", "#", "&a", "*a", "!x", "<<: *a", "\n",
           "  ", "?", "|", ">", "%", "@", "`", "0", "-1", "999999", "null", "true", "1.5", "\x00", "é", "all"]

_edit = st.tuples(st.sampled_from(["insert", "delete", "replace", "dup-line"]), st.floats(0, 1), st.integers(1, 6),
                  st.sampled_from(_TOKENS))


def _mutate(text: str, edits: list[tuple[str, float, int, str]]) -> str:
    for kind, where, size, token in edits:
        pos = int(where * len(text))
        if kind == "insert":
            text = text[:pos] + token + text[pos:]
        elif kind == "delete":
            text = text[:pos] + text[pos + size:]
        elif kind == "replace":
            text = text[:pos] + token + text[pos + size:]
        else:
            lines = text.splitlines(keepends=True)
            if lines:
                i = min(int(where * len(lines)), len(lines) - 1)
                lines.insert(i, lines[i])
                text = "".join(lines)
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(_edit, min_size=1, max_size=4), which=st.sampled_from(["inventory", "playbook"]))
def test_mutations_only_raise_input_errors(
    edits: list[tuple[str, float, int, str]], which: str, tmp_path: Path, good_inventory: Inventory
) -> None:
    base = GOOD_INVENTORY + "networks:\n  n1: {subnet: 10.0.0.0/24, gateway: 10.0.0.1}\n"
    text = _mutate(base if which == "inventory" else FUZZ_PLAYBOOK, edits)
    path = tmp_path / f"fuzz-{which}.yml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        if which == "inventory":
            load_inventory(path)
        else:
            load_playbook(path, good_inventory, modules=MODULES)
    except InputError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.message and p.fix, p
            assert p.line is None or p.line >= 1
            assert p.column is None or p.column >= 1
