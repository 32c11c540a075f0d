"""Tests of experiments/tables.py: the runner, the renderer, the checks and REPORT.md."""
import glob
import os
import shutil
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bioknow as bk  # noqa: E402
from bioknow import read_checkpoint, read_json, read_jsonl, rewrite_jsonl  # noqa: E402
from experiments import tables  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- experiments/tables.py: the paper's tables, their checks and REPORT.md

def test_probe_report_lays_out_figures_5_and_7():
    def row(setting, method, q, qa):
        r = dict(setting=setting, method=method, qa_test={a: qa for a in bk.ATTRIBUTES},
                 q_probe={"first_token": {a: q for a in bk.ATTRIBUTES}, "whole": {a: q for a in bk.ATTRIBUTES[1:]},
                          "baseline": {"first_token": {a: 1.0 for a in bk.ATTRIBUTES},
                                       "whole": {a: 1.0 for a in bk.ATTRIBUTES[1:]}}})
        if method == "qa_finetune":
            grid = [[2.0] * 4 + [90.0] * 2 if a == "company" and setting == "single" else [q] * 6
                    for a in bk.ATTRIBUTES]
            r["p_probe"] = {"first_token": grid, "whole": grid[1:], "attributes": {
                k: list(v) for k, v in bk.PROBE_TARGETS.items()}, "baseline": r["q_probe"]["baseline"]}
        return r
    rows = [row("single", "qa_finetune", 5.0, 7.0), row("multi5+permute+fullname", "qa_finetune", 90.0, 98.0),
            row("single", "mixed", 4.0, 3.0)]
    assert tables.q_probe_vs_qa(rows)["rows"] == pytest.approx(1.0, abs=0.01)
    assert [ok for _, _, ok in tables.probe_checks(rows)] == [True] * 5
    text = tables.probe_markdown({"rows": rows})
    assert "### P-probing, single (Figure 5)" in text and "### Q-probing (Figure 7)" in text
    assert "| paper: single | | 63.4 |" in text
    assert "| company | first token | 1.0 | 2.0 | 2.0 | 2.0 | 2.0 | 90.0" in text


def test_the_papers_own_numbers_hold_every_ordering_check():
    qa, mixed = ({s: tables.PAPER_TABLE[s][k][0] for s in tables.FULL_SETTINGS} for k in (0, 1))
    assert all(holds for _, holds, _ in tables.ordering_checks(qa, mixed))
    flat = dict.fromkeys(qa, 5.0)  # no augmentation effect, and mixed training low everywhere
    assert [holds for _, holds, _ in tables.ordering_checks(flat, flat)] == [False, False, False, False, False]


def test_celebrity_report_sets_every_seed_below_and_checks_each_lift(tmp_path):
    def row(setting, celebrities, seed, p_test):
        return dict(setting=setting, celebrities=celebrities, seed=seed, passes=60.0, preset="tiny", people=40,
                    qa_train={"mean": 90.0}, qa_test=dict({a: p_test for a in bk.ATTRIBUTES}, mean=p_test),
                    memorization_p_train={"mean": 100.0}, memorization_p_test={"mean": 100.0}, minutes=1.0,
                    hardware="cpu", commit="x")
    os.makedirs(tmp_path / "seed1")
    rewrite_jsonl(str(tmp_path / "celebrity.jsonl"), [row("single", 0, 0, 10.0), row("single", 40, 0, 80.0)])
    rewrite_jsonl(str(tmp_path / "seed1" / "celebrity.jsonl"), [row("single", 0, 1, 9.0), row("single", 40, 1, 25.0)])
    table = tables.celebrity_markdown(str(tmp_path / "celebrity.jsonl"))
    assert "| single | 40 | 1 | 60.0 |" in table
    assert "(20+ for each setting and seed): NO; single +70.0 / +16.0 points on seeds 0 / 1 (paper +53.5)" in table


