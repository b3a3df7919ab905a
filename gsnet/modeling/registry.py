"""Looking up a component in one of GSNet's registries by the name a config gives, and
importing the modules that register one's own components (MODEL.COMPONENT_MODULES)."""

import importlib
import importlib.util
import os
import sys

from ..errors import ConfigError

__all__ = ["import_component_modules", "registered"]


def import_component_modules(modules):
    """Import each dotted module name or .py file (once per process), so that the components it
    registers exist; a module that cannot be imported is a ConfigError naming it."""
    for module in modules:
        if module.endswith(".py"):
            path = os.path.abspath(module)
            name = f"gsnet_components_{os.path.splitext(os.path.basename(path))[0]}"
            if name in sys.modules:
                continue
            if not os.path.isfile(path):
                raise ConfigError(
                    f"MODEL.COMPONENT_MODULES names {module}, which does not exist: give the "
                    "path of a .py file or a dotted module name on the Python path."
                )
            spec = importlib.util.spec_from_file_location(name, path)
            sys.modules[name] = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(sys.modules[name])
            except BaseException:
                del sys.modules[name]
                raise
        else:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as error:
                raise ConfigError(
                    f"MODEL.COMPONENT_MODULES names {module!r}, which cannot be imported "
                    f"({error}): give a dotted module name on the Python path or a .py file."
                ) from error


def registered(registry, name: str, *, key: str):
    """``registry.get(name)``; an unknown name is a ConfigError naming the config key and
    listing the registered names (register your own with ``@REGISTRY.register()``)."""
    if name not in registry:
        names = sorted(entry for entry, _ in registry)
        raise ConfigError(
            f"Unknown {key} {name!r}: the registered ones are {names}. Register your own "
            "component with the registry's @register() before building the model (README, "
            "'Your own component')."
        )
    return registry.get(name)
