"""Strategic-gram files as editors write them: a byte-order mark, blank lines, Windows line ends; and a bad file is
refused before the model loads."""

from __future__ import annotations

import pytest
import torch

from hicra.errors import ConfigError
from hicra.planning import StrategicGramDetector, load_grams
from hicra.training.run import preflight


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8"])
def test_bom_blank_lines_and_crlf_are_not_part_of_any_gram(tmp_path, encoding):
    path = tmp_path / "grams.txt"
    path.write_bytes("wait\r\n\r\n  \r\nlet me check\r\n\ufeffhmm,\n\n".encode(encoding))
    assert load_grams(str(path)) == ["wait", "let me check", "hmm,"]


def test_the_first_gram_of_a_bom_file_matches(smollm2_tokenizer, tmp_path):
    path = tmp_path / "grams.txt"
    path.write_text("wait\nthus\n", encoding="utf-8-sig")  # Notepad's "UTF-8 with BOM"
    detector = StrategicGramDetector(smollm2_tokenizer, grams_path=str(path))
    ids = smollm2_tokenizer("Wait, 2+2=4.", add_special_tokens=False).input_ids
    marks = detector.mask(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.bool))[0]
    assert smollm2_tokenizer.decode([i for i, m in zip(ids, marks.tolist()) if m]) == "Wait"


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "grams.bin"
    path.write_bytes(b"wait\n\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 5\); allowed: a text file") as err:
        load_grams(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("group", ["planner", "diagnostics"])
def test_preflight_checks_the_grams_file_before_any_model_loads(compose_cfg, tmp_path, group):
    path = tmp_path / "missing.txt"
    cfg = compose_cfg("planner=strategic_grams", f"{group}.grams_path={path}")
    with pytest.raises(ConfigError) as err:
        preflight(cfg, {})  # builds the algorithm, sampler and task; never the model
    assert str(err.value) == f"{group}.grams_path={path}: strategic grams file not found: {path}"