def test_finetune_grid_reuses_the_pretrained_run_and_reports_each_recipe(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "FINETUNE_GRID", [dict(), dict(lora_qv=2, lora_emb=4)])
    monkeypatch.setitem(bk.PRESETS, "tiny", dict(bk.PRESETS["tiny"], people=40))
    bk.pretrained_run("single", "qa_finetune", "tiny", 0, "cpu", str(tmp_path / "work"), quiet=True)
    stamp = os.path.getmtime(tmp_path / "work" / "single-qa_finetune" / "model.pt")
    tables.finetune_grid("tiny", 0, str(tmp_path), "cpu", quiet=True)
    assert os.path.getmtime(tmp_path / "work" / "single-qa_finetune" / "model.pt") == stamp  # reused, not retrained
    rows = read_jsonl(str(tmp_path / "finetune_grid.jsonl"))
    assert [r["recipe"] for r in rows] == ["full finetuning", "LoRA q/v rank 2 + embedding rank 4"]
    assert rows[1]["lora_emb"] == 4 and set(rows[0]["qa_train_first_token"]) == {"mean", *bk.ATTRIBUTES}
    assert rows[0]["lr"] == bk.resolve_config("tiny", "finetune").lr  # the finetuning stage's recipe
    assert [(r["seed"], r["preset"]) for r in rows] == [(0, "tiny")] * 2
    monkeypatch.setattr(tables, "FINETUNE_GRID", [dict(), dict(lora_qv=2, lora_emb=4), dict(passes=2)])
    tables.finetune_grid("tiny", 0, str(tmp_path), "cpu", quiet=True)  # only the new recipe runs; the others kept
    rows2 = read_jsonl(str(tmp_path / "finetune_grid.jsonl"))
    assert rows2[:2] == rows and (rows2[2]["recipe"], rows2[2]["passes"]) == ("full finetuning", 2)
    table = tables.finetune_grid_markdown(str(tmp_path / "finetune_grid.jsonl"))
    assert "| LoRA q/v rank 2 + embedding rank 4 | 0.001 | 1 |" in table
    assert "| full finetuning | 0.001 | 2 |" in table and "98.9, 7.5" in table  # the paper's cell beside each


def test_mixed_sweep_writes_rows_the_report_tabulates(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "MIXED_SWEEP", [dict(people=40, passes=1), dict(people=40, passes=1, n_embd=64)])
    tables.mixed_sweep("tiny", 0, str(tmp_path), "cpu", quiet=True)
    rows = read_jsonl(str(tmp_path / "mixed_sweep.jsonl"))
    assert [r["n_embd"] for r in rows] == [32, 64] and all(0 <= r["qa_test"]["mean"] <= 100 for r in rows)
    table = tables.mixed_sweep_markdown(str(tmp_path / "mixed_sweep.jsonl"))
    assert table.count("\n| 40 |") == 2


def test_headline_choice_scores_held_out_p_train_people_and_names_the_best(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "HEADLINE_CANDIDATES", [dict(people=40, passes=2, holdout=0.25),
                                                        dict(people=20, passes=4, holdout=0.25)])
    tables.TABLES["headline-choice"]("tiny", 0, str(tmp_path), "cpu", quiet=True)
    rows = read_jsonl(str(tmp_path / "headline_choice.jsonl"))
    assert [(r["people"], r["passes"]) for r in rows] == [(40, 2), (20, 4)]
    assert all(0 <= r["qa_holdout"]["mean"] <= 100 and r["config"]["holdout"] == 0.25 for r in rows)
    table = tables.headline_choice_markdown(str(tmp_path / "headline_choice.jsonl"))
    best = max(rows, key=lambda r: r["qa_holdout"]["mean"])
    assert table.count("\n| 40 | 2 | 0.8 | 0.003 | 0.1 | 0 |") == 1
    assert f"N = {best['people']} at {best['passes']} passes, QAr 0.8, lr 0.003, wd 0.1" in table
    held = {(40, 0): 30.0, (20, 0): 20.0, (40, 1): 10.0, (20, 1): 25.0}  # means 20.0 and 22.5, seeds 20 apart
    rewrite_jsonl(str(tmp_path / "headline_choice.jsonl"), [dict(r, seed=s, qa_holdout=dict(mean=held[r["people"], s]))
                                                           for s in (0, 1) for r in rows])
    table = tables.headline_choice_markdown(str(tmp_path / "headline_choice.jsonl"))
    assert "| **30.0, 10.0 (mean 20.0)** |" in table and "N = 20 at 4 passes, QAr 0.8, lr 0.003, wd 0.1 (22.5%" in (
        table)
    assert "(up to 20.0 points), so no candidate is shown to be better." in table and "Seed by seed" not in table
    held = {(200, 0): 30.0, (20, 0): 35.0, (200, 1): 10.0, (20, 1): 25.0}  # (200, 4): the tiny preset's own recipe
    rewrite_jsonl(str(tmp_path / "headline_choice.jsonl"), [dict(r, seed=s, people=n, passes=4, qa_holdout=dict(
        mean=held[n, s])) for s in (0, 1) for r, n in zip(rows, (200, 20))])
    table = tables.headline_choice_markdown(str(tmp_path / "headline_choice.jsonl"))
    assert "| **30.0, 10.0 (mean 20.0)** | the preset |" in table
    assert "| **35.0, 25.0 (mean 30.0)** | +5.0, +15.0 |" in table
    assert "above the preset's recipe on every seed (+5.0, +15.0 points)." in table


