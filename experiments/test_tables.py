"""Tests of experiments/tables.py: the runner (resume, side by side, a killed table continues),
each check's predicate, the verdict, one small golden render and the report of results/."""
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bioknow as bk  # noqa: E402
from bioknow import read_jsonl, rewrite_jsonl  # noqa: E402
from experiments import tables  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


# --------------------------------------------------------------------------------------------------
# --- the runner, with bk.reproduce_row replaced by a stand-in that records its calls

def fake_result(setting, method, qa=50.0, memorised=100.0):
    per = dict.fromkeys(bk.ATTRIBUTES, qa)
    return dict(setting=setting, method=method, qa_train=dict(per, mean=100.0),
                qa_test=dict(per, mean=qa), memorization_p_train=dict(mean=memorised),
                memorization_p_test=dict(mean=memorised), bio_memorization=memorised,
                bio_memorization_min=memorised, pretrain_steps=10, minutes=0.1,
                hardware="cpu, test")


@pytest.fixture
def calls(monkeypatch):
    """bk.reproduce_row's calls, each answered at once; no data is made."""
    made = []

    def reproduce_row(setting, method, **options):
        made.append(dict(options, setting=setting, method=method))
        return fake_result(setting, method, qa=float(len(made)))

    def no_data(*args, **kwargs):
        return None
    monkeypatch.setattr(bk, "reproduce_row", reproduce_row)
    monkeypatch.setattr(bk, "setting_data", no_data)
    return made


def three_rows(preset, seed, out, device):
    return [tables.Row(dict(setting=s, method="mixed", train_overrides=dict(passes=p)),
                       dict(passes=p)) for s, p in (("single", 1), ("multi2", 2), ("single", 3))]


TOY = tables.Table("toy.jsonl", three_rows, key=("setting", "passes"), preset="tiny")


def test_a_killed_table_continues_and_keeps_its_finished_lines(tmp_path, calls):
    tables.run_table(TOY, "tiny", 0, str(tmp_path), "cpu", quiet=True)
    path = str(tmp_path / "toy.jsonl")
    lines = read_jsonl(path)
    assert [(r["setting"], r["passes"], r["preset"], r["seed"]) for r in lines] == [
        ("single", 1, "tiny", 0), ("multi2", 2, "tiny", 0), ("single", 3, "tiny", 0)]
    assert [c["train_overrides"] for c in calls] == [dict(passes=p) for p in (1, 2, 3)]
    rewrite_jsonl(path, [lines[0], lines[2]])  # killed while the second row ran
    calls.clear()
    tables.run_table(TOY, "tiny", 0, str(tmp_path), "cpu", quiet=True)
    again = read_jsonl(path)
    assert [c["train_overrides"] for c in calls] == [dict(passes=2)]  # only the missing row runs
    assert again[0] == lines[0] and again[2] == lines[2] and again[1]["passes"] == 2
    calls.clear()
    tables.run_table(TOY, "tiny", 1, str(tmp_path), "cpu", quiet=True)  # another seed: new rows
    assert len(calls) == 3 and [r["seed"] for r in read_jsonl(path)] == [0, 1, 0, 1, 0, 1]


def test_rows_side_by_side_land_in_the_tables_order_beside_another_writers(tmp_path, monkeypatch):
    path = str(tmp_path / "toy.jsonl")
    seen = {}

    def run_rows(tasks, preset, seed, device, work, jobs=1, quiet=False, desc=""):
        seen.update(jobs=jobs, work=work)
        other = dict(fake_result("other", "mixed"), preset="tiny", seed=9)
        rewrite_jsonl(path, [other])  # a line another command writes meanwhile
        for task in reversed(tasks):  # the last row finishes first
            yield task, fake_result(task["setting"], task["method"])
    monkeypatch.setattr(bk, "run_rows", run_rows)
    table = tables.Table("toy.jsonl", three_rows, key=("setting", "passes"), work="toy")
    tables.run_table(table, "tiny", 0, str(tmp_path), "cpu", quiet=True, jobs=2)
    assert seen == dict(jobs=2, work=str(tmp_path / "work" / "toy"))
    assert [(r["setting"], r.get("passes")) for r in read_jsonl(path)] == [
        ("single", 1), ("multi2", 2), ("single", 3), ("other", None)]


