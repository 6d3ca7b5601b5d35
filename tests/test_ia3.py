"""(IA)3, the worked example of a method added as one file: it trains, is searched, exports a
peft folder and predicts, with no edit outside trainables/methods/ia3.py but its import line."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import torch
from safetensors.torch import load_file

from search.cli import main
from search.predict import Predictor
from spaces import METHOD_SPACES, SpaceConfig, define_by_run, param_names, to_train_config
from trainables.backbones import load_backbone
from trainables.export import load_adapter
from trainables.methods import build_method

TRAIN = ["--epochs", "1", "--max-seconds", "1.0", "--batch-size", "8", "--no-feature-cache"]


def test_ia3_trains_exports_a_peft_folder_and_predicts(synth_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--manifest", str(synth_corpus), "--method", "ia3", "--ia3-targets",
            "attention", *TRAIN, "--out", str(out)]  # fmt: skip
    assert main(args) == 0

    result = json.loads((out / "result.json").read_text())
    assert result["method"] == "ia3" and result["method_options"] == {"targets": "attention"}
    bb = load_backbone("tiny-wavlm")
    # One vector per attention projection (q, k, v, out), as wide as its output, per layer.
    assert result["trainable_params_method"] == bb.num_layers * 4 * bb.hidden_size

    peft_dir = out / "adapter" / "peft"
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "IA3"
    from peft import PeftModel

    loaded = PeftModel.from_pretrained(bb.hf_model, peft_dir)
    saved = load_file(str(out / "adapter" / "weights.safetensors"))

    def vectors(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n[n.index("encoder.") :].replace(".default", ""): t
                for n, t in named.items() if "ia3_" in n}  # fmt: skip

    ours, theirs = vectors(saved), vectors(dict(loaded.named_parameters()))
    assert ours and ours.keys() == theirs.keys()
    assert any(not torch.equal(t, torch.ones_like(t)) for t in ours.values())  # it trained
    for name, tensor in ours.items():
        assert torch.equal(theirs[name].detach(), tensor), name

    adapter = load_adapter(out / "adapter")
    assert adapter.meta["method"] == "ia3"
    wav = Path(pd.read_parquet(synth_corpus)["path"].iloc[0])
    if not wav.is_absolute():
        wav = synth_corpus.parent / wav
    got = Predictor(out / "adapter").predict_file(wav)
    assert got["label"] in adapter.labels
    assert abs(sum(got["probabilities"].values()) - 1.0) < 1e-5


def test_ia3_is_searched_from_a_space_file(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("methods: [frozen, ia3]\nepochs: 2\n", encoding="utf-8")
    space = SpaceConfig.from_yaml(path)
    assert space.ia3 == METHOD_SPACES["ia3"]()  # the section the method file declares
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fn, seen = define_by_run(space), set()
    for _ in range(20):
        trial = study.ask()
        fn(trial)
        study.tell(trial, 0.0)
        if trial.params["method"] != "ia3":
            continue
        assert set(trial.params) == set(param_names("ia3"))
        config = to_train_config(trial.params, {"manifest": "m.parquet"})
        build_method(config.method, config.method_options)
        seen.add(config.method_options["targets"])
    assert seen == {"attention", "ffn", "both"}
