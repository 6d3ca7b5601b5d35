"""PEFT methods, one module each, registered in :data:`METHODS`.

A method is one file: its config (each option declared once with
:func:`~trainables.methods.options.option`: default, allowed values, default search range), its
modules and its registration. Importing it below is the only edit elsewhere.
"""

from trainables.methods import adapter, baselines, ia3, lora, prompt  # noqa: F401  (registration)
from trainables.methods.base import METHODS, Method, MethodConfig, attach, build_method
from trainables.methods.options import Domain, option

__all__ = ["METHODS", "Domain", "Method", "MethodConfig", "attach", "build_method", "option"]
