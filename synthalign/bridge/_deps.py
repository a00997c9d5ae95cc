"""The optional dependencies of the bridge, imported when first needed."""

from __future__ import annotations

import importlib
from types import ModuleType

_EXTRA = {"transformers": "bridge", "accelerate": "bridge", "trl": "dev"}


def require(module: str) -> ModuleType:
    """`import module`, or an ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = _EXTRA.get(module.split(".")[0], "bridge")
        raise ImportError(
            f"synthalign.bridge needs {module.split('.')[0]}: pip install 'synthalign[{extra}]'"
        ) from error
