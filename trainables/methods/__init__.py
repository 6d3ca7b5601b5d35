"""PEFT methods, one module each, registered in :data:`METHODS`."""

from trainables.methods import adapter, baselines, lora, prompt  # noqa: F401  (registration)
from trainables.methods.base import METHODS, Method, MethodConfig, attach, build_method

__all__ = ["METHODS", "Method", "MethodConfig", "attach", "build_method"]
