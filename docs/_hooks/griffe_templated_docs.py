"""A griffe extension for the API reference: docstrings completed at import time, completed for the docs too.

`synthalign.objectives._pairwise._with_doc(TEXT)` replaces the placeholder `{divergence}` in a
loss's docstring by TEXT when the module is imported; griffe reads the source without importing
it, so the placeholder would be shown (and warned about).  This extension does the same
replacement on the statically loaded docstring, reading TEXT (a string literal) from the source.
"""

from __future__ import annotations

import ast

import griffe

PLACEHOLDER = "{divergence}"
DECORATOR = "_with_doc"


class TemplatedDocstrings(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for module in _modules(pkg):
            for function in module.functions.values():
                if function.is_alias or function.docstring is None:
                    continue
                if PLACEHOLDER not in function.docstring.value:
                    continue
                text = _decorator_text(module, function)
                if text is not None:
                    # The docstring griffe holds is dedented by 4 relative to the source; so is TEXT here.
                    head, *rest = text.splitlines()
                    text = "\n".join([head, *(line[4:] if line.startswith("    ") else line for line in rest)])
                    function.docstring.value = function.docstring.value.replace(PLACEHOLDER, text)


def _modules(module: griffe.Module):
    yield module
    for member in module.modules.values():
        if not member.is_alias:
            yield from _modules(member)


def _decorator_text(module: griffe.Module, function: griffe.Function) -> str | None:
    for decorator in function.decorators:
        source = str(decorator.value)
        if not source.startswith(f"{DECORATOR}("):
            continue
        name = source[len(DECORATOR) + 1 : -1].strip()
        try:
            target = module[name]
            value = target.final_target.value if target.is_alias else target.value
            return ast.literal_eval(str(value))
        except (KeyError, ValueError, SyntaxError, griffe.AliasResolutionError):
            return None
    return None