def test_the_committed_lines_mark_their_rows_finished(tmp_path, calls):
    """A table resumed today keeps the committed lines: no row they hold runs again."""
    for name in ("full", "celebrity", "gbert", "gbert-budget", "qa-ratio", "probe-scale",
                 "finetune-grid"):
        table = tables.TABLES[name]
        shutil.copy(os.path.join(RESULTS, table.file), tmp_path / table.file)
        before = read_jsonl(str(tmp_path / table.file))
        tables.run_table(table, table.preset, 0, str(tmp_path), "cpu", quiet=True)
        assert calls == [] and read_jsonl(str(tmp_path / table.file)) == before, name


def test_each_table_names_its_rows_once(tmp_path):
    for name, table in tables.TABLES.items():
        rows = table.rows(table.preset, 0, str(tmp_path), "cpu")
        marks = [tables.mark(table, {"preset": table.preset, "seed": 0} | r.task | r.fields)
                 for r in rows]
        assert len(set(marks)) == len(marks), name
    as_float, as_int = dict(setting="single", passes=60.0), dict(setting="single", passes=60)
    assert tables.mark(TOY, as_float) == tables.mark(TOY, as_int)  # 60 and 60.0: one row


@pytest.mark.slow
def test_full_table_resumes_and_the_celebrity_table_reuses_it(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "FULL_SETTINGS", ("single", "single+permute1"))
    monkeypatch.setitem(bk.PRESETS, "tiny", dict(bk.PRESETS["tiny"], people=40, passes=1))
    full, path = tables.TABLES["full"], str(tmp_path / "full_table.jsonl")
    tables.run_table(full, "tiny", 0, str(tmp_path), "cpu", quiet=True)
    rows = read_jsonl(path)
    assert [(r["setting"], r["method"]) for r in rows] == [
        (s, m) for s in tables.FULL_SETTINGS for m in tables.FULL_METHODS]
    assert all(set(r["q_probe"]["whole"]) == set(bk.ATTRIBUTES[1:]) for r in rows)
    rewrite_jsonl(path, rows[:3])  # killed after three rows
    tables.run_table(full, "tiny", 0, str(tmp_path), "cpu", quiet=True)
    again = read_jsonl(path)
    assert again[:3] == rows[:3] and len(again) == 4
    run = tmp_path / "work" / "full" / "single-qa_finetune" / "model.pt"
    stamp = os.path.getmtime(run)
    tables.run_table(tables.TABLES["celebrity"], "tiny", 0, str(tmp_path), "cpu", quiet=True)
    assert os.path.getmtime(run) == stamp  # the alone rows reuse the full table's models
    celebrity = read_jsonl(str(tmp_path / "celebrity.jsonl"))
    assert [(r["setting"], r["celebrities"]) for r in celebrity] == [
        ("single+permute1", 0), ("single+permute1", 40), ("single", 0), ("single", 40)]


@pytest.mark.slow
def test_finetune_grid_reuses_the_pretrained_run_and_keeps_finished_recipes(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "FINETUNE_GRID", [dict(), dict(lora_qv=2, lora_emb=4)])
    monkeypatch.setitem(bk.PRESETS, "tiny", dict(bk.PRESETS["tiny"], people=40))
    bk.pretrained_run("single", "qa_finetune", "tiny", 0, "cpu", str(tmp_path / "work"), quiet=True)
    model = tmp_path / "work" / "single-qa_finetune" / "model.pt"
    stamp, grid = os.path.getmtime(model), tables.TABLES["finetune-grid"]
    tables.run_table(grid, "tiny", 0, str(tmp_path), "cpu", quiet=True)
    assert os.path.getmtime(model) == stamp  # reused, not retrained
    rows = read_jsonl(str(tmp_path / "finetune_grid.jsonl"))
    assert [r["recipe"] for r in rows] == ["full finetuning", "LoRA q/v rank 2 + embedding rank 4"]
    assert rows[0]["passes"] == rows[0]["epochs"] == bk.resolve_config("tiny", "finetune").epochs
    monkeypatch.setattr(tables, "FINETUNE_GRID", [dict(), dict(lora_qv=2, lora_emb=4),
                                                  dict(epochs=2)])
    tables.run_table(grid, "tiny", 0, str(tmp_path), "cpu", quiet=True)  # only the new recipe
    again = read_jsonl(str(tmp_path / "finetune_grid.jsonl"))
    assert again[:2] == rows and (again[2]["recipe"], again[2]["passes"]) == ("full finetuning", 2)


