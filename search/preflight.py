"""Checks a search runs on the driver before Ray starts: a bad input fails in a second, named.

Without them a bad manifest or space is found inside every trial, after Ray has started and
the trials were scheduled (and retried), and reads as a search whose trials all failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from search import storage as store
from search.settings import SearchSettings
from spaces import METHOD_PARAM, SpaceConfig, SpaceError, to_train_config
from spaces.params import Choice, Fixed, Range, Scalar
from trainables.config import TrainConfig
from trainables.data.manifest import ManifestError, Partition, fold_values, partition
from trainables.provenance import check_project

End = Literal["low", "high"]


def trial_base(settings: SearchSettings, manifest: Path) -> dict[str, Any]:
    """The TrainConfig fields every trial on ``manifest`` shares (the space sets the rest)."""
    return {
        **store.feature_cache_location(settings.storage),
        **settings.base,
        "manifest": str(Path(manifest).resolve()),
        "backbone": settings.backbone,
    }


def check_search(settings: SearchSettings) -> None:
    """Checks this process's emotune, every manifest and the space, as the trials will use them.

    Raises:
        ProjectError: emotune's packages are shadowed or mixed (see trainables.provenance).
        SpaceError: a method of the space gives no valid TrainConfig with the search's base
            settings (message names the method and which end of the ranges).
        ManifestError: a manifest cannot give the train/dev/test sets the search would use
            (with ``all_folds``, every fold's), or a set has none of its audio files.
        ValueError: bad search settings (``base``, the backbone) for a TrainConfig.
    """
    check_project()
    for manifest in settings.manifests:
        base = trial_base(settings, manifest)
        try:  # the settings alone first, so their errors are not blamed on the space
            TrainConfig.from_dict(dict(base))
        except (ValueError, KeyError) as err:
            raise ValueError(f"search settings: {err}") from err
        configs = space_configs(settings.space, base)
        check_manifest(configs[0], settings.all_folds)


def space_configs(space: SpaceConfig, base: Mapping[str, Any]) -> list[TrainConfig]:
    """One TrainConfig per method of ``space`` and end of its ranges (low and high values).

    Raises:
        SpaceError: naming the method and the end whose point is not a valid config.
    """
    configs = []
    for method in space.methods:
        for end in ("low", "high"):
            point = _point(space, method, end)
            try:
                configs.append(to_train_config(point, base))
            except (ValueError, KeyError) as err:
                raise SpaceError(
                    f"space: method {method!r} with its {end} values {point} gives no valid "
                    f"training config: {err}"
                ) from err
    return configs


def _point(space: SpaceConfig, method: str, end: End) -> dict[str, Scalar]:
    """The sampled point of ``method`` with every param at its ``end``."""
    point: dict[str, Scalar] = {METHOD_PARAM: method}
    for name, param in space.params_of(method).items():  # what a trial of ``method`` samples
        point[name] = _end(param, end)
    return point


def _end(param: Fixed | Range | Choice, end: End) -> Scalar:
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Range):
        return param.low if end == "low" else param.high
    return param.choices[0] if end == "low" else param.choices[-1]


def check_manifest(cfg: TrainConfig, all_folds: bool) -> list[Partition]:
    """The partitions the trials of ``cfg`` will train on; each set must have audio on disk.

    Args:
        cfg: a trial's config (its manifest, ``fold`` and ``dev_fold`` are used).
        all_folds: every fold is a test fold in turn (``--folds all``), dev the next one.

    Raises:
        ManifestError: from :func:`~trainables.data.manifest.partition`, or a set none of whose
            audio files exists (a manifest copied without its audio).
    """
    if all_folds:
        parts = [_fold_partition(cfg.manifest, k) for k in fold_values(cfg.manifest)]
    else:
        parts = [partition(cfg.manifest, cfg.fold, cfg.dev_fold)]
    for part in parts:
        for name in ("train", "dev", "test"):
            items = getattr(part, name)
            # One existing file is enough here: unreadable files are skipped (and reported)
            # by the trials; a set with no file at all could only fail every trial.
            if not any(u.path.is_file() for u in items):
                raise ManifestError(
                    cfg.manifest,
                    f"none of the {len(items)} audio file(s) of the {name} set exists "
                    f"(first: {items[0].path})" + _fold_note(part),
                )
    return parts


def _fold_partition(manifest: Path, fold: int) -> Partition:
    try:
        return partition(manifest, fold)
    except ManifestError as err:  # say which of the folds the trials would train failed
        raise ManifestError(manifest, f"{err.problem} (--folds all, test fold {fold})") from err


def _fold_note(part: Partition) -> str:
    return "" if part.test_fold is None else f" with test fold {part.test_fold}"

