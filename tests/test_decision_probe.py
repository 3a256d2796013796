"""eval/decision_probe.py: the expert's decision points, and what the probe reports for policies that look
at the image and policies that follow their noise."""

import numpy as np
import pytest

from eval.decision_probe import decisions, probe
from worldflow.errors import ConfigError

APPLE = "google_robot_place_apple_in_closed_top_drawer"


@pytest.fixture(scope="module")
def items():
    return decisions(APPLE, 1, [0, 1, 2, 3], image_size=(32, 40))


def test_decisions_start_at_the_subtask_with_the_experts_next_actions(items):
    assert [d.instruction for d in items] == ["place apple into top drawer"] * 4
    assert all(d.expert.shape == (16, 7) and d.obs["image"].shape == (32, 40, 3) for d in items)
    # the apple lies elsewhere in each seed, so the expert's first moves differ
    assert np.ptp([d.expert[:8, 1].sum() for d in items]) > 0.02


def test_probe_tells_an_image_reading_policy_from_a_noise_following_one(items):
    by_image = {d.obs["image"].tobytes(): d.expert for d in items}

    def oracle(obs, instruction, seed):  # finds "the apple" in the image it is shown
        return by_image[obs["image"].tobytes()][:8]

    def blind(obs, instruction, seed):  # the data's spread, drawn from the noise seed
        return np.random.default_rng(seed).normal(0, 0.05, (8, 7))

    seen = probe(items, oracle)
    assert seen["y"]["corr_with_expert"] == pytest.approx(1.0) and seen["y"]["mean_error_m"] == 0
    assert seen["y"]["image_swap_m"] > 0.01 and seen["y"]["seed_change_m"] == 0
    assert seen["chunk_steps"] == 8
    guess = probe(items, blind)
    assert guess["y"]["image_swap_m"] == 0 and guess["y"]["seed_change_m"] > 0.01


def test_probe_errors_name_the_input():
    with pytest.raises(ConfigError, match="--subtask 2: .* has subtasks 0..1"):
        decisions(APPLE, 2, [0])
    with pytest.raises(ConfigError, match="at least 3 seeds"):
        probe([], lambda *a: np.zeros((8, 7)))
