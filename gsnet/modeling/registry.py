"""Looking up a component in one of GSNet's registries by the name a config gives."""

from ..errors import ConfigError

__all__ = ["registered"]


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
