"""Maps inventory hosts to SSH connections (paramiko is imported only when a host is contacted)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provisioner.connection.base import ShellConnection
    from provisioner.inventory import Inventory


def ssh_connector(inventory: Inventory) -> Callable[[str], ShellConnection]:
    def connect(host: str) -> ShellConnection:
        from provisioner.connection.ssh import SSHConnection, SSHTarget

        c = inventory.connection_for(host)

        def given(name: str, value: object) -> object:
            # what the inventory leaves unset may come from ~/.ssh/config before the defaults
            return value if name in c.explicit else None

        target = SSHTarget(
            name=host,
            address=c.address,
            port=given("port", c.port),  # type: ignore[arg-type]
            user=given("user", c.user),  # type: ignore[arg-type]
            private_key=given("private_key", c.private_key),  # type: ignore[arg-type]
            known_hosts=given("known_hosts", c.known_hosts),  # type: ignore[arg-type]
            host_key_policy=c.host_key_policy,
            become=given("become", c.become),  # type: ignore[arg-type]
            password=c.password.get_secret_value() if c.password else None,
            key_passphrase=c.key_passphrase.get_secret_value() if c.key_passphrase else None,
            connect_timeout=c.connect_timeout,
            retries=c.retries,
            ssh_config=c.ssh_config,
        )
        return SSHConnection.open(target)

    return connect
