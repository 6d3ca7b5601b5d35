"""The Optuna samplers of ``emotune search --sampler`` (also used by ``bench/``).

Every sampler but ``random`` is two layers, built by :func:`make_sampler`:

- :class:`MethodCoverSampler` gives trial number ``n < n_cover`` the method
  ``order[n % k]`` of a seeded permutation of the space's ``k`` methods, so the first batch
  covers every method (and, cycling, stratifies it) before any model-based choice. It keys on
  ``trial.number``, so it is the same however many trials run at once.
- the model: TPE (multivariate, grouped by the space's conditional structure, constant liar),
  NSGA-II (:class:`MethodNSGAIISampler`: children change the method with a set
  probability) or Optuna's GP on the shared parameters (:class:`MethodGPSampler`).

``random`` stays Optuna's plain :class:`~optuna.samplers.RandomSampler`: the baseline.
:func:`describe_sampler` gives the settings of a built sampler (logged on the MLflow parent).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from search.choices import SAMPLERS
from spaces import METHOD_PARAM

log = logging.getLogger(__name__)

SETTINGS_ATTR = "emotune_settings"  # the settings make_sampler records on the sampler it returns
# One NSGA-II child in five tries another method, however many other parameters the space
# searches (Optuna's 1/n rule ties it to their number; see MethodNSGAIISampler).
METHOD_MUTATION_PROB = 0.2
MAX_STARTUP = 10  # Optuna's default start-up of TPE and GP

Scalar = str | int | float | bool


class MethodCoverSampler(BaseSampler):
    """A sampler whose first ``n_cover`` trials cover every method, then ``base``'s choices.

    Trial number ``n < n_cover`` gets ``method = order[n % k]`` (``order``: the methods in a
    permutation drawn from ``seed``); its other parameters come from
    ``base.sample_independent``, which is random sampling for every base built here while
    fewer than its start-up trials have finished. ``base.sample_relative`` is still called for
    those trials (NSGA-II assigns a trial's generation there) but its answer is dropped.
    Every other hook goes to ``base`` unchanged.

    Args:
        base: the model-based sampler.
        methods: the space's methods (``SpaceConfig.methods``); empty: no cover.
        n_cover: how many trials are covered; >= ``len(methods)`` when there are methods.
        seed: seeds the permutation.
    """

    def __init__(self, base: BaseSampler, methods: Sequence[str], n_cover: int, seed: int) -> None:
        if methods and n_cover < len(methods):
            raise ValueError(f"n_cover must be >= {len(methods)} (the methods), got {n_cover}")
        self.base = base
        self.n_cover = n_cover if methods else 0
        permutation = np.random.default_rng(seed).permutation(len(methods))
        self.order = tuple(methods[i] for i in permutation)

    def __str__(self) -> str:
        return f"MethodCoverSampler({self.base})"

    def forced_method(self, number: int) -> str | None:
        """The method trial ``number`` gets from the cover, or None past the cover."""
        return self.order[number % len(self.order)] if number < self.n_cover else None

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        params = self.base.sample_relative(study, trial, search_space)
        return {} if self.forced_method(trial.number) is not None else params

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, dist: BaseDistribution
    ) -> Any:
        method = self.forced_method(trial.number)
        if param_name == METHOD_PARAM and isinstance(dist, CategoricalDistribution):
            if method in dist.choices:
                return method
        return self.base.sample_independent(study, trial, param_name, dist)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()  # the cover's order is part of the search's design: it stays


class MethodNSGAIISampler(optuna.samplers.NSGAIISampler):
    """NSGA-II whose children change the method with a set probability.

    Optuna 5's NSGA-II crosses and mutates the intersection search space only (the
    non-fixed parameters every finished trial has: with the method cover, ``method`` and the
    shared settings such as ``lr``); a child's method options (``lora_rank``, ...) lie outside
    it and are drawn at random. Its mutation drops each value with probability ``1 / n``
    (``n`` intersection parameters) and draws it again at random, so ``method`` changes with
    probability ``(1 / n)(1 - 1 / k)`` for ``k`` methods: 1/4 in the default space
    (``method, lr, weight_decay``), less with each further searched setting, 3/4 where
    nothing else is searched, and rarer while every finished trial has one method (its
    options then join the intersection). Here generations, elitism
    (non-dominated sorting, crowding distance) and what is crossed stay Optuna's; the child:

    1. parents ``p1, p2``: binary tournaments (of two random parents, one that dominates the
       other, else the second), ``p2`` not ``p1``;
    2. with probability ``crossover_prob`` uniform crossover (each value from ``p2`` with
       probability ``swapping_prob``, else ``p1``), otherwise a copy of ``p1``;
    3. each value but ``method`` dropped (drawn at random) with probability ``1 / n``;
    4. ``method`` replaced, with probability ``method_mutation_prob``, by another method
       drawn uniformly (it always changes).

    Method options stay random rather than inherited from a parent of the child's method:
    on two stand-in objectives, inheriting them lowered the hypervolume after 60 trials
    (fewer distinct sizes on the front in NSGA-II's two or three generations).
    """

    def __init__(
        self, *, population_size: int, seed: int, method_mutation_prob: float = METHOD_MUTATION_PROB
    ) -> None:
        if not 0.0 <= method_mutation_prob <= 1.0:
            raise ValueError(f"method_mutation_prob must be in [0, 1], got {method_mutation_prob}")
        super().__init__(population_size=population_size, seed=seed)
        self.method_mutation_prob = method_mutation_prob
        self.crossover_prob = 0.9  # Optuna's defaults, which the parent class also got
        self.swapping_prob = 0.5
        self._child_rng = np.random.RandomState(seed)

    def reseed_rng(self) -> None:
        super().reseed_rng()
        self._child_rng.seed()

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        generation = self.get_trial_generation(study, trial)
        parents = self.get_parent_population(study, generation)
        if not parents or not search_space:
            return {}  # the first generation: random (and the method cover)
        return self._child(study, search_space, parents)

    def _child(
        self, study: Study, space: dict[str, BaseDistribution], parents: list[FrozenTrial]
    ) -> dict[str, Any]:
        """One child's inherited values (steps 1-4 of the class docstring)."""
        rng = self._child_rng
        p1 = self._tournament(study, parents)
        p2 = self._tournament(study, [p for p in parents if p is not p1] or parents)
        cross = rng.rand() < self.crossover_prob
        child = {n: (p2 if cross and rng.rand() < self.swapping_prob else p1).params[n]
                 for n in space}  # fmt: skip
        rate = 1.0 / max(1, len(child))
        child = {n: v for n, v in child.items() if n == METHOD_PARAM or rng.rand() >= rate}
        methods = space.get(METHOD_PARAM)
        if isinstance(methods, CategoricalDistribution) and METHOD_PARAM in child:
            others = [c for c in methods.choices if c != child[METHOD_PARAM]]
            if others and rng.rand() < self.method_mutation_prob:
                child[METHOD_PARAM] = others[rng.randint(len(others))]
        return child

    def _tournament(self, study: Study, pool: list[FrozenTrial]) -> FrozenTrial:
        a = pool[self._child_rng.randint(len(pool))]
        b = pool[self._child_rng.randint(len(pool))]
        return a if _dominates(a, b, study.directions) else b


def _dominates(a: FrozenTrial, b: FrozenTrial, directions: Sequence[StudyDirection]) -> bool:
    """``a`` is no worse than ``b`` in every objective and better in one."""
    signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in directions]
    x = [s * v for s, v in zip(signs, a.values)]
    y = [s * v for s, v in zip(signs, b.values)]
    return all(u <= v for u, v in zip(x, y)) and any(u < v for u, v in zip(x, y))