def test_qa_ratio_sweep_keeps_finished_runs_adds_a_seed_and_sets_the_paper_beside(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "QA_RATIO_SWEEP", [dict(people=40, passes=1, qa_ratio=r) for r in (0.2, 0.8)])
    path = str(tmp_path / "qa_ratio.jsonl")
    sweep = lambda seed: tables.mixed_sweep("tiny", seed, str(tmp_path), "cpu", True, tables.QA_RATIO_SWEEP,  # noqa: E731
                                            "qa_ratio.jsonl", resume=True)
    sweep(0)
    rewrite_jsonl(path, read_jsonl(path)[:1])  # as if killed after its first run
    sweep(0), sweep(1)
    rows = read_jsonl(path)
    assert sorted((r["qa_ratio"], r["seed"]) for r in rows) == [(0.2, 0), (0.2, 1), (0.8, 0), (0.8, 1)]
    table = tables.qa_ratio_markdown(path)
    assert table.count("| 0.2 |") == 1 and "(mean " in table and "| 53.6 |" in table and "| 85.7 |" in table
    assert "mean over seeds 0, 1" in table
    # QAr 0.2 at 16 passes shows its QA as often as 0.8 at 1 (16 x 0.2 / 0.8 = 1 x 0.8 / 0.2): the paper's column
    # stays empty there, and a line sets it against both
    rewrite_jsonl(path, rows + [dict(r, passes=16) for r in rows if r["qa_ratio"] == 0.2])
    table = tables.qa_ratio_markdown(path)
    assert "| 0.2 | bio | 16 | 4 |" in table and table.count("| 53.6 |") == 1
    assert "seen as often (4) at every ratio: QAr 0.2 at 16 passes " in table and "; QAr 0.8 at 1 passes " in table


@pytest.mark.slow
def test_full_table_resumes_and_the_celebrity_table_reuses_it(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "FULL_SETTINGS", ("single", "single+permute1"))
    monkeypatch.setitem(bk.PRESETS, "tiny", dict(bk.PRESETS["tiny"], people=40, passes=1))
    tables.full_table("tiny", 0, str(tmp_path), "cpu", quiet=True)
    path = str(tmp_path / "full_table.jsonl")
    rows = read_jsonl(path)
    assert [(r["setting"], r["method"]) for r in rows] == [(s, m) for s in tables.FULL_SETTINGS for m in tables.FULL_METHODS]
    assert all(set(r["q_probe"]["whole"]) == set(bk.ATTRIBUTES[1:]) and r["people"] == 40 for r in rows)
    rewritten = rows[:3]  # a run killed after three rows continues with the fourth, keeping the three
    rewrite_jsonl(path, rewritten)
    tables.full_table("tiny", 0, str(tmp_path), "cpu", quiet=True)
    again = read_jsonl(path)
    assert again[:3] == rewritten and len(again) == 4
    table = tables.full_table_markdown(path)
    assert "| single+permute1 | bioknow |" in table and "| | paper | 4.4 |" in table
    assert "| single+permute1 below single (QA) |" in table  # the one ordering these two settings can show
    run = tmp_path / "work" / "full" / "single-qa_finetune" / "model.pt"
    stamp = os.path.getmtime(run)
    tables.celebrity_table("tiny", 0, str(tmp_path), "cpu", quiet=True)
    assert os.path.getmtime(run) == stamp  # the alone rows reuse the full table's pretrained models
    rows = read_jsonl(str(tmp_path / "celebrity.jsonl"))
    assert [(r["setting"], r["celebrities"]) for r in rows] == [("single+permute1", 0), ("single+permute1", 40),
                                                                 ("single", 0), ("single", 40)]
    celebrities = bk.load_data(str(tmp_path / "work" / "full" / "data-single+celebrities"))
    assert celebrities["meta"]["celebrities"] == 40 and celebrities["meta"]["n_test"] == 40
    table = tables.celebrity_markdown(str(tmp_path / "celebrity.jsonl"))
    assert "| single | 40 |" in table and "| 63.2 |" in table and "single+permute1 " in table.split("\n")[-2]


