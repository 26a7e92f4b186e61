"""NullDetector marks nothing, and says so, so that HICRA can refuse it."""

import torch

from hicra.planning import HighEntropyDetector, NullDetector, PlanningDetector, StrategicGramDetector


def test_null_detector_marks_nothing():
    det = NullDetector()
    ids = torch.randint(0, 100, (3, 7))
    marks = det.mask(ids, torch.ones(3, 7, dtype=torch.bool), entropies=torch.rand(3, 7))
    assert marks.dtype == torch.bool and marks.shape == (3, 7) and not marks.any()
    assert isinstance(det, PlanningDetector)
    assert not det.needs_entropy


def test_marks_planning_flags():
    assert NullDetector.marks_planning is False
    assert StrategicGramDetector.marks_planning is True
    assert HighEntropyDetector.marks_planning is True


def test_planning_package_imports_no_framework():
    import subprocess
    import sys

    code = (
        "import sys, hicra.planning; "
        "heavy = {'transformers', 'lightning', 'pytorch_lightning', 'hydra', 'mlflow', 'omegaconf'}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
