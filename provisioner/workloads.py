"""The inventory's ``containers:``, the workloads the networks exist for: their model and parsing.

Keys follow community.docker's ``docker_container`` where they overlap (``image``, ``command``, ``env``,
``networks``, ``network_mode``, ``ports`` as ``published_ports``, ``restart`` as ``restart_policy``,
``volumes``, ``labels``, ``state``). Cross-checks that need the rest of the inventory (hosts, networks,
addresses, ports per host) live in :mod:`provisioner.inventory`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, SecretStr, ValidationInfo, model_validator

from provisioner.yamlsrc import invalid

# what Docker accepts as a container name (at least two characters)
_CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,127}")
_RESTART = re.compile(r"no|always|unless-stopped|on-failure(:[0-9]+)?")
_PORT = re.compile(
    r"(?:(?P<addr>\[[0-9a-fA-F:]+\]|[0-9]+(?:\.[0-9]+){3}):)?(?:(?P<host>[0-9]{1,5}):)?"
    r"(?P<container>[0-9]{1,5})(?:/(?P<proto>tcp|udp|sctp))?"
)


def container_name(v: Any) -> str:
    if not isinstance(v, str) or not _CONTAINER_NAME.fullmatch(v):
        cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(v)).strip("-._")[:63] or "app1"
        raise invalid(
            f"{v!r} is not a name Docker accepts for a container: letters, digits, '_', '.', '-', starting "
            "with a letter or digit, at least two characters",
            f"rename it, e.g. {cleaned if len(cleaned) > 1 else cleaned + '1'!r}",
        )
    return v


ContainerName = Annotated[str, PlainValidator(container_name)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class PortSpec:
    """One published port: ``[ADDR:][HOST:]CONTAINER[/PROTO]``, as ``docker run -p`` takes it."""

    text: str
    address: str | None  # None: every address of the host
    host_port: int | None  # None: Docker picks one
    container_port: int
    proto: str

    @property
    def key(self) -> tuple[str, int | None, str]:
        return (self.address or "0.0.0.0", self.host_port, self.proto)


def parse_port(v: Any) -> PortSpec:
    text = str(v).strip() if isinstance(v, (str, int)) and not isinstance(v, bool) else None
    m = _PORT.fullmatch(text) if text else None
    if text is None or m is None:
        raise invalid(
            f"{v!r} is not a published port",
            "write CONTAINER, HOST:CONTAINER or ADDRESS:HOST:CONTAINER, optionally /udp, e.g. \"32773:80\"",
        )
    addr = m.group("addr")
    if addr is not None:
        try:
            addr = str(ipaddress.ip_address(addr.strip("[]")))
        except ValueError:
            raise invalid(f"{addr} in {text!r} is not an IP address", "write e.g. 127.0.0.1:8080:80") from None
    numbers = [int(x) for x in (m.group("host"), m.group("container")) if x is not None]
    if any(not 1 <= n <= 65535 for n in numbers):
        raise invalid(f"a port in {text!r} is out of range", "use ports between 1 and 65535")
    host = int(m.group("host")) if m.group("host") else None
    return PortSpec(text, addr, host, int(m.group("container")), m.group("proto") or "tcp")


Port = Annotated[PortSpec, PlainValidator(parse_port)]


def _env_value(v: Any, info: ValidationInfo) -> SecretStr | str:
    """A plain value, or a reference read on this machine: {from_env: NAME} or {from_file: PATH}.
    References are secrets: masked in every output."""
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict) and len(v) == 1 and "from_env" in v:
        name = str(v["from_env"])
        value = os.environ.get(name)
        if value is None:
            raise invalid(
                f"environment variable {name} is not set on this machine",
                f"export {name}=... before running provisioner (in CI: a secret), or write the value here",
            )
        return SecretStr(value)
    if isinstance(v, dict) and len(v) == 1 and "from_file" in v:
        p = Path(str(v["from_file"])).expanduser()
        base = (info.context or {}).get("base_dir")
        if not p.is_absolute() and base is not None:
            p = Path(base) / p
        try:
            return SecretStr(p.read_text().rstrip("\n"))
        except OSError as e:
            raise invalid(f"cannot read {p}: {e.strerror}", "point from_file at a readable file") from None
    raise invalid(f"{v!r} is not an environment value", "write a string, {from_env: NAME} or {from_file: PATH}")


EnvValue = Annotated[SecretStr | str, PlainValidator(_env_value)]


class ContainerNetwork(_Model):
    ipv4_address: Annotated[
        ipaddress.IPv4Address | None,
        PlainValidator(lambda v: None if v is None else _ipv4(v)),
    ] = None
    aliases: list[str] = Field(default_factory=list)


def _ipv4(v: Any) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(str(v).strip())
    except ValueError:
        raise invalid(f"{v!r} is not an IPv4 address", "write e.g. 198.19.3.10") from None


class Container(_Model):
    host: str
    image: str = Field(min_length=1)
    image_archive: Path | None = None
    command: list[str] | None = None
    env: dict[str, EnvValue] = Field(default_factory=dict)
    # a list of network names, or name -> {ipv4_address, aliases}; Docker's `bridge` may be named
    networks: dict[str, ContainerNetwork] = Field(default_factory=dict)
    network_mode: Literal["none", "host"] | None = None
    ports: list[Port] = Field(default_factory=list)
    restart: str = "unless-stopped"
    volumes: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    state: Literal["present", "absent"] = "present"

    @model_validator(mode="before")
    @classmethod
    def _network_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("networks"), list):
            data = dict(data)
            data["networks"] = {str(n): {} for n in data["networks"]}
        if isinstance(data, dict) and isinstance(data.get("networks"), dict):
            data = dict(data)
            data["networks"] = {k: ({} if v is None else v) for k, v in data["networks"].items()}
        if isinstance(data, dict) and isinstance(data.get("command"), str):
            raise invalid(
                "command must be a list (each argument on its own), so nothing depends on shell quoting",
                f"write command: {data['command'].split()!r}",
                at=("command",),
            )
        return data

    @model_validator(mode="after")
    def _checks(self, info: ValidationInfo) -> Container:
        if self.network_mode is not None and self.networks:
            raise invalid(
                f"network_mode: {self.network_mode} and networks exclude each other (a container in the host's "
                "or no network namespace joins no network)",
                "remove network_mode, or remove networks",
                at=("network_mode",),
            )
        if self.network_mode is not None and self.ports:
            raise invalid(
                f"ports cannot be published with network_mode: {self.network_mode}",
                "remove ports (with network_mode: host the container listens on the host's ports directly)",
                at=("ports",),
            )
        if not _RESTART.fullmatch(self.restart):
            raise invalid(
                f"restart {self.restart!r} is not a Docker restart policy",
                "use no, always, unless-stopped or on-failure[:N]",
                at=("restart",),
            )
        seen: dict[tuple[str, int | None, str], str] = {}
        for i, port in enumerate(self.ports):
            if port.host_port is None:
                continue
            clash = next((t for k, t in seen.items() if port_clash(k, port.key)), None)
            if clash is not None:
                raise invalid(
                    f"host port {port.host_port}/{port.proto} is published twice ({clash} and {port.text})",
                    "publish each host port once",
                    at=("ports", str(i)),
                )
            seen[port.key] = port.text
        if self.image_archive is not None:
            path = self.image_archive.expanduser()
            base = (info.context or {}).get("base_dir")
            if not path.is_absolute() and base is not None:
                path = Path(base) / path
            if not path.is_file():
                raise invalid(
                    f"image archive {path} does not exist (relative paths start at the inventory's folder)",
                    "create it with 'docker save IMAGE -o FILE', or remove image_archive to pull the image",
                    at=("image_archive",),
                )
            object.__setattr__(self, "image_archive", path)
        return self

    def secrets(self) -> list[str]:
        return [v.get_secret_value() for v in self.env.values() if isinstance(v, SecretStr)]

    def env_values(self) -> dict[str, str]:
        return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in self.env.items()}


def port_clash(a: tuple[str, int | None, str], b: tuple[str, int | None, str]) -> bool:
    """Two bindings of one host port and protocol collide unless both name different addresses."""
    if a[1] != b[1] or a[2] != b[2]:
        return False
    return a[0] == b[0] or "0.0.0.0" in (a[0], b[0])