@pytest.mark.slow
def test_gbert_tables_set_the_gpt_beside_and_the_passes_it_needs(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "GBERT_ROWS", (("single", "qa_finetune"),))
    monkeypatch.setitem(bk.PRESETS, "tiny", dict(bk.PRESETS["tiny"], people=40, passes=1))
    tables.gbert_table("tiny", 0, str(tmp_path), "cpu", quiet=True)
    row, = read_jsonl(str(tmp_path / "gbert.jsonl"))
    assert row["objective"] == "mlm" and 0 <= row["qa_test"]["mean"] <= 100
    assert read_checkpoint(str(tmp_path / "work" / "gbert" / "single-qa_finetune-qa"))[1].objective == "mlm"
    gpt = dict(row, preset="tiny", qa_test=dict.fromkeys(row["qa_test"], 50.0))
    rewrite_jsonl(str(tmp_path / "full_table.jsonl"), [gpt])
    table = tables.gbert_markdown(str(tmp_path / "gbert.jsonl"))
    assert "| single | qa_finetune | GBERT |" in table and "| single | qa_finetune | GPT |" in table
    assert "| 3.7 |" in table and "Its two best" in table
    monkeypatch.setattr(tables, "GBERT_BUDGET", (("single", 1), ("single", 2)))  # a line a run, kept
    tables.gbert_budget("tiny", 0, str(tmp_path), "cpu", quiet=True)
    rows = read_jsonl(str(tmp_path / "gbert_budget.jsonl"))
    assert [(r["passes"], r["objective"], r["setting"]) for r in rows] == [(1, "mlm", "single"), (2, "mlm", "single")]
    assert rows[1]["pretrain_steps"] > rows[0]["pretrain_steps"]
    tables.gbert_budget("tiny", 0, str(tmp_path), "cpu", quiet=True)
    assert read_jsonl(str(tmp_path / "gbert_budget.jsonl")) == rows  # finished runs are not run again
    table = tables.gbert_budget_markdown(str(tmp_path / "gbert_budget.jsonl"))
    assert "| single | 2 | 0 | " in table and "not memorised" in table


