"""cluster.yaml and its on-prem variant pass the checks `ray up` runs (offline)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "cluster.yaml", ROOT / "docs" / "cluster-onprem.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_passes_ray_validation(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert any("constraints.txt" in c for c in prepared["setup_commands"])
    assert any("torch==2.13.0" in c for c in prepared["setup_commands"])
    head = prepared["head_start_ray_commands"]
    assert any("--dashboard-host=127.0.0.1" in c for c in head)  # not exposed by default


def test_aws_config_has_autoscaling_gpu_workers() -> None:
    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["min_workers"] == 0 and workers["max_workers"] >= 1
    assert workers["node_config"]["InstanceType"].startswith(("g", "p"))


def test_validation_catches_a_broken_config() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["head_node_type"] = "no-such-type"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(config))
