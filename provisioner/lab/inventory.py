"""The inventory (v1) `lab up` writes for the hosts it made."""

from __future__ import annotations

from pathlib import Path

OVERLAY_SUBNET = "198.19.1.0/24"


def render(
    state_dir: Path,
    hosts: list[tuple[str, str]],
    images: dict[str, str],
    archives: dict[str, Path],
    suite: str,
    host_suites: dict[str, str] | None = None,
) -> str:
    """First host is the kv store host (group kv), the rest run Docker (group docker). A mixed lab
    (``suite`` like ``bullseye,trixie``) notes each host's suite next to it."""
    mixed = host_suites is not None and len(set(host_suites.values())) > 1
    lines = [
        "# written by `provisioner lab up`; rewritten on every `up`, removed by `provisioner lab down`.",
        f"# lab hosts: Debian {suite} containers booting systemd, sshd and dockerd; state in {state_dir}",
        "connection:",
        "  user: root",
        "  port: 22",
        f"  private_key: {state_dir / 'id_ed25519'}",
        f"  known_hosts: {state_dir / 'known_hosts'}",
        "  host_key_policy: strict",
        "hosts:",
    ]
    for i, (name, address) in enumerate(hosts):
        group = "kv" if i == 0 else "docker"
        note = f"  # {host_suites[name]}" if mixed and host_suites and name in host_suites else ""
        lines.append(f"  {name}: {{address: {address}, groups: [{group}]}}{note}")
    lines += [
        "kv_store:",
        "  backend: consul",
        f"  hosts: [{hosts[0][0]}]",
        f"  image: {images['consul']}",
        f"  image_archive: {archives['consul']}",
        "  port: 8500",
        "docker:",
        "  config: systemd-dropin",
        "  advertise_interface: eth0",
        "  advertise_port: 2376",
        "networks:",
        f"  ov_net1: {{driver: overlay, subnet: {OVERLAY_SUBNET}}}",
        "verify:",
        f"  image: {images['probe']}",
        f"  image_archive: {archives['probe']}",
        "  # NAT out: containers reach the kv host, a lab host outside every container network; its replies",
        "  # stay in the lab and it can see the source address the packets arrive from (the MASQUERADE check)",
        f"  outside: {hosts[0][1]}",
    ]
    return "\n".join(lines) + "\n"


def known_hosts(entries: list[tuple[str, str]]) -> str:
    """(address, 'ssh-ed25519 AAAA...') pairs -> known_hosts text."""
    return "".join(f"{address} {key}\n" for address, key in entries)
