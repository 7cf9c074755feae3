"""Gradient estimators: the interface and the built-ins (registered in `deqbench.builtins`)."""

#: (name, factory, description) of the estimators the core registers through its own hooks.
BUILTIN: tuple = ()

__all__ = ["BUILTIN"]