class MethodGPSampler(optuna.samplers.GPSampler):
    """Optuna's GP sampler on the parameters every trial has, TPE on the method options.

    Optuna's GPSampler models only its relative search space, the intersection of the finished
    trials' parameters without fixed ones: in emotune's spaces ``method`` (a categorical
    kernel dimension) and the shared settings (``lr``, ``weight_decay``, ...). The options that
    exist only for one method (``lora_rank``, ``adapter_width``, ...) are outside it and go to
    ``independent_sampler``: here a univariate TPE with constant liar (Optuna's default would
    draw them at random), so sizes are still guided. Finished trials only (pruned ones are not
    fitted by the GP; TPE sees them); running ones enter as q-batch fantasies (qLogEHVI).

    If the shared parameters hold nothing numeric (e.g. every shared setting fixed), a GP
    would model the method choice alone: then it logs a warning once and leaves every
    parameter to the TPE (use ``--sampler tpe`` for its multivariate, grouped form).
    """

    def __init__(self, *, seed: int, n_startup_trials: int) -> None:
        options = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=n_startup_trials, multivariate=False, constant_liar=True
        )
        # warn_independent_sampling: the method options are independent by design
        super().__init__(seed=seed, independent_sampler=options,
                         n_startup_trials=n_startup_trials, warn_independent_sampling=False)  # fmt: skip
        self._fell_back = False

    def acquisition(self) -> dict[str, int]:
        """How hard each ask optimises the acquisition function (Optuna 5's defaults unless
        :meth:`set_acquisition` changed them): QMC candidates, local searches from the best of
        them, QMC samples of the hypervolume improvement."""
        return {"preliminary_samples": self._n_preliminary_samples,
                "local_searches": self._n_local_search, "ehvi_samples": self._n_qmc_samples_ehvi}  # fmt: skip

    def set_acquisition(
        self, preliminary_samples: int, local_searches: int, ehvi_samples: int
    ) -> None:
        """A cheaper (or dearer) acquisition optimisation, e.g. for benchmarks that replay
        thousands of asks: 2048 / 10 / 128 (Optuna's) cost ~2.1-2.4 CPU s per ask at 50
        finished trials of the default space with 2 objectives, 256 / 2 / 64 ~0.6-0.8 s. These are
        attributes of Optuna 5's GPSampler (``_n_preliminary_samples``, ...)."""
        # Optuna starts one local search from the best trial and at least one from the samples
        if min(preliminary_samples, ehvi_samples) < 1 or local_searches < 2:
            raise ValueError(
                "preliminary_samples and ehvi_samples must be >= 1 and local_searches >= 2, got "
                f"{preliminary_samples}, {ehvi_samples}, {local_searches}"
            )
        self._n_preliminary_samples = preliminary_samples
        self._n_local_search = local_searches
        self._n_qmc_samples_ehvi = ehvi_samples

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        space = super().infer_relative_search_space(study, trial)
        if space and not any(isinstance(d, FloatDistribution | IntDistribution)
                             for d in space.values()):  # fmt: skip
            if not self._fell_back:
                log.warning("sampler gp: the parameters every trial shares (%s) have nothing "
                            "numeric to model; sampling every parameter with TPE instead",
                            ", ".join(space))  # fmt: skip
                self._fell_back = True
            return {}
        return space


