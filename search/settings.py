"""What ``emotune search`` was asked to do, validated before anything runs."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search import storage as store
from search.choices import SAMPLERS, SCHEDULERS
from spaces import SpaceConfig
from trainables.objectives import OBJECTIVES

# Every trainer picks its best epoch by dev UAR and every scheduler ranks trials on it, so every
# search optimises it (the other objectives are any rows of trainables.objectives.OBJECTIVES).
REQUIRED_OBJECTIVE = "uar"


@dataclass(frozen=True)
class SearchSettings:
    """Everything ``emotune search`` was asked to do (validated before Ray starts)."""

    manifests: tuple[Path, ...]
    backbone: str = "tiny-wavlm"
    trials: int = 8
    concurrency: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    sampler: str = "tpe"
    objectives: tuple[str, ...] = ("uar", "params")
    address: str | None = None
    storage: str | Path = Path("runs/search")  # a folder (local or NFS) or s3:// / gs:// URI
    shared_storage: bool = False  # the user says a local-looking folder is on every node
    tracking_uri: str | None = None
    name: str = "search"
    resume: bool = False
    space: SpaceConfig = field(default_factory=SpaceConfig)
    base: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields shared by trials
    # Epochs (folds with all_folds) before the scheduler may stop a trial. 1: on the tabular
    # benchmark (BENCHMARKS.md (e)) the default search reached random search's final hypervolume
    # at 0.33x its cost with 1, 0.62x with 2.
    grace_period: int = 1
    scheduler: str | None = None  # a SCHEDULERS name; None: see scheduler_name
    reduction_factor: float = 2  # rungs at grace_period * rf**k; 1/rf of each rung promoted
    all_folds: bool = False  # score each configuration by the mean over every fold
    max_failures: int = 2
    seed: int = 0
    reuse_actors: bool = True  # a worker runs trial after trial: imports paid once per worker

    def __post_init__(self) -> None:
        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad or REQUIRED_OBJECTIVE not in self.objectives:
            raise ValueError(
                f"objectives must include {REQUIRED_OBJECTIVE} and be among "
                f"{list(OBJECTIVES)}; got {list(self.objectives)}"
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.trials < 1 or self.concurrency < 1:
            raise ValueError("trials and concurrency must be >= 1")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ValueError("cpus-per-trial must be > 0 and gpus-per-trial >= 0")
        self._check_scheduler()
        for m in self.manifests:
            if not Path(m).is_file():
                raise FileNotFoundError(f"manifest {m} does not exist")

    def _check_scheduler(self) -> None:
        """``scheduler`` among SCHEDULERS (or None), ``grace_period`` a whole number >= 1,
        ``reduction_factor`` a finite number > 1."""
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise ValueError(
                f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"
            )
        grace, rf = self.grace_period, self.reduction_factor
        if isinstance(grace, bool) or not isinstance(grace, numbers.Integral) or grace < 1:
            raise ValueError(f"grace-period must be a whole number >= 1, got {grace!r}")
        if isinstance(rf, bool) or not isinstance(rf, numbers.Real) or not 1 < rf < math.inf:
            raise ValueError(f"reduction-factor must be a finite number > 1, got {rf!r}")

    @property
    def scheduler_name(self) -> str:
        """The scheduler that runs: :attr:`scheduler`, else ``mo-asha`` when the search has
        several objectives and ``asha`` when it has one."""
        if self.scheduler is not None:
            return self.scheduler
        return "mo-asha" if len(self.objectives) > 1 else "asha"

    @property
    def root(self) -> Path:
        """The driver's local folder of this search (a mirror when storage is a URI)."""
        return store.local_root(self.storage, self.name)