@pytest.mark.slow
def test_probe_scale_probes_each_model_with_both_readouts(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "PROBE_SCALE", [("single", "qa_finetune", dict(people=40, passes=1),
                                                 (0,))])
    table, path = tables.TABLES["probe-scale"], str(tmp_path / "probe_scale.jsonl")
    tables.run_table(table, "tiny", 0, str(tmp_path), "cpu", quiet=True)
    row, = read_jsonl(path)
    assert set(row["probes"]) == set(tables.PROBE_SCALE_READOUTS) and row["config"]["mode"] == "bio"
    assert not row["pretraining_reused"]
    assert row["probes"]["linear"]["q_probe"]["scored_on"] == "P_test"
    tables.run_table(table, "tiny", 0, str(tmp_path), "cpu", quiet=True)  # nothing left to run
    assert read_jsonl(path) == [row]


@pytest.mark.slow
def test_storage_map_probes_after_every_block_and_looks_up(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "STORAGE_MAP",
                        [(tables.AUGMENTED, dict(people=40, passes=1, n_layer=2), (0,), "cpu")])
    table, path = tables.TABLES["storage-map"], str(tmp_path / "storage_map.jsonl")
    tables.run_table(table, "tiny", 0, str(tmp_path), "cpu", quiet=True)
    row, = read_jsonl(path)
    assert [layer["q_probe"]["layer"] for layer in row["layers"]] == [0, 1, 2]
    # a map point (overrides): the P-probe after the last block only
    assert ["p_probe" in layer for layer in row["layers"]] == [False, False, True]
    assert row["layers"][-1]["p_probe"]["layer"] == 2 and row["pretraining_reused"] is False
    assert list(row["lookup"]["cut"]) == ["block 1", "block 2", "every block"]
    assert list(row["lookup"]["patch"]) == ["after block 0", "after block 1"]
    assert "storage-map" in tables.storage_map_markdown(
        tables.Results([], {"storage_map.jsonl": [row]}))
    tables.run_table(table, "tiny", 0, str(tmp_path), "cpu", quiet=True)  # nothing left to run
    assert read_jsonl(path) == [row]


# --------------------------------------------------------------------------------------------------
# --- each check's predicate

def test_headline_checks_decide_their_claims():
    single, augmented, mixed = (tables.HEADLINE_CHECKS[k] for k in bk.REPRODUCE_ROWS)
    assert single(fake_result("single", "qa_finetune", qa=20.0))
    assert not single(fake_result("single", "qa_finetune", qa=20.1))
    assert not single(fake_result("single", "qa_finetune", qa=5.0, memorised=94.0))
    assert augmented(fake_result("a", "q", qa=70.0))
    assert not augmented(fake_result("a", "q", qa=69.9))
    assert mixed(fake_result("single", "mixed", qa=60.0))
    assert not mixed(fake_result("single", "mixed", qa=59.9))
    assert not mixed(fake_result("single", "mixed", qa=90.0, memorised=94.9))  # not memorised
    assert all(check.claim for check in (single, augmented, mixed))


def probed_row(setting, method, q, qa, company=None):
    """A headline row with probes: Q-probe Q everywhere, the company P-probe row COMPANY."""
    base = {"first_token": dict.fromkeys(bk.ATTRIBUTES, 1.0),
            "whole": dict.fromkeys(bk.ATTRIBUTES[1:], 1.0)}
    q_probe = {"first_token": dict.fromkeys(bk.ATTRIBUTES, q),
               "whole": dict.fromkeys(bk.ATTRIBUTES[1:], q), "baseline": base}
    row = dict(fake_result(setting, method, qa=qa), q_probe=q_probe)
    if method == "qa_finetune":
        grid = [company if a == "company" and company else [q] * 6 for a in bk.ATTRIBUTES]
        row["p_probe"] = {"first_token": grid, "whole": grid[1:], "baseline": base,
                          "attributes": {k: list(v) for k, v in bk.PROBE_TARGETS.items()}}
    return row


def test_probe_checks_hold_on_the_papers_pattern_and_fail_on_ours():
    paper = [probed_row("single", "qa_finetune", 3.0, 7.0, company=[2.0] * 4 + [90.0] * 2),
             probed_row(tables.AUGMENTED, "qa_finetune", 90.0, 98.0),
             probed_row("single", "mixed", 50.0, 55.0)]
    assert [ok for _, _, ok in tables.probe_checks(paper)] == [True] * 5
    ours = [probed_row("single", "qa_finetune", 1.7, 7.0, company=[20.0] * 6),
            probed_row(tables.AUGMENTED, "qa_finetune", 4.2, 98.0),
            probed_row("single", "mixed", 3.5, 55.0)]
    checks = tables.probe_checks(ours)
    assert [ok for _, _, ok in checks] == [False] * 5
    assert checks[2][1] == "4.2 against 98.0"  # what was measured stands beside the claim
    assert tables.probe_checks([fake_result("single", "qa_finetune")]) == []  # nothing to check


