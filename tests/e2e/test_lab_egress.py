"""Nothing from the lab leaves this machine (issue 14, deliverable 6).

Lab hosts route every address that is not on the lab through the lab bridge to this machine. Where this
machine forwards, a probe that aims outside (a NAT-out check, an isolation check aiming at an address that
must not answer) would leave through the machine's uplink, un-NATed. The lab's own rule (mangle FORWARD,
in from its bridge, out to any other interface: DROP) must stop every such packet here.

The probes aim at 198.51.100.1 (TEST-NET-2, RFC 5737: documentation only, routed nowhere), so even if
this test fails, what it sends can never reach anything real.

To see the rule at work rather than the kernel's own refusal, the test lets this machine forward packets
received on *this lab's bridge only* (net.ipv4.conf.<bridge>.forwarding=1, put back afterwards; every
other interface, other labs' bridges included, keeps its setting). Counters (test-owned rules without a
target, so they only count) prove each step: the probes arrived on the bridge (mangle PREROUTING), the
lab's DROP rule counted them, and nothing addressed to the target passed mangle POSTROUTING (the last
hook before a packet is handed to an interface) on the uplink or on any other interface.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.lab import LabInfo, lab_down, lab_up
from provisioner.lab.core import egress_rule
from provisioner.lab.paths import lab_id
from tests.e2e.labkit import lab_sh

pytestmark = pytest.mark.e2e

STATE_DIR = Path("/var/lib/provisioner/h14t-egress")
SUBNET = "198.18.95.0/24"
TARGET = "198.51.100.1"  # TEST-NET-2: documentation only; never reachable, even if the rule fails
PROBES = 3


def ipt(*args: str) -> str:
    done = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"iptables {' '.join(args)}: {done.stderr}"
    return done.stdout


def counter(table: str, chain: str, marker: str) -> int:
    """Packets counted by the one rule of `table chain` whose -S line contains `marker`."""
    lines = [line for line in ipt("-t", table, "-S", chain, "-v").splitlines() if marker in line]
    assert len(lines) == 1, f"expected one rule with {marker!r} in {table} {chain}, found: {lines}"
    m = re.search(r" -c (\d+) \d+", lines[0])
    assert m, lines[0]
    return int(m.group(1))


def uplink() -> str:
    """The interface this machine would send TARGET's packets out of (its default route)."""
    out = subprocess.run(["ip", "-j", "route", "get", TARGET], capture_output=True, text=True, check=False)
    routes = json.loads(out.stdout or "[]")
    if not routes:
        pytest.skip(f"this machine has no route to {TARGET}: nothing could leave through an uplink")
    return str(routes[0]["dev"])


@pytest.fixture(scope="module")
def lab() -> Iterator[LabInfo]:
    lab_down(state_dir=STATE_DIR, keep_image=True)
    try:
        yield lab_up(hosts=2, subnet=SUBNET, state_dir=STATE_DIR)
    finally:
        lab_down(state_dir=STATE_DIR, keep_image=True)


