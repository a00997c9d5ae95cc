"""synthalign: exact and sampled evaluation of LLM alignment objectives on synthetic worlds.

The flat API re-exports public names of the subpackages (see docs/architecture.md): worlds,
objectives, registry, evaluate, metrics, estimators, sweeps, stats, theory and bridge; which names,
by the module each is read from, is `synthalign._exports.FLAT_API`, the one list of them.

The names are resolved on first use (PEP 562): `import synthalign` itself loads neither torch nor
any subpackage, so the command line starts fast; `synthalign.X`, `from synthalign import X` and
`from synthalign import *` work as if everything had been imported eagerly.
"""

import importlib

from synthalign._exports import FLAT_API as _FLAT_API
from synthalign._version import __version__

_ALIASES = {"log_ratio": ("synthalign._checks", "safe_log_ratio")}
"""Public names bound to an object of another name."""

_SOURCE = {name: (module, name) for module, names in _FLAT_API.items() for name in names}
_SOURCE.update(_ALIASES)


def __getattr__(name: str) -> object:
    """Imports the module behind a public name (or a subpackage) on first access, and caches the value."""
    if name in _SOURCE:
        module, attribute = _SOURCE[name]
        value = getattr(importlib.import_module(module), attribute)
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = ["__version__", *sorted(_SOURCE)]
