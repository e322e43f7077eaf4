"""benchmarks/ablation_table.py: the ablation's table from run folders (means, spreads, deltas)."""

import json
import os

from benchmarks import ablation_table


def _run(out, config, seed, box, mask, steps, fps, speed_prefix="Loaded weights from x\n"):
    tag = f"{config}_seed{seed}"
    os.makedirs(os.path.join(out, f"run_{tag}"))
    with open(os.path.join(out, f"run_{tag}", "train_summary.json"), "w") as f:
        json.dump({"step": steps, "train_seconds": 180.0}, f)
    with open(os.path.join(out, f"metrics_{tag}.json"), "w") as f:
        json.dump({"bbox": {"AP": box}, "segm": {"AP": mask}}, f)
    with open(os.path.join(out, f"speed_{tag}.json"), "w") as f:
        f.write(speed_prefix + json.dumps({"fps": fps, "network_ms": 3.0}))


def test_means_spreads_and_deltas_against_plain(tmp_path):
    out = str(tmp_path)
    _run(out, "plain", 0, 0.50, 0.40, 1000, 80.0)
    _run(out, "plain", 1, 0.54, 0.44, 1010, 82.0)
    _run(out, "se", 0, 0.49, 0.42, 900, 70.0)
    os.makedirs(os.path.join(out, "run_cbam_seed0"))  # started, never finished
    runs = ablation_table.read_runs(out)
    assert [(r["config"], r["seed"], r["finished"]) for r in runs] == [
        ("plain", 0, True), ("plain", 1, True), ("se", 0, True), ("cbam", 0, False)]
    rows = {r["config"]: r for r in ablation_table.summary_rows(runs)}
    assert rows["plain"]["box_ap"] == "52.0 (50.0..54.0)"
    assert rows["plain"]["mask_ap"] == "42.0 (40.0..44.0)"
    assert rows["plain"]["iterations"] == "1005 (1000..1010)"
    assert rows["se"]["box_ap"] == "49.0"
    assert rows["se"]["delta"] == "-3.0 / +0.0"
    assert rows["plain"]["delta"] == ""
    text = ablation_table.markdown(runs)
    assert "| SE attention | 0 | 49.0 | 42.0 | -3.0 / +0.0 | 900 | 70 |" in text
    assert "Unfinished (left out): cbam_seed0" in text


def test_main_writes_json_and_refuses_an_empty_folder(tmp_path, capsys):
    out = str(tmp_path / "abl")
    os.makedirs(out)
    assert ablation_table.main([out]) == 2
    assert "no run_<config>_seed<N> folders" in capsys.readouterr().err
    _run(out, "ctx", 3, 0.3, 0.2, 500, 60.0, speed_prefix="")
    assert ablation_table.main([out]) == 0
    with open(os.path.join(out, "ablation.json")) as f:
        saved = json.load(f)
    assert saved[0]["config"] == "ctx" and abs(saved[0]["box_ap"] - 30.0) < 1e-9
    assert ablation_table.main([str(tmp_path / "missing")]) == 2
