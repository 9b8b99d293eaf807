"""Host facts: everything modules plan from, gathered in a single round trip per host.

A fact is a registered section (``registry.section``): a name, a shell fragment and a typed parser that
fills its part of ``HostFacts``. Every run gathers the default sections; a module asks for optional ones
and reads the typed fields they fill::

    def fact_sections(self, args, inventory):
        return [PORTS, FIREWALL]

    def plan(self, ctx, args):
        web = ctx.facts.docker.container("web")  # web.ports: [PublishedPort(80, "tcp", "0.0.0.0", 8080)]
        if ctx.facts.docker.firewall.userland_proxy is False: ...

The gatherer sends the needed fragments as one script, plus watched files (content, mode, owner) and
probes (exit codes; a check that needs a command's output is a section with its own parser). Every
section tolerates a missing tool (no Docker, no systemd, no iproute2, no iptables): the fact is then
empty, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from provisioner.connection.base import ShellConnection
from provisioner.errors import RemoteError

# the section modules register themselves on import; this order is the script's and the parser's
# isort: off
from provisioner.facts import host as _host  # noqa: F401
from provisioner.facts import service as _service  # noqa: F401
from provisioner.facts import docker as _docker  # noqa: F401
from provisioner.facts import firewall as _firewall  # noqa: F401
from provisioner.facts import containers as _containers  # noqa: F401
from provisioner.facts import links as _links  # noqa: F401

# isort: on
from provisioner.facts.containers import CONTAINER_CONFIG, env_digest
from provisioner.facts.docker import ADDRESSES, ENGINE, PORTS
from provisioner.facts.firewall import FIREWALL
from provisioner.facts.links import LINK_KINDS, MACVLAN_LINKS
from provisioner.facts.model import (
    ContainerAddress,
    ContainerFact,
    ContainerMount,
    DockerFacts,
    DockerFirewall,
    FileFact,
    HostFacts,
    Interface,
    LinkKind,
    MacvlanLink,
    Masquerade,
    NetworkFact,
    OSFacts,
    PublishedPort,
    Route,
)
from provisioner.facts.registry import (
    MARK,
    Output,
    Section,
    all_sections,
    build_script,
    default_sections,
    header,
    registry,
    resolve,
    section,
    split_sections,
)
from provisioner.facts.service import parse_execstart

__all__ = [
    "ADDRESSES",
    "CONTAINER_CONFIG",
    "ENGINE",
    "FIREWALL",
    "LINK_KINDS",
    "MACVLAN_LINKS",
    "MARK",
    "PORTS",
    "ContainerAddress",
    "ContainerFact",
    "ContainerMount",
    "DockerFacts",
    "DockerFirewall",
    "FileFact",
    "HostFacts",
    "Interface",
    "LinkKind",
    "MacvlanLink",
    "Masquerade",
    "NetworkFact",
    "OSFacts",
    "Output",
    "PublishedPort",
    "Route",
    "Section",
    "all_sections",
    "default_sections",
    "env_digest",
    "facts_script",
    "gather",
    "header",
    "parse_execstart",
    "parse_facts",
    "registry",
    "section",
]

Wanted = Iterable[str] | Literal["all"]


def _names(sections: Wanted) -> list[str]:
    return all_sections() if sections == "all" else list(sections)


def facts_script(files: Sequence[str] = (), probes: Mapping[str, str] | None = None, sections: Wanted = ()) -> str:
    """The script for the default sections plus ``sections`` (or "all"), ``files`` and ``probes``."""
    return build_script(resolve(_names(sections)), list(files), dict(probes or {}))


def parse_facts(
    host: str,
    output: str,
    dropin: str | None = None,
    files: Sequence[str] = (),
    probes: Sequence[str] = (),
    sections: Wanted = (),
) -> HostFacts:
    """Parse the script's output: the default sections plus ``sections``; ``files``/``probes`` name the
    numbered sections, in order. A section missing from ``output`` leaves its fields at their defaults."""
    out = Output(split_sections(output), dropin=dropin)
    facts = HostFacts(host=host)
    for s in resolve(_names(sections)):
        s.parse(out, facts)
        facts.sections.append(s.name)
    for i, path in enumerate(files):
        facts.files[path] = _file_fact(out.text(f"file:{i}"))
    for i, name in enumerate(probes):
        rc = out.text(f"probe:{i}").strip().splitlines()[-1:]
        facts.probes[name] = int(rc[0]) if rc and rc[0].isdigit() else 255
    return facts


def _file_fact(body: str) -> FileFact:
    lines = body.split("\n", 1)
    if not lines[0].strip():
        return FileFact(exists=False)
    mode_owner = lines[0].split()
    try:
        data = base64.b64decode(lines[1].strip() if len(lines) > 1 else "", validate=True)
    except (binascii.Error, ValueError):
        data = b""
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return FileFact(
        exists=True,
        content=text,
        sha256=hashlib.sha256(data).hexdigest(),
        mode=mode_owner[0] if mode_owner else None,
        owner=mode_owner[1] if len(mode_owner) > 1 else None,
    )


def gather(
    conn: ShellConnection,
    *,
    files: Iterable[str] = (),
    probes: Mapping[str, str] | None = None,
    dropin: str | None = None,
    sections: Wanted = (),
) -> HostFacts:
    """Gather facts in one round trip: the default sections plus ``sections`` (names, or "all"). ``files``
    are read (content, mode, owner); ``probes`` are shell commands whose exit codes become
    ``facts.probes`` (used by guards such as ``unless``)."""
    paths = list(dict.fromkeys(files))
    probes = dict(probes or {})
    names = _names(sections)
    script = facts_script(paths, probes, names)
    res = conn.run("sh -s", sudo=True, stdin=script.encode(), timeout=120)
    if MARK not in res.stdout:
        raise RemoteError(
            conn.host,
            "gather facts",
            res.rc,
            res.output,
            what="could not gather facts",
            fix="the host needs a POSIX sh; as a non-root user it needs passwordless sudo",
        )
    return parse_facts(conn.host, res.stdout, dropin=dropin, files=paths, probes=list(probes), sections=names)
