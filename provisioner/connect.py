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
        target = SSHTarget(
            name=host,
            address=c.address,
            port=c.port,
            user=c.user,
            private_key=c.private_key,
            known_hosts=c.known_hosts,
            host_key_policy=c.host_key_policy,
            become=c.become,
            password=c.password.get_secret_value() if c.password else None,
            key_passphrase=c.key_passphrase.get_secret_value() if c.key_passphrase else None,
            connect_timeout=c.connect_timeout,
            retries=c.retries,
            ssh_config=c.ssh_config,
        )
        return SSHConnection.open(target)

    return connect