def test_report_renders_the_committed_results_and_refuses_without_them(tmp_path, capsys):
    """results/REPORT.md is what `tables.py report` renders from the committed results files, byte for byte."""
    shutil.copytree(os.path.join(HERE, "results"), tmp_path / "results", ignore=shutil.ignore_patterns("work"))
    tables.main(["report", "--out", str(tmp_path / "results")])
    report = (tmp_path / "results" / "REPORT.md").read_text()
    assert report == open(os.path.join(HERE, "results", "REPORT.md")).read()
    seeds = [read_json(p)["seed"] for p in [str(tmp_path / "results" / "reproduce.json")]
             + sorted(glob.glob(str(tmp_path / "results" / "seed*" / "reproduce.json")))]
    assert len(seeds) < 2 or ("## The headline on every seed" in report and "| single mixed | mean |" in report
                              and all(f"| single mixed | {s} |" in report for s in seeds))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        tables.main(["report", "--out", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "no " in err and not (tmp_path / "none").exists()




def test_scale_study_keeps_finished_runs_and_the_report_marks_unmemorised_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "SCALE_POINTS", [dict(people=40, passes=1, where="cpu"),
                                                 dict(people=40, passes=1, n_embd=64, where="cpu"),
                                                 dict(people=40, passes=1, where="gpu")])
    monkeypatch.setattr(tables, "SCALE_SEEDS", (0,))
    tables.scale_study("tiny", 0, str(tmp_path), "cpu", quiet=True)
    rows = read_jsonl(str(tmp_path / "mixed_scale.jsonl"))
    assert [r["overrides"] for r in rows] == [dict(people=40, passes=1), dict(people=40, passes=1, n_embd=64)]
    assert all(r["config"]["mode"] == "mixed" and r["hardware"].startswith("cpu") and "minutes" in r for r in rows)
    assert all(r["config"]["people"] == 40 and r["seed"] == 0 and "memorization_p_test" in r for r in rows)
    tables.scale_study("tiny", 0, str(tmp_path), "cpu", quiet=True)  # nothing left to run
    assert read_jsonl(str(tmp_path / "mixed_scale.jsonl")) == rows
    table = tables.scale_markdown(str(tmp_path / "mixed_scale.jsonl"))
    assert table.count("**not memorised**") == 2 and "| 40 | 1x64 |" in table
    assert "P_test against people" not in table  # no points that differ in N alone
    curve = [dict(r, people=n, overrides=dict(people=n, packing="entries"), packing="entries",
                  qa_test=dict(r["qa_test"], mean=q)) for n, q in ((2000, 30.0), (500, 10.0)) for r in rows[:1]]
    rewrite_jsonl(str(tmp_path / "curve.jsonl"), curve)
    line, cpu = tables.scale_markdown(str(tmp_path / "curve.jsonl")).splitlines()[-3], rows[0]["hardware"].split(",")[0]
    assert line.startswith("P_test against people") and line.index(f"500 10.0 (not memorised) ({cpu})") < line.index(
        f"2,000 30.0 (not memorised) ({cpu})")
    longer = dict(curve[1], passes=2, overrides=dict(curve[1]["overrides"], passes=2), qa_test=dict(mean=20.0))
    deeper = dict(curve[1], n_layer=3, overrides=dict(curve[1]["overrides"], n_layer=3), qa_test=dict(mean=5.0))
    wider = dict(deeper, n_layer=1, n_embd=64, overrides=dict(curve[1]["overrides"], n_embd=64),
                 memorization_p_test=dict(mean=100.0))
    rewrite_jsonl(str(tmp_path / "curve.jsonl"), curve + [longer, deeper, wider])
    lines = tables.scale_markdown(str(tmp_path / "curve.jsonl")).splitlines()
    along = lambda title: next(x for x in lines if x.startswith(f"P_test against {title}"))  # noqa: E731
    assert f"N = 500: 1 passes 10.0 (not memorised) ({cpu}), 2 passes 20.0 (not memorised)" in along("biography")
    assert f"N = 500: 1 layers 10.0 (not memorised) ({cpu}), 3 layers 5.0 (not memorised) ({cpu})." in along("depth")
    assert f"N = 500: 32 wide 10.0 (not memorised) ({cpu}), 64 wide 5.0 ({cpu})." in along("width")
    assert "target for mixed training (P_test mean >= 60%" in table and "reached at no point on every seed." in table
    good = dict(longer, qa_test=dict(mean=70.0), memorization_p_test=dict(mean=100.0))
    rewrite_jsonl(str(tmp_path / "curve.jsonl"), curve + [good])
    assert "every seed): reached at 500, 1x32, " in tables.scale_markdown(str(tmp_path / "curve.jsonl"))
    probed = [dict(good, setting="single", method="mixed", seed=s, overrides=dict(n_embd=64)) for s in (0, 1)]
    rewrite_jsonl(str(tmp_path / "probe_scale.jsonl"), probed + [dict(probed[0], setting="multi5")])
    assert f"`probe_scale.jsonl` reaches it on every seed at N = 40, 1x32 (70.0, 70.0 (mean 70.0), {cpu})." in \
        tables.scale_markdown(str(tmp_path / "curve.jsonl"))


def test_packing_table_and_probe_curve_write_what_the_report_renders(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "PACKING_ROWS", [("single", "mixed", p, 0) for p in ("stream", "entries")])
    monkeypatch.setitem(bk.PRESETS, "tiny", dict(bk.PRESETS["tiny"], people=40, passes=1))
    tables.packing_table("tiny", 0, str(tmp_path), "cpu", quiet=True)
    rows = read_jsonl(str(tmp_path / "packing.jsonl"))
    assert [(r["packing"], r["seed"]) for r in rows] == [("stream", 0), ("entries", 0)]
    assert "| single | mixed | entries |" in tables.packing_markdown(str(tmp_path / "packing.jsonl"))
    monkeypatch.setattr(tables, "PROBE_CURVE", dict(models=("single",), q_steps=(0, 2), p_steps=(0,),
                                                    readouts=("linear", "candidates"), q_reads=("name",)))
    with pytest.raises(bk.UserError, match="reproduce"):
        tables.probe_curve("tiny", 0, str(tmp_path), "cpu", quiet=True)
    bk.pretrained_run("single", "qa_finetune", "tiny", 0, "cpu", str(tmp_path / "work"), quiet=True)
    tables.probe_curve("tiny", 0, str(tmp_path), "cpu", quiet=True)
    curve = read_jsonl(str(tmp_path / "probe_curve.jsonl"))
    assert [(r["probe"], r["readout"], r["steps"]) for r in curve] == [
        ("q", "linear", 0), ("q", "linear", 2), ("q", "candidates", 0), ("q", "candidates", 2), ("p", "linear", 0),
        ("p", "candidates", 0)]
    assert all(r["result"]["scored_on"] == "held-out P_train" for r in curve)
    assert "| single | Q | name | candidates | 2 |" in tables.probe_curve_markdown(str(tmp_path / "probe_curve.jsonl"))


@pytest.mark.slow
def test_probe_scale_probes_each_model_with_both_readouts_and_reuses_a_finished_pretraining(tmp_path, monkeypatch):
    small = dict(people=40, passes=1)
    monkeypatch.setattr(tables, "PROBE_SCALE", [("single", "qa_finetune", small, (0,)),
                                                ("single", "mixed", dict(small, qa_ratio=0.5), (0,))])
    work = tables.probe_scale_work(str(tmp_path), "single", "qa_finetune", small, 0)
    _, _, run, model, _ = bk.pretrained_run("single", "qa_finetune", "tiny", 0, "cpu", work, quiet=True,
                                            train_overrides=small)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tables.probe_scale("tiny", 0, str(tmp_path), "cpu", quiet=True)
    rows = read_jsonl(str(tmp_path / "probe_scale.jsonl"))
    assert [(r["method"], r["pretraining_reused"], r["qa_ratio"], r["config"]["mode"]) for r in rows] == [
        ("qa_finetune", True, 0.8, "bio"), ("mixed", False, 0.5, "mixed")]  # the config each run was trained with
    reloaded, _, _ = bk.load_checkpoint(run, "cpu", bk.load_data(str(tmp_path / "work" / "probe-scale" /
                                                                     "single-qa_finetune-passes1-people40-seed0" /
                                                                     "data-single"))["vocab"])
    assert all(torch.equal(before[k], v) for k, v in reloaded.state_dict().items())  # reused, not retrained
    for r in rows:
        assert set(r["probes"]) == {"linear", "candidates"}
        assert all(set(p) >= {"p_probe", "q_probe"} and p["q_probe"]["scored_on"] == "P_test"
                   for p in r["probes"].values())
    tables.probe_scale("tiny", 0, str(tmp_path), "cpu", quiet=True)  # nothing left to run
    assert read_jsonl(str(tmp_path / "probe_scale.jsonl")) == rows
    table = tables.probe_scale_markdown(str(tmp_path / "probe_scale.jsonl"))
    assert "| single mixed | 40 | 1x32 | 1 | 0.5 | 0 |" in table and table.count(" / ") >= 6
    grown = [dict(rows[0], overrides=dict(people=n), config=dict(rows[0]["config"], people=n)) for n in (40, 80)]
    rewrite_jsonl(str(tmp_path / "probe_scale.jsonl"), rows + grown)  # as if the model's N were the only override
    table = tables.probe_scale_markdown(str(tmp_path / "probe_scale.jsonl"))
    assert "Against people" in table and "single qa_finetune: N = 40 Q-probe" in table and "; N = 80 Q-probe" in table