@contextlib.contextmanager
def forwarding_on(bridge: str) -> Iterator[None]:
    knob = Path(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding")
    before = knob.read_text().strip()
    knob.write_text("1\n")
    try:
        yield
    finally:
        knob.write_text(before + "\n")


@contextlib.contextmanager
def counting_rules(rules: list[list[str]]) -> Iterator[None]:
    """Test-owned rules without a target: they count packets and change nothing."""
    added: list[list[str]] = []
    try:
        for rule in rules:
            ipt("-t", rule[0], "-I", rule[1], *rule[2:])
            added.append(rule)
        yield
    finally:
        for rule in added:
            ipt("-t", rule[0], "-D", rule[1], *rule[2:])


def on_host(info: LabInfo, address: str, cmd: str, stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`cmd` on a lab host over SSH (the lab key, strict host keys), optionally fed a local file."""
    with contextlib.ExitStack() as stack:
        fh = stack.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
        return subprocess.run(
            ["ssh", "-i", str(info.key_path), "-o", f"UserKnownHostsFile={info.known_hosts_path}",
             "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "GlobalKnownHostsFile=/dev/null",
             f"root@{address}", cmd],
            stdin=fh, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip


def probe_outside(info: LabInfo, address: str) -> None:
    """From a container on the lab host's default bridge (NATed out of the host, as a NAT-out check is),
    then from the lab host itself: ICMP and a TCP connect to TARGET. None may get an answer."""
    for cmd in (
        f"docker run --rm provisioner-lab/probe:latest ping -c {PROBES} -W 1 {TARGET}",
        f"docker run --rm provisioner-lab/probe:latest nc -w 1 {TARGET} 80",
        f"ping -c {PROBES} -W 1 {TARGET}",
    ):
        done = on_host(info, address, cmd)
        assert done.returncode != 0, f"{address}: `{cmd}` got an answer from {TARGET}: {done.stdout}"


def count_rule(table: str, chain: str, mark: str, *spec: str) -> list[str]:
    return [table, chain, *spec, "-m", "comment", "--comment", mark]


def test_the_egress_rule_is_in_place_before_any_probe(lab: LabInfo) -> None:
    bridge = f"plab-{lab_id(STATE_DIR)}"
    rule = egress_rule(bridge, lab_id(STATE_DIR))
    ipt("-t", rule[1], "-C", *rule[2:])  # fails (exit 1) when the rule is missing
    recorded = json.loads((STATE_DIR / "state.json").read_text())["iptables_rules"]
    assert rule in recorded, recorded


def test_a_probe_from_a_lab_container_never_reaches_the_uplink(lab: LabInfo) -> None:
    lid = lab_id(STATE_DIR)
    bridge, out_dev = f"plab-{lid}", uplink()
    mark = f"h14t-egress-{os.getpid()}"
    arrived = count_rule("mangle", "PREROUTING", f"{mark} arrived", "-i", bridge, "-d", TARGET)
    on_uplink = count_rule("mangle", "POSTROUTING", f"{mark} up", "-o", out_dev, "-d", TARGET)
    anywhere = count_rule("mangle", "POSTROUTING", f"{mark} any", "-d", TARGET)
    drop_marker = f"provisioner lab {lid}: no lab packet leaves this machine"
    _lab1, lab1_addr = lab.hosts[0]
    name, address = lab.hosts[1]
    loaded = on_host(lab, address, "docker load -q", stdin=lab.archives["probe"])
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    with counting_rules([arrived, on_uplink, anywhere]), forwarding_on(bridge):
        dropped_before = counter("mangle", "FORWARD", drop_marker)
        probe_outside(lab, address)
        time.sleep(0.5)
        got = counter("mangle", "PREROUTING", f"{mark} arrived")
        dropped = counter("mangle", "FORWARD", drop_marker) - dropped_before
        left_uplink = counter("mangle", "POSTROUTING", f"{mark} up")
        left_anywhere = counter("mangle", "POSTROUTING", f"{mark} any")
    print(f"\n{name} -> {TARGET}: {got} packets arrived on {bridge}, {dropped} dropped by the lab's rule, "
          f"{left_uplink} passed to the uplink {out_dev}, {left_anywhere} to any interface")  # fmt: skip
    # the probes did reach this machine (ping: 2 x PROBES echo requests; nc: at least one SYN)
    assert got >= 2 * PROBES + 1, f"only {got} probe packets arrived on {bridge}: the probe did not run"
    assert dropped >= got, f"the lab's rule dropped {dropped} of the {got} probe packets"
    assert left_uplink == 0 and left_anywhere == 0, f"{left_uplink} packets to {TARGET} left through {out_dev}"
    # lab traffic itself still flows: the lab host reaches the kv host over the bridge
    lab_sh(STATE_DIR, name, f"ping -c 1 -W 2 {lab1_addr}")


def test_the_counters_see_a_leak_when_the_rule_is_bypassed(lab: LabInfo) -> None:
    """The measurement above can fail: with an ACCEPT placed before the lab's rule, the same probe is
    forwarded and counted on its way out. The way out is a sink, a bridge without ports (it discards
    everything), routed for TARGET only while this test runs, so even here nothing reaches the uplink."""
    lid = lab_id(STATE_DIR)
    bridge, sink, mark = f"plab-{lid}", f"h14sink{os.getpid() % 10000}", f"h14t-egress-{os.getpid()}"
    name, address = lab.hosts[1]
    subprocess.run(["ip", "link", "add", sink, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", sink, "up"], check=True)
        subprocess.run(["ip", "route", "add", f"{TARGET}/32", "dev", sink], check=True)
        bypass = count_rule("mangle", "FORWARD", f"{mark} bypass", "-i", bridge, "-o", sink, "-d", TARGET)
        out_sink = count_rule("mangle", "POSTROUTING", f"{mark} sink", "-o", sink, "-d", TARGET)
        with counting_rules([out_sink]), forwarding_on(bridge):
            ipt("-t", "mangle", "-I", *bypass[1:], "-j", "ACCEPT")
            try:
                done = on_host(lab, address, f"ping -c {PROBES} -W 1 {TARGET}")
            finally:
                ipt("-t", "mangle", "-D", *bypass[1:], "-j", "ACCEPT")
            assert done.returncode != 0, done.stdout  # the sink answers nothing
            time.sleep(0.5)
            leaked = counter("mangle", "POSTROUTING", f"{mark} sink")
    finally:
        subprocess.run(["ip", "link", "delete", sink], check=False)  # its route goes with it
    print(f"\nwith the lab's rule bypassed: {name} -> {TARGET}: {leaked} packets forwarded out of {sink}")
    assert leaked >= PROBES, (
        f"only {leaked} of {PROBES} probe packets were counted leaving without the rule "
        f"(iptables -S FORWARD: {ipt('-S', 'FORWARD').splitlines()[0]})"
    )


def _kill_lab_processes(state_dir: Path) -> None:
    """SIGKILL, by pid, this lab's own processes (its dockerd, containerd and the host containers), as
    when a session is stopped; the kernel keeps what they made (bridge, rules)."""
    mine = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if f"{state_dir}/".encode() in (proc / "cmdline").read_bytes().replace(b"\0", b" "):
                    mine.append(int(proc.name))
    inits = [
        int(c) for pid in mine for f in Path(f"/proc/{pid}/task").glob("*/children") for c in f.read_text().split()
    ]
    for group in (inits, mine):
        for pid in group:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(1)


def test_killed_run_then_up_then_down_leaves_one_rule_then_none_and_never_a_foreign_one(lab: LabInfo) -> None:
    lid = lab_id(STATE_DIR)
    bridge = f"plab-{lid}"
    rule = egress_rule(bridge, lid)
    # a rule that looks like the lab's but is not its own (no comment): the lab must never touch it
    foreign = ["FORWARD", "-i", bridge, "!", "-o", bridge, "-j", "DROP"]
    _kill_lab_processes(STATE_DIR)
    ipt("-t", "mangle", "-C", *rule[2:])  # the killed run's rule is still in the kernel
    lab_up(hosts=2, subnet=SUBNET, state_dir=STATE_DIR)  # finds the leftovers of the killed run
    ours = [line for line in ipt("-t", "mangle", "-S", "FORWARD").splitlines() if f"provisioner lab {lid}:" in line]
    assert len(ours) == 1, ours
    ipt("-t", "mangle", "-A", *foreign)
    try:
        lab_down(state_dir=STATE_DIR, keep_image=True)
        left = [line for line in ipt("-t", "mangle", "-S", "FORWARD").splitlines() if bridge in line]
        assert left == [f"-A FORWARD -i {bridge} ! -o {bridge} -j DROP"], left
    finally:
        with contextlib.suppress(AssertionError):
            ipt("-t", "mangle", "-D", *foreign)
