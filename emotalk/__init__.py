"""emotalk: emotion-controllable, one-shot talking-face generation."""
__version__ = "0.1.0"

#: names exported lazily (module-level __getattr__) so that ``import emotalk`` stays light: the CLI's
#: ``--help`` and tools that only need the data layer should not pay for importing torch
_LAZY = {"Pipeline": "emotalk.inference", "GenerateOptions": "emotalk.inference",
         "GenerateResult": "emotalk.inference"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emotalk' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
