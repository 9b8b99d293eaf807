"""Section ``container_config``: what each container was created with, read from the ``docker inspect``
that networks and containers already share (parse-only: no remote work).

Command, entrypoint, restart policy (with its retry count), network mode, the port bindings as requested
(``HostConfig.PortBindings``: the same whether the container runs or not), binds, anonymous volumes and
mounts. Environment values are never kept: each is reduced to a digest keyed with a secret drawn when this
process starts (``env_digest``), so the facts can tell whether a value is the one wanted without holding
it, and a digest printed by ``provisioner facts`` says nothing about the value, not even to a dictionary.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from provisioner.facts.docker import _containers, _dict, _int, _list, published
from provisioner.facts.model import ContainerMount, HostFacts
from provisioner.facts.registry import Output, section

CONTAINER_CONFIG = "container_config"

_KEY = os.urandom(32)  # one per process: digests compare within a run and mean nothing outside it


def env_digest(value: str) -> str:
    """The digest of one environment value, as ``ContainerFact.env_digests`` holds it."""
    return hashlib.blake2b(value.encode(), key=_KEY, digest_size=16).hexdigest()


def _strings(v: Any) -> list[str]:
    return [str(x) for x in _list(v)]


@section(CONTAINER_CONFIG, reads=("inspect",), default=False)
def _config(out: Output, facts: HostFacts) -> None:
    for raw, fact in _containers(out, facts):
        cfg = _dict(raw.get("Config"))
        host = _dict(raw.get("HostConfig"))
        fact.cmd = _strings(cfg.get("Cmd"))
        fact.entrypoint = _strings(cfg.get("Entrypoint"))
        for item in _strings(cfg.get("Env")):
            name, _, value = item.partition("=")
            fact.env_digests[name] = env_digest(value)
        fact.restart_max_retries = _int(_dict(host.get("RestartPolicy")).get("MaximumRetryCount")) or 0
        fact.network_mode = str(host.get("NetworkMode") or "")
        fact.port_bindings = published(_dict(host.get("PortBindings")))
        fact.binds = sorted(_strings(host.get("Binds")))
        fact.volumes = sorted(str(v) for v in _dict(cfg.get("Volumes")))
        fact.mounts = [
            ContainerMount(
                type=str(m.get("Type") or ""),
                name=str(m.get("Name") or ""),
                source=str(m.get("Source") or ""),
                destination=str(m.get("Destination") or ""),
                rw=bool(m.get("RW", True)),
            )
            for m in _list(raw.get("Mounts"))
            if isinstance(m, dict)
        ]
