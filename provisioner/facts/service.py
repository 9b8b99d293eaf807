"""Sections about how Docker is installed and run: binary, package, systemd unit and its ExecStart."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from provisioner.facts.model import HostFacts
from provisioner.facts.registry import Output, section


def parse_execstart(unit_files: Mapping[str, str], ignore: str | None) -> list[str] | None:
    """The ExecStart argv after applying the unit file and its drop-ins, skipping ``ignore``.

    systemd semantics: an empty ``ExecStart=`` resets the list; the last non-empty one wins for
    a simple service. Line continuations (trailing backslash) are joined.
    """
    argv: list[str] | None = None
    for path, text in unit_files.items():
        if path == ignore:
            continue
        section_ = ""
        joined = text.replace("\\\n", " ")
        for raw in joined.splitlines():
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                section_ = line
                continue
            if section_ != "[Service]" or not line.startswith("ExecStart="):
                continue
            value = line[len("ExecStart=") :].strip()
            if not value:
                argv = None
                continue
            # strip systemd's exec prefixes (-, @, +, !, :)
            value = value.lstrip("-@+!:")
            try:
                argv = shlex.split(value)
            except ValueError:
                argv = value.split()
    return argv


@section("dockerd", "command -v dockerd 2>/dev/null")
def _dockerd(out: Output, facts: HostFacts) -> None:
    facts.docker.installed = bool(out.text("dockerd").strip())


@section(
    "package",
    "for p in docker.io docker-ce moby-engine; do "
    'v=$(dpkg-query -W -f \'${Version}\' $p 2>/dev/null) && [ -n "$v" ] && echo "$p $v" && break; done',
)
def _package(out: Output, facts: HostFacts) -> None:
    pkg = out.text("package").split()
    if len(pkg) == 2:
        facts.docker.package, facts.docker.package_version = pkg


@section("active", "systemctl is-active docker 2>/dev/null")
def _active(out: Output, facts: HostFacts) -> None:
    facts.docker.state = out.text("active").strip() or "unknown"


@section(
    "unit",
    "systemctl show docker -p FragmentPath --value 2>/dev/null; "
    "systemctl show docker -p DropInPaths --value 2>/dev/null",
)
def _unit(out: Output, facts: HostFacts) -> None:
    unit = out.text("unit").split()
    if unit:
        facts.docker.unit_path = unit[0]
        facts.docker.unit_dropins = unit[1:]


@section(
    "unitfiles",
    "for f in $(systemctl show docker -p FragmentPath -p DropInPaths --value 2>/dev/null); "
    'do [ -f "$f" ] && printf "@@FILE@@ %s\\n" "$f" && cat "$f"; done',
)
def _unitfiles(out: Output, facts: HostFacts) -> None:
    files = out.parts("unitfiles", "@@FILE@@")
    if files:
        facts.docker.base_execstart = parse_execstart(files, ignore=out.dropin)
