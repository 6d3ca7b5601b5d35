"""Names ``emotune search`` offers, importable without Optuna, Ray or torch (fast ``--help``)."""

from __future__ import annotations

# ``--sampler`` choices, in CLI order (built by :func:`search.samplers.make_sampler`).
SAMPLERS: tuple[str, ...] = ("tpe", "nsga2", "gp", "random")
# ``--scheduler`` choices, in CLI order. mo-asha and asha are the rules of
# :class:`search.rungs.RungCore`; none stops nothing.
SCHEDULERS: tuple[str, ...] = ("mo-asha", "asha", "none")
