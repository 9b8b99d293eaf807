"""Built-in modules, by name. Each is imported (and so registered) when a run first uses it."""

from provisioner.modules.base import BUILTIN, Change, Module, ModuleArgs, NoOp, PlanContext, register, registry

BUILTIN.update(
    {
        name: f"provisioner.modules.{name}"
        for name in (
            "command",
            "container_verify",
            "docker_container",
            "docker_daemon",
            "docker_image",
            "docker_network",
            "file",
            "kv_store",
            "overlay_verify",
            "swarm",
        )
    }
)

__all__ = ["Change", "Module", "ModuleArgs", "NoOp", "PlanContext", "register", "registry"]
