"""eval/convergence.py: the iso-FD ladder and plateau summary from known curves, and a tiny study that is cut
short, resumed and extended."""

import math

import pytest

from eval.convergence import StudyConfig, read_rows, run_study, summarize, write_table


def rows_for(method, fds, seed=0, seconds_per_step=0.1, sampler="euler16"):
    return [
        {"method": method, "seed": seed, "step": 100 * (i + 1), "sampler": sampler, "fd": fd, "probe_acc": 0.5,
         "loss": 1.0, "train_seconds": seconds_per_step * 100 * (i + 1)}
        for i, fd in enumerate(fds)
    ]  # fmt: skip


def test_ladder_ratios_in_steps_and_seconds(tmp_path):
    cfg = StudyConfig(ladder=[250.0, 50.0])
    cfg.train.steps = 300
    rows = rows_for("vanilla", [300, 200, 100], seconds_per_step=0.1)
    rows += rows_for("selfflow", [300, 150, 50], seconds_per_step=0.2)  # faster per step, twice the step cost
    rows += rows_for("vanilla", [300, 200, 100], seed=1) + rows_for("selfflow", [200, 100, 90], seed=1)
    rows += [{**rows[2], "sampler": "sde250", "fd": 80.0}]
    s = summarize(rows, ["vanilla", "selfflow"], cfg)
    assert s["target_fd"] == 100 and s["levels"] == [250.0, 50.0, 100.0]
    sf = {r["fd"]: r for r in s["methods"]["selfflow"]["ladder"]}
    # seed 0 crosses 100 half-way between steps 200 (150) and 300 (50): step 250, 50 s; vanilla: 300, 30 s
    assert sf[100.0]["steps"][0] == pytest.approx(250) and sf[100.0]["seconds"][0] == pytest.approx(50)
    assert sf[100.0]["ratio_steps"][0] == pytest.approx(300 / 250)
    assert sf[100.0]["ratio_seconds"][0] == pytest.approx(30 / 50)
    # seed 1 reaches 100 at step 200; FD 50 only seed 0 reaches, vanilla never: ratio inf (beyond the horizon)
    assert sf[100.0]["steps"][1] == pytest.approx(200)
    assert sf[50.0]["steps"][1] == math.inf and sf[50.0]["ratio_steps"][0] == math.inf
    assert math.isnan(sf[50.0]["ratio_steps"][1])  # neither reaches it
    assert s["methods"]["vanilla"]["final_samplers"] == {"sde250": (80.0, 0.0)}
    assert not s["plateau"]["reached"] and math.isnan(s["plateau"]["vanilla_fd_change"][0])
    write_table(s, tmp_path / "t.md", cfg)
    text = (tmp_path / "t.md").read_text()
    assert "Vanilla's final FD: 100.0" in text and "not a plateau yet" in text
    # FD 250: selfflow at steps 133.3 and 100 (mean 117), vanilla at 150: ratios 1.125 and 1.5
    assert "| selfflow | 117 (1.31 ± 0.27) | never (> horizon/—) |" in text


def test_plateau_reached_when_vanillas_fd_is_flat():
    cfg = StudyConfig(ladder=[])
    cfg.plateau.window = 200
    cfg.train.steps = 400
    s = summarize(rows_for("vanilla", [300, 110, 105, 100]), ["vanilla"], cfg)
    # steps 200 -> 400: 110 -> 100, a 9.1 % change, under the 10 % threshold
    assert s["plateau"]["vanilla_fd_change"] == [pytest.approx(10 / 110)] and s["plateau"]["reached"]


def test_study_resumes_a_cut_run_and_extends_a_finished_one(tmp_path):
    cfg = StudyConfig(out_dir=str(tmp_path), methods=["vanilla"], seeds=[0], workers=1, ladder=[500.0])
    cfg.model.size, cfg.model.patch = "debug", 4
    cfg.data.name, cfg.data.image_size, cfg.data.num_samples = "synthetic_images", 16, 128
    cfg.train.steps, cfg.train.batch_size, cfg.train.log_every, cfg.train.lr = 4, 4, 1, 1e-3
    cfg.eval.every, cfg.eval.samples, cfg.eval.sample_steps, cfg.eval.real = 2, 8, 2, 32
    cfg.eval.probe_train, cfg.eval.probe_test, cfg.eval.final_samplers = 16, 8, {"sde": 3}
    cfg.domain_encoder.steps, cfg.domain_encoder.width, cfg.domain_encoder.dim = 5, 8, 8
    run_study(cfg)
    evals = tmp_path / "runs" / "vanilla_s0" / "evals.csv"
    rows = read_rows(evals)
    assert [(r["step"], r["sampler"]) for r in rows] == [(2, "euler2"), (4, "euler2"), (4, "sde3")]
    assert rows[1]["train_seconds"] >= rows[0]["train_seconds"] > 0
    # cut short after step 4's checkpoint, before its evaluation: the checkpoint goes, step 2's stays
    from eval.convergence import write_rows

    write_rows(evals, rows[:1])
    cfg.train.steps = 6  # and extended beyond the first horizon
    run_study(cfg)
    rows = read_rows(evals)
    assert [(r["step"], r["sampler"]) for r in rows] == [
        (2, "euler2"),
        (4, "euler2"),
        (6, "euler2"),
        (6, "sde3"),
    ]
    ckpts = sorted(p.name for p in (evals.parent / "checkpoints").iterdir())
    assert ckpts == ["step_0000004", "step_0000006"]
    assert "horizon 6 steps" in (tmp_path / "table.md").read_text()
    assert len(read_rows(tmp_path / "results.csv")) == 4
    # report_only: the table of a longer horizon from the rows there, nothing trained
    cfg.train.steps, cfg.report_only = 8, True
    run_study(cfg)
    assert len(read_rows(evals)) == 4 and "horizon 8 steps" in (tmp_path / "table.md").read_text()