def storage_row(at_name, q_first, q_whole, qa):
    """A storage-map line read after its last block: the P-probe's position 0 AT_NAME for every
    attribute, the Q-probe Q_FIRST / Q_WHOLE, QA P_test QA."""
    probed = {"p_probe": {"first_token": [[at_name] * 6 for _ in bk.ATTRIBUTES]},
              "q_probe": {"first_token": dict.fromkeys(bk.ATTRIBUTES, q_first),
                          "whole": dict.fromkeys(bk.ATTRIBUTES[1:], q_whole)}}
    return dict(fake_result(tables.AUGMENTED, "qa_finetune", qa=qa), layers=[probed], n_layer=2)


def test_storage_pattern_holds_on_the_papers_pattern_and_fails_on_ours():
    assert tables.storage_pattern(storage_row(at_name=99.9, q_first=99.9, q_whole=91.2, qa=96.2))
    assert not tables.storage_pattern(
        storage_row(at_name=79.9, q_first=99.9, q_whole=91.2, qa=96.2))
    assert not tables.storage_pattern(
        storage_row(at_name=99.9, q_first=79.9, q_whole=91.2, qa=96.2))
    assert not tables.storage_pattern(
        storage_row(at_name=99.9, q_first=99.9, q_whole=80.0, qa=96.2))
    assert not tables.storage_pattern(
        storage_row(at_name=44.0, q_first=16.0, q_whole=4.0, qa=98.0))  # ours


def test_storage_by_shape_names_each_memorised_shape_and_its_seeds():
    shape = dict(overrides=dict(n_layer=6, n_embd=256, lr=1e-3), n_layer=6, n_embd=256)
    rows = [dict(storage_row(at_name=40.0, q_first=20.0, q_whole=5.0, qa=90.0), seed=s, **shape)
            for s in (0, 1)]
    unmemorised = dict(rows[0], overrides={}, n_layer=2, n_embd=128,
                       memorization_p_test=dict(mean=80.0))
    line = tables.storage_by_shape(rows + [unmemorised])
    assert "6x256, lr 0.001 (seed 0 / 1): 20.0 / 20.0% (position 0: company 40.0 / 40.0%" in line
    assert "2x128" not in line  # a model that has not memorised does not test the claim
    assert tables.storage_by_shape([unmemorised]).startswith("No augmented model")


def test_the_papers_own_numbers_hold_every_ordering_check():
    qa, mixed = ({s: tables.paper_qa(s, m) for s in tables.FULL_SETTINGS}
                 for m in tables.FULL_METHODS)
    assert all(ok for _, _, ok in tables.checked(tables.ORDERING_CHECKS, qa, mixed))
    flat = dict.fromkeys(qa, 5.0)  # no augmentation effect, and mixed training low everywhere
    assert [ok for _, _, ok in tables.checked(tables.ORDERING_CHECKS, flat, flat)] == [False] * 5
    two = {"single": 10.0, "single+permute1": 3.6}  # a check over settings not there does not apply
    assert [c for c, _, _ in tables.checked(tables.ORDERING_CHECKS, two, {})] == [
        "single+permute1 below single (QA)"]


def celebrity_line(setting, celebrities, seed, p_test):
    return dict(fake_result(setting, "qa_finetune", qa=p_test), celebrities=celebrities, seed=seed,
                passes=60.0, preset="tiny", people=40, commit="0123456789")


def test_celebrity_and_gbert_checks():
    lines = [celebrity_line("single", 0, 0, 10.0), celebrity_line("single", 40, 0, 80.0),
             celebrity_line("single", 0, 1, 9.0), celebrity_line("single", 40, 1, 25.0)]
    detail, ok = tables.celebrities_lift(lines)
    assert not ok and detail == "single +70.0 / +16.0 on seeds 0 / 1 (paper +53.5)"
    assert tables.celebrities_lift(lines[:2] + [dict(lines[3], qa_test=dict(mean=40.0))])[1]
    learned = dict.fromkeys(bk.ATTRIBUTES, 1.0) | dict(birth_date=30.0, major=20.0, mean=8.5)
    assert tables.gbert_learns_what_the_paper_says([dict(qa_test=learned)])[1]
    assert not tables.gbert_learns_what_the_paper_says([fake_result("single", "qa_finetune")])[1]


