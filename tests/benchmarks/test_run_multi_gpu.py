"""benchmarks/run_multi_gpu.sh runs where no CI can (2+ GPUs): every hicra-train command in it must at least pass
hicra-train's command-line checks (composition, typed values, placement) here, so the first GPU session does not
find a typo. The script's variables are expanded the way the script sets them."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
from support import PROJECT_ROOT

from hicra.config.checks import check_composes, check_every_job
from hicra.config.schema import TRAIN

SCRIPT = PROJECT_ROOT / "benchmarks" / "run_multi_gpu.sh"
CONF = PROJECT_ROOT / "conf"


def _train_commands() -> list[list[str]]:
    """The overrides of each `hicra-train` call, with ${TINY[@]}, $every (both values), $extra and $OUT expanded."""
    text = SCRIPT.read_text()
    tiny = shlex.split(re.search(r"^TINY=\((.*)\)$", text, re.MULTILINE).group(1))
    extras = [shlex.split(e) for e in shlex.split(re.search(r'for extra in (.*?); do', text, re.DOTALL).group(1)
                                                  .replace("\\\n", " "))]
    commands = []
    for call in re.findall(r'run "\$V?BIN/hicra-train" ((?:.*\\\n)*.*)', text):
        args = shlex.split(call.replace("\\\n", " ").replace('"${TINY[@]}"', " ".join(tiny)).replace("$OUT", "/tmp/o"))
        variants = [[]]
        if "$every" in call:
            variants = [["every=false"], ["every=true"]]
        if "$extra" in call:
            variants = extras
        for variant in variants:
            value = variant[0].split("=", 1)[1] if variant and variant[0].startswith("every=") else None
            expanded = [a.replace("$every", value) if value else a for a in args if a != "$extra"]
            commands.append(expanded + ([] if value else variant))
    return commands


def test_the_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_every_hicra_train_call_in_it_passes_the_command_line_checks():
    commands = _train_commands()
    assert len(commands) == 8  # sharded checkpoint: write and resume; gradient exchange: 2; vLLM: 4
    for args in commands:
        cfg = check_composes(args, CONF, "train")
        try:
            check_every_job(args, cfg, CONF, "train", TRAIN)
        except Exception as err:  # noqa: BLE001 - name the failing line
            pytest.fail(f"{' '.join(args)}: {err}")
