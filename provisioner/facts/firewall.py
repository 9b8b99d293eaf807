"""Section ``firewall``: the engine's packet-filtering settings as the running dockerd has them, and what
Docker put in the kernel's tables (which DOCKER* chains exist, the FORWARD policy, NAT for its bridges).

Optional: one `iptables-save` (as a job, alongside the Docker CLI calls) and a few reads of /proc.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from provisioner.facts.model import DockerFirewall, HostFacts, Masquerade
from provisioner.facts.registry import PART, Output, section

FIREWALL = "firewall"

# dockerd's flags (command line) / daemon.json keys, all true by default
SETTINGS = {"iptables": "iptables", "ip_forward": "ip-forward", "userland_proxy": "userland-proxy"}

_SCRIPT = (
    # the first dockerd process, found without forking per process (no pidof/pgrep needed)
    'p=; for d in /proc/[0-9]*; do { read -r c <"$d/comm"; } 2>/dev/null || continue; '
    '[ "$c" = dockerd ] && p=${d#/proc/} && break; done; '
    f'echo "{PART} argv"; [ -z "$p" ] || tr "\\000" "\\n" <"/proc/$p/cmdline"; '
    'cf=; [ -z "$p" ] || cf=$(tr "\\000" "\\n" <"/proc/$p/cmdline" | '
    "sed -n -e 's/^--config-file=//p' -e '/^--config-file$/{n;p;}' | tail -n 1); "
    f'cf=${{cf:-/etc/docker/daemon.json}}; echo "{PART} config_file"; echo "$cf"; '
    f'echo "{PART} config"; cat "$cf" 2>/dev/null; '
    f'echo "{PART} ip_forward"; cat /proc/sys/net/ipv4/ip_forward 2>/dev/null; '
    f'echo "{PART} rules"; job fw'
)


def _bool(v: str) -> bool | None:
    """Go's strconv.ParseBool, which dockerd's flags use."""
    return {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}.get(v.lower())


def setting(argv: list[str], config: dict[str, Any], key: str) -> bool:
    """A boolean dockerd setting: the command line wins (dockerd refuses to start when a setting is in
    both), then daemon.json, then Docker's default (true for all of SETTINGS)."""
    flag = f"--{key}"
    found: bool | None = None
    for a in argv:
        if a == flag:
            found = True
        elif a.startswith(flag + "="):
            found = _bool(a[len(flag) + 1 :])
    if found is not None:
        return found
    v = config.get(key)
    return v if isinstance(v, bool) else True


def parse_rules(text: str, fw: DockerFirewall) -> None:
    """Fill ``fw`` from `iptables-save` output (every table the kernel has)."""
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            fw.rules_read = fw.rules_read or table == "filter"
        elif line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            if table == "filter" and name == "FORWARD":
                fw.forward_policy = rest.split(" ", 1)[0]
            if name.startswith("DOCKER"):
                (fw.filter_chains if table == "filter" else fw.nat_chains if table == "nat" else []).append(name)
        elif table == "nat" and line.startswith("-A POSTROUTING") and "MASQUERADE" in line:
            try:
                words = shlex.split(line)
            except ValueError:
                words = line.split()
            rule = Masquerade(rule=line)
            for i, w in enumerate(words[:-1]):
                if w == "-s":
                    rule.source = words[i + 1]
                elif w == "-o" and i > 0 and words[i - 1] == "!":
                    rule.not_out = words[i + 1]
            fw.masquerade.append(rule)


@section(
    FIREWALL,
    _SCRIPT,
    jobs={"fw": "iptables-save 2>/dev/null"},
    default=False,
)
def _firewall(out: Output, facts: HostFacts) -> None:
    parts = out.parts(FIREWALL)
    fw = DockerFirewall()
    fw.argv = [a for a in parts.get("argv", "").splitlines() if a]
    fw.dockerd_running = bool(fw.argv)
    fw.config_file = parts.get("config_file", "").strip()
    fw.kernel_ip_forward = {"1": True, "0": False}.get(parts.get("ip_forward", "").strip())
    if fw.dockerd_running:
        try:
            config = json.loads(parts.get("config", "") or "{}")
        except json.JSONDecodeError:
            config = {}
        config = config if isinstance(config, dict) else {}
        for field, key in SETTINGS.items():
            setattr(fw, field, setting(fw.argv, config, key))
    parse_rules(parts.get("rules", ""), fw)
    facts.docker.firewall = fw
