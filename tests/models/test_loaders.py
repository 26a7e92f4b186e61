"""`load_pretrained` loads a model as saved or refuses in one line: weights missing from the files, weights the
config has no place for, a weight of another shape, and a cut or garbage weights file are each a ConfigError naming
the folder (hicra-eval and hicra-train share this loader)."""

from __future__ import annotations

import json
import shutil

import pytest

from hicra.errors import ConfigError
from hicra.models.loaders import load_pretrained


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from hicra.models.loaders import build_tiny_model

    folder = tmp_path_factory.mktemp("saved") / "model"
    bundle = build_tiny_model()  # 2 layers
    bundle.model.save_pretrained(folder)
    bundle.tokenizer.save_pretrained(folder)
    return folder


def _copy(saved, tmp_path, config: dict | None = None, weights: bytes | None = None):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(json.loads((folder / "config.json").read_text()) | config))
    if weights is not None:
        (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_a_model_saved_whole_loads(saved):
    assert load_pretrained(str(saved)).model.config.num_hidden_layers == 2


@pytest.mark.parametrize("config,fragments", [
    ({"num_hidden_layers": 3}, ["9 weights missing from its weights files (they would stay random)",
                                "model.layers.2.input_layernorm.weight", "and 6 more"]),
    ({"num_hidden_layers": 1}, ["9 weights in its weights files but not in the model its config.json builds",
                                "model.layers.1."]),
    ({"intermediate_size": 96}, ["cannot load model", "ignore_mismatched_sizes"]),
])
def test_a_config_that_does_not_match_the_weights_is_refused(saved, tmp_path, config, fragments):
    folder = _copy(saved, tmp_path, config=config)
    with pytest.raises(ConfigError) as err:
        load_pretrained(str(folder))
    message = str(err.value)
    assert "\n" not in message and str(folder) in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_weights_file_is_refused(saved, tmp_path, damage):
    whole = (saved / "model.safetensors").read_bytes()
    weights = {"truncated": whole[: len(whole) // 2], "garbage": b"\x00garbage" * 64, "empty": b""}[damage]
    folder = _copy(saved, tmp_path, weights=weights)
    with pytest.raises(ConfigError, match="a weights file is not a complete safetensors file") as err:
        load_pretrained(str(folder))
    assert "\n" not in str(err.value) and str(folder) in str(err.value)
