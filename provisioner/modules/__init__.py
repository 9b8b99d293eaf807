"""Built-in modules. Importing this package registers them."""

from provisioner.modules import (  # noqa: F401
    command,
    container_verify,
    docker_container,
    docker_daemon,
    docker_image,
    docker_network,
    file,
    kv_store,
    overlay_verify,
    swarm,
)
from provisioner.modules.base import Change, Module, ModuleArgs, NoOp, PlanContext, register, registry

__all__ = ["Change", "Module", "ModuleArgs", "NoOp", "PlanContext", "register", "registry"]
