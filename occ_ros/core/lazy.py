"""Package attributes loaded on first use (a module `__getattr__`, PEP 562).

This is what lets a package's light part be imported without its heavy part: the calibration
types of `occ_ros.geometry` without its torch-backed pool tables, the named configurations of
`occ_ros.model` without the network. The package keeps the names under `TYPE_CHECKING` imports
for the type checker.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Sequence


def lazy_attributes(namespace: dict[str, Any], modules: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """A module `__getattr__` for the package whose globals are `namespace`.

    modules: {module path: names it provides}. The first access to one of those names imports its
    module and keeps the value in `namespace` (later accesses are plain globals); any other name
    raises AttributeError, so `from package import submodule` still imports the submodule.
    """
    package = namespace['__name__']
    source = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = source.get(name)
        if module is None:
            raise AttributeError(f'module {package!r} has no attribute {name!r}')
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