def _multiple(n: int, k: int) -> int:
    """``n`` rounded down to a multiple of ``k`` >= ``k`` (each of ``k`` methods as often)."""
    return k * max(1, n // k) if k else n


def startup_trials(trials: int, n_methods: int) -> int:
    """Random start-up trials of TPE and GP (also their method cover) for a budget.

    ``max(2, k, min(10, trials // 3))`` rounded down to a multiple of ``k`` methods (at least
    ``k``): every method is tried (once each at least) before any model-based choice, so
    each method's option group has an observation and no method is judged unseen; 10 is
    Optuna's default (with fewer finished trials TPE's ``ceil(0.1 n)`` best set is a single
    trial); at most a third of a small budget, so most trials are guided.
    """
    return _multiple(max(2, n_methods, min(MAX_STARTUP, trials // 3)), n_methods)


def population_size(trials: int, n_methods: int) -> int:
    """NSGA-II's population (= its stratified first generation): ``max(4, k, trials // 3)``
    rounded down to a multiple of ``k`` (about three generations in the budget)."""
    return max(2, _multiple(max(4, n_methods, trials // 3), n_methods))


def _tpe(seed: int, n_startup: int) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():  # group=True is "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=n_startup, multivariate=True, group=True,
            constant_liar=True,
        )  # fmt: skip


def make_sampler(
    name: str,
    seed: int,
    trials: int,
    methods: Sequence[str] = (),
    concurrency: int = 1,
) -> BaseSampler:
    """The Optuna sampler of ``--sampler`` for a budget of ``trials`` (also used by bench/).

    Args:
        name: one of :data:`SAMPLERS`.
        seed: seeds the sampler and the method cover's order.
        trials: the search's budget (sizes the start-up / first generation).
        methods: the space's methods; the first batch covers them (none: no cover).
        concurrency: trials run at once; recorded (TPE's constant liar and GP's q-batch
            fantasies handle running trials whatever their number).

    Returns:
        ``random``: a plain RandomSampler; otherwise a :class:`MethodCoverSampler` around
        TPE, :class:`MethodNSGAIISampler` or :class:`MethodGPSampler`. Either way
        :func:`describe_sampler` reads its settings.

    Raises:
        ValueError: an unknown name.
    """
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
    methods = tuple(methods)
    settings: dict[str, Scalar] = {"name": name, "seed": seed, "trials": trials,
                                   "concurrency": concurrency, "methods": ",".join(methods)}  # fmt: skip
    if name == "random":
        sampler: BaseSampler = optuna.samplers.RandomSampler(seed=seed)
        setattr(sampler, SETTINGS_ATTR, settings)
        return sampler
    base: BaseSampler
    if name == "nsga2":
        n_cover = population_size(trials, len(methods))
        nsga = MethodNSGAIISampler(population_size=n_cover, seed=seed)
        settings.update(population_size=n_cover, crossover="uniform",
                        crossover_prob=nsga.crossover_prob, swapping_prob=nsga.swapping_prob,
                        mutation_prob="1/n", method_mutation_prob=nsga.method_mutation_prob)  # fmt: skip
        base = nsga
    elif name == "gp":
        n_cover = startup_trials(trials, len(methods))
        base = MethodGPSampler(seed=seed, n_startup_trials=n_cover)
        settings.update(startup_trials=n_cover, gp_params="shared (intersection)",
                        conditional_sampler="tpe univariate, constant liar")  # fmt: skip
    else:
        n_cover = startup_trials(trials, len(methods))
        base = _tpe(seed, n_cover)
        settings.update(startup_trials=n_cover, multivariate=True, group=True,
                        constant_liar=True)  # fmt: skip
    cover = MethodCoverSampler(base, methods, n_cover, seed)
    settings.update(cover_trials=cover.n_cover, cover_order=",".join(cover.order))
    setattr(cover, SETTINGS_ATTR, settings)
    return cover


def describe_sampler(sampler: BaseSampler) -> dict[str, Scalar]:
    """The settings of a sampler, flat (logged as MLflow params ``sampler.<key>``).

    Args:
        sampler: one :func:`make_sampler` built (any other sampler: its class only).

    Returns:
        ``class`` (the model's Optuna class) and, for make_sampler's samplers, ``name``,
        ``seed``, ``trials``, ``concurrency``, ``methods`` and each sampler's own settings
        (``cover_trials``, ``cover_order``, ``startup_trials``, ``population_size``, ...).
    """
    model = sampler.base if isinstance(sampler, MethodCoverSampler) else sampler
    out: dict[str, Scalar] = {"class": type(model).__name__, **getattr(sampler, SETTINGS_ATTR, {})}
    if isinstance(model, MethodGPSampler):  # read now: set_acquisition may have changed it
        out.update(model.acquisition())
    return out