# --------------------------------------------------------------------------------------------------
# --- the verdict, a golden render, and the report

def headline(seed, mixed_qa):
    rows = [probed_row("single", "qa_finetune", 1.7, 7.0, company=[4.0] * 4 + [99.0] * 2),
            probed_row(tables.AUGMENTED, "qa_finetune", 4.2, 98.0),
            probed_row("single", "mixed", 3.5, mixed_qa)]
    return dict(preset="cpu", seed=seed, hardware="cpu", command="python bioknow.py reproduce",
                minutes=20.0, config=dict(people=1000, n_layer=2, n_embd=128), rows=rows)


def test_verdicts_follow_their_rules():
    results = tables.Results([headline(0, 58.6), headline(1, 51.9)], {})
    words = [(decide(results) or ("", "", "not tested"))[2] for _, decide, _ in tables.VERDICTS]
    assert words == ["partly", "partly", "partly", "not at this scale", "not tested", "not tested",
                     "not tested"]
    results.headline[0]["rows"][2]["qa_test"]["mean"] = 90.0
    results.headline[1]["rows"][2]["qa_test"]["mean"] = 80.0
    assert tables.result_1(results)[2] == "reproduces"
    results.headline[1]["rows"][2]["qa_test"]["mean"] = 20.0
    assert tables.result_1(results)[2] == "not at this scale"
    budget = [dict(fake_result("single", "qa_finetune", memorised=83.5), passes=960)]
    found = tables.result_7(tables.Results(results.headline, {"gbert_budget.jsonl": budget}))
    assert found[1:] == ("biographies at most 83.5% memorised (P_test, 960 passes)", "not tested")


GOLDEN = """\
## Celebrities help the minority (Result 6)

`python experiments/tables.py celebrity [--seed 1 --out results/seed1]`; 2 runs, 0.2 minutes on \
cpu, test; commit 0123456. N = 40 minority people with one biography; with celebrities, N more \
with multi5+permute biographies in the same pretraining, QA finetuning on the celebrities only; \
passes over one-entry-a-person data, so each minority entry gets the alone rows' passes.

| minority setting | celebrities | seed | passes | memorised | P_train | **minority P_test** | \
birth_date | birth_city | university | major | company | company_city | paper |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| single | none | 0 | 60.0 | 100.0 / 100.0 | 100.0 | **10.0** | 10.0 | 10.0 | 10.0 | 10.0 | \
10.0 | 10.0 | 9.7 |
| single | 40 | 0 | 60.0 | 100.0 / 100.0 | 100.0 | **80.0** | 80.0 | 80.0 | 80.0 | 80.0 | \
80.0 | 80.0 | 63.2 |

celebrities lift the minority's P_test by 20+ points, for each setting and seed: yes; single \
+70.0 on seed 0 (paper +53.5).
"""


def test_a_section_renders_as_its_golden_copy():
    lines = [celebrity_line("single", 0, 0, 10.0), celebrity_line("single", 40, 0, 80.0)]
    assert tables.celebrity_markdown(tables.Results([], {"celebrity.jsonl": lines})) == GOLDEN


def test_report_renders_results_verdict_first_without_matplotlib(tmp_path, capsys, monkeypatch):
    out = tmp_path / "results"
    shutil.copytree(RESULTS, out, ignore=shutil.ignore_patterns("work", "*.png"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # REPORT.md, and one line saying so
    tables.main(["report", "--out", str(out)])
    report = (out / "REPORT.md").read_text()
    assert report.startswith("# bioknow: what reproduces")
    assert report.index("| result |") < report.index("\n## ")
    assert "| Result 5: Q-probe, stored at the name |" in report
    assert all(f"]({tables.anchor(tables.SECTIONS[key])})" in report
               for _, _, key in tables.VERDICTS)
    assert all(f"\n## {title}\n" in report for title in tables.SECTIONS.values())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matplotlib" in err and not list(out.glob("*.png"))
    with pytest.raises(SystemExit) as e:
        tables.main(["report", "--out", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "no " in err
    assert not (tmp_path / "none").exists()


def test_report_draws_its_pictures(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "results"
    shutil.copytree(RESULTS, out, ignore=shutil.ignore_patterns("work", "*.png"))
    tables.draw_pictures(tables.load_results(str(out)), str(out))
    assert sorted(p.name for p in out.glob("*.png")) == sorted(n for n, _, _ in tables.PICTURES)
