"""Connections to hosts: the protocol, the paramiko transport and a scripted fake for unit tests."""

from provisioner.connection.base import Connection, ConnectionStats, RunResult, ShellConnection, q

__all__ = ["Connection", "ConnectionStats", "RunResult", "ShellConnection", "q"]
