import json

import numpy as np
import pytest

from eval.results import EpisodeLog, markdown_table, summarize, write_summary
from eval.stats import wilson_interval
from policies.conversions import (
    OctoConverter,
    RT1Converter,
    absolute_to_relative_rt1,
    axangle2matrix,
    euler2axangle,
)


def test_wilson_interval_known_values():
    # Known values (e.g. statsmodels proportion_confint(method="wilson")).
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    lo, hi = wilson_interval(29, 100)
    assert lo == pytest.approx(0.2101, abs=1e-4) and hi == pytest.approx(0.3854, abs=1e-4)  # by hand
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_episode_log_resume_and_summary_count_each_once(tmp_path):
    log = EpisodeLog(tmp_path)
    for seed, ok in [(0, True), (1, False), (2, True)]:
        log.append(
            {"task": "t", "seed": seed, "success": ok, "steps": 10, "failure": None if ok else "timeout: x"}
        )
    log.append({"task": "t", "seed": 1, "success": True, "steps": 12, "failure": None})  # a rerun of seed 1
    with open(log.path, "a") as f:
        f.write('{"task": "t", "seed": 3, "succ')  # a line cut by a crash
    assert log.finished() == {("t", 0), ("t", 1), ("t", 2)}
    s = summarize(log.rows())["t"]
    assert s["episodes"] == 3 and s["successes"] == 3
    summary = write_summary(tmp_path, log.rows(), "x")
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert "| t | 3 | 100.0% (3) |" in markdown_table(summary)


def test_euler_to_axis_angle_by_hand():
    np.testing.assert_allclose(euler2axangle(0.3, 0, 0), [0.3, 0, 0], atol=1e-9)
    np.testing.assert_allclose(euler2axangle(0, 0, -0.7), [0, 0, -0.7], atol=1e-9)
    r, p, y = 0.1, -0.2, 0.3
    rz = axangle2matrix(np.array([0, 0, y]))
    ry = axangle2matrix(np.array([0, p, 0]))
    rx = axangle2matrix(np.array([r, 0, 0]))
    np.testing.assert_allclose(axangle2matrix(euler2axangle(r, p, y)), rz @ ry @ rx, atol=1e-9)


def test_octo_gripper_is_relative_and_sticky_for_15_steps():
    conv = OctoConverter()
    outs = [conv(np.array([0, 0, 0, 0, 0, 0, g]))[0][6] for g in [1, 1, 0] + [0] * 16]
    assert outs[:2] == [0, 0]  # first step has no previous; open -> open holds
    assert outs[2:17] == [1.0] * 15  # open -> closed: +1 (close), latched for 15 steps
    assert outs[17] == 0.0
    assert conv(np.zeros(7))[1] is False  # never terminates
    a, term = RT1Converter()(np.arange(7.0), True)
    assert a.tolist() == list(range(7)) and term is True


def test_absolute_gripper_to_env_relative():
    assert absolute_to_relative_rt1(np.array([1, 0, 0, 1]), previous_open=1.0).tolist() == [0, 1, 0, -1]


def _eval_folder(path, task_rates):
    log = EpisodeLog(path)
    for task, (k, n) in task_rates.items():
        for seed in range(n):
            log.append({"task": task, "seed": seed, "success": seed < k, "steps": 5, "failure": None})
    return path


def test_pool_sums_runs_per_shared_task_and_keeps_each_runs_rate(tmp_path, capsys):
    from eval.pool import main, pool

    a = _eval_folder(tmp_path / "a", {"apple": (17, 50), "drawer": (1, 4)})
    b = _eval_folder(tmp_path / "b", {"apple": (11, 50)})
    EpisodeLog(b).append({"task": "apple", "seed": 0, "success": False, "steps": 5, "failure": None})  # rerun
    out = pool([a, b])
    assert list(out) == ["apple"]  # only the task both folders evaluated
    s = out["apple"]
    assert (s["successes"], s["episodes"]) == (27, 100)  # b's rerun of seed 0 (now failed) counts once
    assert s["wilson95"] == pytest.approx(list(wilson_interval(27, 100)))
    assert [(r["successes"], r["episodes"]) for r in s["runs"]] == [(17, 50), (10, 50)]
    assert main([str(a), str(b), "--markdown"]) == 0
    assert "| apple | 2 | 27/100 = 27.0% | [19.3, 36.4] | 17/50, 10/50 |" in capsys.readouterr().out


def test_pool_names_a_folder_without_episodes(tmp_path, capsys):
    from eval.pool import main

    a = _eval_folder(tmp_path / "a", {"apple": (1, 2)})
    assert main([str(a), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing: no episodes.jsonl" in err
