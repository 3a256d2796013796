"""eval/convergence.py's summary: the target is vanilla's final FD even when only ablations were run now."""

from types import SimpleNamespace

from eval.convergence import summarize, write_table


def rows_for(method, fds, seed=0):
    return [
        {"method": method, "seed": seed, "step": 100 * (i + 1), "fd": fd, "probe_acc": 0.5, "loss": 1.0}
        for i, fd in enumerate(fds)
    ]


def test_ablation_only_summary_uses_vanillas_rows(tmp_path):
    rows = rows_for("vanilla", [300, 200, 100]) + rows_for("no_rep", [300, 150, 50])
    s = summarize(rows, ["no_rep"], 300)
    assert s["target_fd"] == 100 and list(s["methods"]) == ["no_rep"]
    reach = s["methods"]["no_rep"]["steps_to_vanilla_final_fd"]
    assert abs(reach - 250) < 1e-9  # 150 -> 50 between steps 200 and 300 crosses 100 half-way
    assert abs(s["methods"]["no_rep"]["speedup_vs_vanilla"] - 300 / 250) < 1e-9
    cfg = SimpleNamespace(
        seeds=[0], train=SimpleNamespace(steps=300), model=SimpleNamespace(size="debug"),
        data=SimpleNamespace(name="synthetic_images", image_size=32),
    )  # fmt: skip
    write_table(s, tmp_path / "t.md", cfg)
    assert "vanilla's final domain FD = 100.000" in (tmp_path / "t.md").read_text()
    empty = summarize(rows_for("no_rep", [3, 2, 1]), ["no_rep"], 300)
    write_table(empty, tmp_path / "e.md", cfg)
    assert "Target: none" in (tmp_path / "e.md").read_text()
