"""Every example sweep file in sweeps/ validates: keys, values, inputs and models."""
from pathlib import Path

import pytest

from specblur.speaker import missing_requirements
from specblur.sweep.config import load_sweep

SWEEPS = sorted((Path(__file__).resolve().parent.parent / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_example_sweep_validates(path):
    if "speaker_encoder" in path.read_text() and missing_requirements():
        pytest.skip(missing_requirements())
    sweep = load_sweep(path)
    assert sweep.runs and len({run.run_id for run in sweep.runs}) == len(sweep.runs)


def test_the_recommendation_is_the_first_run_of_speaker_faithful():
    path = next(p for p in SWEEPS if p.name == "speaker_faithful.yaml")
    if missing_requirements():
        pytest.skip(missing_requirements())
    first = load_sweep(path).runs[0].settings
    assert (first.param, first.r_max, first.optimizer, first.adam_eps) == ("sigmoid", 128.0, "adam", 30.0)
    assert first.model["kind"] == "speaker_encoder" and first.lambda_on == "mse"
