"""
The paper's experiments beside bioknow's method: every table of results/REPORT.md, the paper's
numbers it is compared with, and the checks of what the paper claims. It imports bioknow.py.

    python experiments/tables.py report         # results/REPORT.md and its pictures
    python experiments/tables.py full           # 16 bioS settings x QA / mixed (Figure 3)
    python experiments/tables.py celebrity      # celebrity helps minority (Result 6)
    python experiments/tables.py gbert          # the bidirectional model (Result 7)
    python experiments/tables.py gbert-budget   # the passes GBERT needs to memorise
    python experiments/tables.py finetune-grid  # LoRA ranks and full finetuning (Figure 2)
    python experiments/tables.py qa-ratio       # mixed training at QAr 0.1 ... 0.8 (Figure 10)
    python experiments/tables.py scale          # mixed training against people, passes, size
    python experiments/tables.py probe-scale    # P- and Q-probes against scale (Results 4-5)
    python experiments/tables.py storage-map    # probes by layer, depth x width (Results 4-5)

A table is data: its rows, each a set of overrides, and the fields that mark a row finished. One
loop runs any table's rows side by side and appends a JSON line a row to OUT/FILE as it finishes,
so a killed table continues where it stopped. Tables that chose today's recipes and are not rerun
are rendered once in results/archive.md.
"""
import argparse
import dataclasses
import glob
import json
import os
import sys
import time

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bioknow as bk  # noqa: E402


# --------------------------------------------------------------------------------------------------
# --- the paper's numbers: accuracy on P_test in %, unless a line says otherwise

# Figure 3: per setting, QA finetuning after bio pretraining and mixed training, each the mean then
# the six attributes (mixed training per attribute for single only, Figure 1).
PAPER_TABLE = {
    "single": ([9.7, 33.5, 6.3, 2.3, 4.0, 1.1, 13.8], [86.6, 96.1, 97.4, 90.1, 94.8, 88.8, 53.4]),
    "single+fullname": ([48.9, 56.2, 58.8, 63.0, 55.7, 50.5, 14.1], [85.9]),
    "single+permute1": ([4.4, 0.5, 3.3, 2.4, 5.0, 3.5, 13.7], [82.5]),
    "single+permute2": ([53.2, 57.3, 48.3, 53.1, 55.0, 51.8, 58.3], [91.6]),
    "single+permute5": ([70.0, 56.4, 57.7, 58.3, 64.9, 90.5, 97.7], [93.7]),
    "single+permute1+fullname": ([31.7, 26.6, 29.3, 36.9, 31.1, 31.4, 37.9], [89.8]),
    "single+permute2+fullname": ([73.1, 69.0, 60.6, 64.2, 64.0, 87.9, 95.0], [92.6]),
    "single+permute5+fullname": ([80.2, 83.7, 67.8, 72.6, 69.1, 93.0, 98.6], [93.4]),
    "multi2": ([41.1, 100, 71.7, 33.1, 26.1, 5.2, 14.0], [89.2]),
    "multi2+fullname": ([84.0, 100, 97.7, 89.5, 97.6, 91.3, 35.3], [87.9]),
    "multi2+permute": ([91.2, 99.3, 98.7, 89.8, 96.7, 83.3, 83.5], [91.6]),
    "multi2+permute+fullname": ([96.1, 100, 98.8, 91.3, 98.1, 93.7, 97.8], [94.4]),
    "multi5": ([41.0, 100, 50.8, 30.9, 43.5, 10.2, 13.8], [91.8]),
    "multi5+fullname": ([82.4, 100, 98.6, 88.4, 96.1, 91.9, 26.8], [92.0]),
    "multi5+permute": ([96.6, 100, 99.0, 91.3, 97.7, 95.1, 98.7], [95.5]),
    "multi5+permute+fullname": ([96.2, 100, 98.7, 90.6, 97.9, 93.7, 99.0], [95.7]),
}
METHOD_COLUMN = {"qa_finetune": 0, "mixed": 1}
AUGMENTED = "multi5+permute+fullname"  # the headline's augmented setting

# Figure 5, P-probing, first token, by read position: bioS single up to the attribute's own position
# (the fixed order); the paper's augmented row is multi5+permute, set beside our AUGMENTED.
PAPER_P_PROBE = {
    "single": {"birth_date": [100], "birth_city": [5.9, 100], "university": [38.0, 37.1, 99.2],
               "major": [4.7, 4.6, 5.4, 99.9], "company": [1.5, 1.2, 1.3, 2.4, 99.5],
               "company_city": [15.4, 15.4, 14.9, 13.0, 69.1, 100]},
    AUGMENTED: dict({a: [100] * 6 for a in bk.ATTRIBUTES},
                    company=[99.9, 99.9, 99.9, 100, 100, 100],
                    company_city=[99.8, 99.8, 99.9, 100, 100, 100]),
}
# Figure 7, Q-probing: first token (six attributes), then whole value (five attributes).
PAPER_Q_PROBE = {
    "majority": [8.3, 2.5, 37.0, 4.0, 1.5, 14.8, 0.5, 0.3, 1.0, 0.4, 13.7],
    "single": [63.4, 1.9, 37.5, 3.1, 0.2, 13.1, 1.1, 0.3, 1.4, 0.1, 11.6],
    "single+fullname": [78.8, 47.5, 65.4, 51.0, 47.4, 28.9, 43.9, 31.2, 40.8, 44.4, 28.9],
    "single+permute5": [95.3, 49.7, 66.6, 68.6, 96.5, 99.1, 47.7, 40.7, 63.0, 96.2, 98.9],
    "multi5": [100, 39.8, 40.3, 40.1, 3.2, 13.2, 38.1, 9.7, 36.1, 2.3, 11.9],
    "multi5+permute": [100, 100, 99.9, 100, 99.9, 99.8, 96.1, 72.6, 94.9, 99.6, 99.7],
    "multi5+permute+fullname": [100, 100, 99.8, 100, 100, 99.8, 95.4, 68.1, 92.0, 99.9, 99.8],
}
# Figure 17: the minority's P_test alone, and beside celebrities.
PAPER_CELEBRITY = {"single+permute1": (4.4, 86.8), "single": (9.7, 63.2)}
# Figure 9: GBERT's P_test (best 39.7 QA, 43.6 mixed); it learns only these two attributes.
PAPER_GBERT = {("single", "qa_finetune"): 3.7, ("single", "mixed"): 30.1}
PAPER_GBERT_LEARNED = ("birth_date", "major")
# Figure 2(a), 124M: (lora_qv, lora_emb) -> (P_train first token, P_test exact); (0, 0) is full.
PAPER_FINETUNE = {(0, 0): (98.9, 7.5), (8, 0): (21.0, 7.8), (16, 0): (22.7, 7.9),
                  (8, 128): (25.0, 9.4), (16, 128): (27.3, 9.7)}
PAPER_QA_RATIO = {0.1: 24.5, 0.2: 53.6, 0.4: 77.5, 0.6: 87.1, 0.8: 85.7}  # Figure 10


def paper_qa(setting, method):
    return PAPER_TABLE[setting][METHOD_COLUMN[method]][0]


def paper_q_probe(setting):
    return float(np.mean(PAPER_Q_PROBE[setting][6:])) if setting in PAPER_Q_PROBE else None


def paper_q_probe_first_token(setting):
    return float(np.mean(PAPER_Q_PROBE[setting][:6]))


# --------------------------------------------------------------------------------------------------
# --- a table: its rows, the line each writes, and one resumable loop that runs them

@dataclasses.dataclass
class Row:
    task: dict    # bk.reproduce_row's options: setting, method, any of seed, work, train_overrides
    fields: dict  # what the line records beside the result; with the key, what marks it finished


@dataclasses.dataclass(frozen=True)
class Table:
    file: str                # OUT/FILE: a JSON line a finished row
    rows: object             # (preset, seed, out, device) -> [Row], in the file's order
    key: tuple               # the fields that, with preset and seed, name a row
    preset: str = bk.DEFAULT_PRESET
    work: str = None         # OUT/work/WORK, for rows that do not name their own
    line: object = None      # (row, result, preset, seed, device) -> line; table_line by default
    run: object = None       # (table, rows, ...) -> (row, line)s as rows finish; side by side


def plain(value):
    """Numbers as JSON writes them, so 60 and 60.0 name the same row."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def mark(table, record, fields=("preset", "seed")):
    """What names a row of TABLE (FIELDS and its key fields), from a line or a row not yet run;
    with no FIELDS, where a line sits in the file (the table's row order, then the seed)."""
    return json.dumps([plain(record.get(k)) for k in fields + table.key], sort_keys=True)


def jsonl_lines(path):
    return bk.read_jsonl(path) if os.path.isfile(path) else []


def table_line(result, preset, seed, **fields):
    return dict(result, **fields, preset=preset, seed=seed, people=bk.resolve_config(preset).people,
                bioknow=bk.VERSION, commit=bk.git_commit())


def default_line(row, result, preset, seed, device):
    return table_line(result, preset, seed, **row.fields)


def side_by_side(table, rows, preset, seed, out, device, quiet, jobs):
    work = os.path.join(out, "work", table.work) if table.work else None
    by_task = {id(r.task): r for r in rows}
    tasks = [r.task for r in rows]
    for task, result in bk.run_rows(tasks, preset, seed, device, work, jobs, quiet, table.file):
        row = by_task[id(task)]
        yield row, (table.line or default_line)(row, result, preset, task.get("seed", seed), device)


def run_table(table, preset, seed, out, device, quiet=False, jobs=1):
    """Run TABLE's rows not yet in OUT/FILE, writing a line a row as it finishes, the file in the
    table's order. Lines already there (of any row or preset) are kept: a killed run continues."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, table.file)
    rows = table.rows(preset, seed, out, device)
    named = [{"preset": preset, "seed": seed} | r.task | r.fields for r in rows]
    done = {mark(table, line) for line in jsonl_lines(path)}
    pending = [r for r, n in zip(rows, named) if mark(table, n) not in done]
    if len(pending) < len(rows):
        print(f"keeping the {len(rows) - len(pending)} finished rows of {path}", flush=True)
    if not pending:
        return
    order = {p: i for i, p in enumerate(dict.fromkeys(mark(table, n, ()) for n in named))}
    run = table.run or side_by_side
    for row, line in run(table, pending, preset, seed, out, device, quiet, jobs):
        lines = jsonl_lines(path) + [line]  # read again: two commands may fill one file
        lines.sort(key=lambda r: (order.get(mark(table, r, ()), len(order)), r.get("seed", 0)))
        bk.rewrite_jsonl(path, lines)
        what = json.dumps(row.fields or row.task.get("train_overrides") or {})
        print(f"{table.file}: {row.task.get('setting', '')} {row.task.get('method', '')} {what}: "
              f"P_test {line['qa_test']['mean']:.1f} ({line['minutes']:.1f} min)", flush=True)


# --------------------------------------------------------------------------------------------------
# --- the tables that are rerun

# `full` (Figure 3): all 16 bioS settings, each with QA finetuning after bio pretraining and with
# mixed training, every pretrained model Q-probed (Result 5). The `table` preset (the cpu preset at
# N = 500) keeps the 32 runs within 90 minutes on 2 cores.
FULL_SETTINGS = tuple(PAPER_TABLE)
FULL_METHODS = ("qa_finetune", "mixed")


def full_rows(preset, seed, out, device):
    return [Row(dict(setting=s, method=m, probes=("q",)), {})
            for s in FULL_SETTINGS for m in FULL_METHODS]


# `celebrity` (Result 6, Figure 17): N people with one biography each, alone (P_train half of them)
# or beside N celebrities with multi5+permute biographies (P_train: the celebrities, P_test: all N).
# Each minority entry gets the preset's passes either way. Alone rows reuse the full table's models.
CELEBRITY_ROWS = (("single+permute1", False), ("single+permute1", True), ("single", False),
                  ("single", True))


def celebrity_passes(preset, setting, celebrities):
    """Passes over one-entry-a-person data that give each minority entry the preset's passes."""
    cfg, minority = bk.resolve_config(preset), bk.entries_per_person(bk.parse_aug(setting))
    celebrity_entries = bk.entries_per_person(bk.parse_aug("multi5+permute"))
    entries = cfg.people * minority + celebrities * celebrity_entries
    return cfg.passes * entries / ((cfg.people + celebrities) * minority)


def celebrity_rows(preset, seed, out, device):
    rows = []
    for setting, with_celebrities in CELEBRITY_ROWS:
        celebrities = bk.resolve_config(preset).people if with_celebrities else 0
        passes = celebrity_passes(preset, setting, celebrities)
        task = dict(setting=setting, method="qa_finetune", reuse=True, celebrities=celebrities,
                    train_overrides=dict(passes=passes))
        aug = "multi5+permute" if celebrities else None
        rows.append(Row(task, dict(celebrities=celebrities, passes=passes, celebrity_aug=aug)))
    return rows


# `gbert` (Result 7, Figure 9): the same transformer with full attention, pretrained by filling in
# masked words, for twice the GPT's passes (Appendix H). `gbert-budget`: the passes it needs before
# its biographies are memorised, longest first.
GBERT_ROWS = tuple((s, m) for s in ("single", "multi5+permute", AUGMENTED) for m in FULL_METHODS)
GBERT_BUDGET = (("single", 960), ("multi5+permute", 960), ("single", 480), ("single", 120))


def gbert_rows(preset, seed, out, device):
    overrides = dict(objective="mlm", passes=2 * bk.resolve_config(preset).passes)
    return [Row(dict(setting=s, method=m, train_overrides=overrides), overrides)
            for s, m in GBERT_ROWS]


def gbert_budget_rows(preset, seed, out, device):
    rows = []
    for setting, passes in GBERT_BUDGET:
        work = os.path.join(out, "work", "gbert-budget", f"{setting}-passes{passes}-seed{seed}")
        overrides = dict(objective="mlm", passes=passes)
        rows.append(Row(dict(setting=setting, method="qa_finetune", train_overrides=overrides,
                             work=work), overrides))
    return rows


# `finetune-grid` (Figure 2): bioS single pretrained once (reproduce's model when it is there), then
# QA-finetuned by each recipe. The last two give full finetuning more epochs: does P_test stay low
# once P_train is fitted?
FINETUNE_GRID = [dict(), dict(lora_qv=8), dict(lora_qv=16), dict(lora_qv=8, lora_emb=128),
                 dict(lora_qv=16, lora_emb=128), dict(epochs=30), dict(epochs=100)]


def recipe_name(overrides):
    if not overrides.get("lora_qv") and not overrides.get("lora_emb"):
        return "full finetuning"
    embedding = f" + embedding rank {overrides['lora_emb']}" if overrides.get("lora_emb") else ""
    return f"LoRA q/v rank {overrides.get('lora_qv', 0)}{embedding}"


def finetune_grid_rows(preset, seed, out, device):
    """A row a recipe; lines keep the key `passes` for the epochs (the committed lines have it)."""
    return [Row(o, dict(recipe=recipe_name(o),
                        passes=bk.resolve_config(preset, "finetune", **o).epochs))
            for o in FINETUNE_GRID]


def finetune_grid_run(table, rows, preset, seed, out, device, quiet, jobs):
    work = os.path.join(out, "work")
    data_dir, data, run, _, _ = bk.pretrained_run("single", "qa_finetune", preset, seed, device,
                                                  work, quiet, reuse=True)
    dev, tok = bk.pick_device(device), bk.Tokenizer(data["vocab"])
    split = {s: [r for r in data["qa"] if r["split"] == s] for s in ("train", "test")}
    for row in tqdm(rows, desc="finetune grid", disable=quiet):
        t0 = time.time()
        cfg = bk.resolve_config(preset, "finetune", seed=seed, device=device, **row.task)
        model, info = bk.finetune(cfg, run, data_dir, os.path.join(work, "single-grid"),
                                  force=True, quiet=True)
        qa_train, qa_train_first_token = bk.qa_accuracies(model, tok, split["train"], dev)
        result = dict(recipe=row.fields["recipe"], lora_qv=cfg.lora_qv, lora_emb=cfg.lora_emb,
                      lr=cfg.lr, passes=cfg.epochs, epochs=cfg.epochs, steps=info["steps"],
                      qa_train_first_token=qa_train_first_token, qa_train=qa_train,
                      qa_test=bk.qa_accuracies(model, tok, split["test"], dev)[0],
                      minutes=round((time.time() - t0) / 60, 2), hardware=bk.hardware_name(dev))
        yield row, table_line(result, preset, seed)


# `qa-ratio` (Figure 10): mixed training on bioS single at each QA ratio, the biographies getting
# the preset's passes at every ratio, so a higher ratio also shows the QA more often. The last
# points give QAr 0.4 and 0.6 the passes at which their QA is seen as often as at 0.8 (360 x 0.4 /
# 0.6 = 60 x 0.8 / 0.2), to tell the share from the repetition.
QA_RATIO_SWEEP = [dict(qa_ratio=r) for r in (0.1, 0.2, 0.4, 0.6, 0.8)] + [
    dict(qa_ratio=0.4, passes=360), dict(qa_ratio=0.6, passes=160)]
SWEEP_FIELDS = ("people", "n_layer", "n_head", "n_embd", "passes", "lr", "batch_size", "block_size",
                "weight_decay", "qa_ratio", "rotary_frac")


def pretraining_config(preset, method, seed, device, overrides):
    """The configuration bk.pretrained_run trains for METHOD: a line records the run as trained."""
    return bk.resolve_config(preset, "train", seed=seed, device=device,
                             mode="bio" if method == "qa_finetune" else "mixed", **overrides)


def qa_ratio_rows(preset, seed, out, device):
    rows = []
    for i, overrides in enumerate(QA_RATIO_SWEEP):
        cfg = pretraining_config(preset, "mixed", seed, device, overrides)
        rows.append(Row(dict(setting="single", method="mixed", train_overrides=overrides,
                             work=os.path.join(out, "work", f"sweep-{i}")),
                        dict(qa_ratio=cfg.qa_ratio, passes=cfg.passes)))
    return rows


def sweep_line(row, result, preset, seed, device):
    """A mixed run's line: its shape, memorisation and QA, its configuration."""
    cfg = pretraining_config(preset, "mixed", seed, device, row.task["train_overrides"])
    shape = {k: getattr(cfg, k) for k in SWEEP_FIELDS} | dict(budget="bio", packing=cfg.packing)
    numbers = ("bio_memorization", "memorization_p_train", "memorization_p_test", "qa_train",
               "qa_test", "minutes", "hardware", "qa_holdout")
    measured = {k: result[k] for k in numbers if k in result}
    return dict(shape, steps=result["pretrain_steps"], **measured, seed=seed, preset=preset,
                config=dataclasses.asdict(cfg), bioknow=bk.VERSION, commit=bk.git_commit(),
                **row.fields)


# `scale`: where mixed training on bioS single starts to work. Each point a set of overrides of the
# cpu preset, seeds 0 and 1, 60 biography passes unless the point says, QAr 0.8; `where`: the
# machine it is sized for (gpu: 12 side by side on one card; cpu: 20-90 minutes a seed, one thread).
SCALE_POINTS = [dict(people=n, packing=p, **kw, where=w) for n, p, kw, w in [
    (500, "stream", {}, "gpu"), (1000, "stream", {}, "gpu"), (1000, "entries", {}, "gpu"),
    (500, "stream", dict(n_layer=4), "gpu"), (500, "stream", dict(n_embd=256), "gpu"),
    (500, "entries", {}, "gpu"), (500, "stream", dict(block_size=512, batch_size=2), "gpu"),
    (500, "stream", dict(n_layer=4, n_embd=256), "gpu"), (500, "stream", dict(n_layer=8), "gpu"),
    (1000, "stream", dict(n_layer=4), "gpu"), (1000, "stream", dict(n_embd=256), "gpu"),
    (1000, "entries", dict(n_layer=4), "gpu"),
    (2000, "entries", dict(n_embd=256), "gpu"), (8000, "entries", {}, "gpu"),
    (1000, "entries", dict(n_embd=256), "cpu"), (2000, "entries", {}, "cpu"),
    (4000, "entries", {}, "cpu"), (1000, "entries", {}, "cpu"),
    (1000, "entries", dict(passes=120), "cpu"), (500, "entries", dict(passes=120), "cpu"),
    (1000, "entries", dict(weight_decay=0.5), "cpu"), (500, "entries", {}, "cpu"),
    (500, "entries", dict(n_layer=4), "cpu"), (500, "entries", dict(n_layer=6), "cpu"),
    (500, "entries", dict(n_layer=8), "cpu"), (500, "entries", dict(n_embd=256), "cpu"),
    (500, "entries", dict(n_embd=192), "cpu"), (500, "entries", dict(n_embd=64), "cpu")]]
SCALE_SEEDS = (0, 1)


def scale_rows(preset, seed, out, device):
    """The points sized for this device (gpu for CUDA, cpu otherwise), on SCALE_SEEDS (not seed)."""
    where = "gpu" if bk.device_type(bk.pick_device(device)) == "cuda" else "cpu"
    rows = []
    for point in SCALE_POINTS:
        overrides = {k: v for k, v in point.items() if k != "where"}
        name = "-".join(f"{k}{v}" for k, v in sorted(overrides.items()))
        rows += [Row(dict(setting="single", method="mixed", train_overrides=overrides, seed=s,
                          work=os.path.join(out, "work", "scale", f"{name}-seed{s}")),
                     dict(overrides=overrides, where=where))
                 for s in SCALE_SEEDS if point["where"] == where]
    return rows


# `probe-scale` (Results 4-5 against scale): P- and Q-probes, with both read-outs, on the augmented
# model at two widths, depths and budgets, and on single after bio pretraining and mixed training
# (at QA ratios whose P_test spans 11-59%, more people, 4 layers): does the Q-probe grow with
# scale, and does it track QA?
PROBE_SCALE = [(AUGMENTED, "qa_finetune", {}, (0, 1)),
               (AUGMENTED, "qa_finetune", dict(n_embd=256), (0, 1)),
               ("single", "qa_finetune", {}, (0, 1)), ("single", "mixed", {}, (0, 1))] + [
    ("single", "mixed", dict(qa_ratio=q), (0,)) for q in (0.1, 0.2, 0.4, 0.6)] + [
    (AUGMENTED, "qa_finetune", dict(n_layer=4), (0, 1)),
    (AUGMENTED, "qa_finetune", dict(passes=300), (0, 1)),
    (AUGMENTED, "qa_finetune", dict(people=2000), (0, 1))] + [
    ("single", "mixed", dict(people=n), (0, 1)) for n in (2000, 4000)] + [
    ("single", "mixed", dict(n_layer=4), (0, 1)), ("single", "mixed", dict(n_embd=256), (0, 1))]
PROBE_SCALE_READOUTS = ("linear", "candidates")


def model_row(out, table, setting, method, overrides, seed):
    """A row pretraining its model in OUT/work/TABLE/<setting>-<method>-<overrides>-seed<seed>, its
    own directory, where a finished pretraining is reused and a killed one continued (the line
    records whether one was there: its minutes then leave out what ran before)."""
    parts = [setting, method] + [f"{k}{v}" for k, v in sorted(overrides.items())] + [f"seed{seed}"]
    work = os.path.join(out, "work", table, "-".join(parts))
    reused = os.path.isfile(os.path.join(work, f"{setting}-{method}", "model.pt"))
    return Row(dict(setting=setting, method=method, train_overrides=overrides, seed=seed,
                    work=work, reuse=True),
               dict(overrides=overrides, pretraining_reused=reused))


def in_spec_order(rows, keys, fields):
    """ROWS in the order KEYS lists them (each the values of FIELDS), then by seed; others last."""
    order = {json.dumps(list(key), sort_keys=True): i for i, key in enumerate(keys)}

    def place(row):
        key = json.dumps([row[f] for f in fields], sort_keys=True)
        return order.get(key, len(order)), row["seed"]

    return sorted(rows, key=place)


def probe_scale_rows(preset, seed, out, device):
    """Each model of PROBE_SCALE on its seeds; a finished pretraining in its directory is reused."""
    return [model_row(out, "probe-scale", setting, method, overrides, s)
            for setting, method, overrides, seeds in PROBE_SCALE for s in seeds]


def probe_scale_line(row, result, preset, seed, device):
    t0, task = time.time(), row.task
    run = os.path.join(task["work"], f"{task['setting']}-{task['method']}")
    data_dir = os.path.join(task["work"], f"data-{task['setting']}")
    probes = {r: bk.probe(run, data_dir, kinds=("p", "q"), device=device, seed=seed, quiet=True,
                          readout=r) for r in PROBE_SCALE_READOUTS}
    cfg = pretraining_config(preset, task["method"], seed, device, task["train_overrides"])
    numbers = ("memorization_p_train", "memorization_p_test", "qa_train", "qa_test",
               "pretrain_steps")
    return dict(setting=task["setting"], method=task["method"], overrides=task["train_overrides"],
                seed=seed, n_layer=cfg.n_layer, n_embd=cfg.n_embd, qa_ratio=cfg.qa_ratio,
                **{k: result[k] for k in numbers}, probes=probes,
                pretraining_reused=row.fields["pretraining_reused"],
                minutes=round(result["minutes"] + (time.time() - t0) / 60, 2), preset=preset,
                config=dataclasses.asdict(cfg), hardware=result["hardware"], bioknow=bk.VERSION,
                commit=bk.git_commit())


# `storage-map` (Results 4-5 by layer): the headline's single and augmented models, and the
# augmented setting at greater depth and width together, each Q-probed after every block (the
# headline's models P-probed after every block too, the others after the last) and checked
# causally (bk.name_lookup). `where`: the machine a point is sized for (cpu: at most ~2 hours a
# seed on one thread; gpu: longer on a CPU).
STORAGE_MAP = [("single", {}, (0, 1), "cpu"), (AUGMENTED, {}, (0, 1), "cpu"),
               (AUGMENTED, dict(n_layer=6, n_embd=256), (0, 1), "cpu"),
               (AUGMENTED, dict(n_layer=6, n_embd=256, lr=1e-3), (0, 1), "cpu"),
               (AUGMENTED, dict(n_layer=2, n_embd=512, lr=1e-3), (0, 1), "cpu"),
               (AUGMENTED, dict(n_layer=12, n_embd=256, lr=1e-3), (0, 1), "gpu"),
               (AUGMENTED, dict(n_layer=6, n_embd=384, lr=1e-3), (0, 1), "gpu")]


def storage_map_rows(preset, seed, out, device):
    where = "gpu" if bk.device_type(bk.pick_device(device)) == "cuda" else "cpu"
    return [model_row(out, "storage-map", setting, "qa_finetune", overrides, s)
            for setting, overrides, seeds, sized_for in STORAGE_MAP if sized_for == where
            for s in seeds]


def layer_profile(run, data_dir, n_layer, device, seed, p_every_layer=True):
    """The probes read after every block, 0 (the embedding) to n_layer (the last, after the final
    LayerNorm). p_every_layer False: the P-probe after the last block only (on a biography, each
    layer's P-probe costs a model pass per attribute and step: ~45 minutes for a 6x256 model's
    seven layers on one thread), the Q-probe after every block."""
    profile = []
    for k in range(n_layer + 1):
        kinds = ("p", "q") if p_every_layer or k == n_layer else ("q",)
        profile.append(bk.probe(run, data_dir, kinds=kinds, device=device, seed=seed, quiet=True,
                                layer=k))
    return profile


def storage_map_line(row, result, preset, seed, device):
    t0, task = time.time(), row.task
    run = os.path.join(task["work"], f"{task['setting']}-{task['method']}")
    data_dir = os.path.join(task["work"], f"data-{task['setting']}")
    cfg = pretraining_config(preset, task["method"], seed, device, task["train_overrides"])
    numbers = ("memorization_p_train", "memorization_p_test", "qa_train", "qa_test",
               "pretrain_steps")
    return dict(setting=task["setting"], method=task["method"], overrides=task["train_overrides"],
                seed=seed, n_layer=cfg.n_layer, n_embd=cfg.n_embd,
                **{k: result[k] for k in numbers},
                layers=layer_profile(run, data_dir, cfg.n_layer, device, seed,
                                     p_every_layer=not task["train_overrides"]),
                lookup=bk.name_lookup(run, data_dir, device=device, seed=seed),
                pretraining_reused=row.fields["pretraining_reused"],
                minutes=round(result["minutes"] + (time.time() - t0) / 60, 2), preset=preset,
                config=dataclasses.asdict(cfg), hardware=result["hardware"], bioknow=bk.VERSION,
                commit=bk.git_commit())


TABLES = {
    "full": Table("full_table.jsonl", full_rows, key=("setting", "method"), preset="table",
                  work="full"),
    "celebrity": Table("celebrity.jsonl", celebrity_rows, key=("setting", "celebrities"),
                       preset="table", work="full"),
    "gbert": Table("gbert.jsonl", gbert_rows, key=("setting", "method"), preset="table",
                   work="gbert"),
    "gbert-budget": Table("gbert_budget.jsonl", gbert_budget_rows, key=("setting", "passes"),
                          preset="table"),
    "finetune-grid": Table("finetune_grid.jsonl", finetune_grid_rows, key=("recipe", "passes"),
                           run=finetune_grid_run),
    "qa-ratio": Table("qa_ratio.jsonl", qa_ratio_rows, key=("qa_ratio", "passes"),
                      line=sweep_line),
    "scale": Table("mixed_scale.jsonl", scale_rows, key=("overrides", "where"), line=sweep_line),
    "probe-scale": Table("probe_scale.jsonl", probe_scale_rows,
                         key=("setting", "method", "overrides"), line=probe_scale_line),
    "storage-map": Table("storage_map.jsonl", storage_map_rows, key=("setting", "overrides"),
                         line=storage_map_line),
}


# --------------------------------------------------------------------------------------------------
# --- checks: a claim's words beside the predicate that decides it

def claim(words):
    """Attach a claim's words to the predicate that tests it, so the two cannot drift apart."""
    def attach(predicate):
        predicate.claim = words
        return predicate
    return attach


def checked(checks, *data):
    """[(claim, measured, holds)] of each check that applies to DATA (else it returns None)."""
    return [(c.claim, *found) for c in checks if (found := c(*data)) is not None]


# The headline (`python bioknow.py reproduce`): memorised yet not extractable; augmentation and
# mixed training fix it. Each predicate takes the row.

@claim("bio memorisation >= 95% on every attribute, P_test mean <= 20%")
def memorised_not_extracted(row):
    return row["bio_memorization_min"] >= 95 and row["qa_test"]["mean"] <= 20


@claim("P_test mean >= 70%")
def augmentation_extracts(row):
    return row["qa_test"]["mean"] >= 70


@claim("P_test mean >= 60%, its P_test biographies >= 95% memorised")
def mixing_extracts(row):
    return row["qa_test"]["mean"] >= 60 and is_memorised(row)


HEADLINE_CHECKS = {("single", "qa_finetune"): memorised_not_extracted,
                   (AUGMENTED, "qa_finetune"): augmentation_extracts,
                   ("single", "mixed"): mixing_extracts}


# The probes on the headline's models (Results 4-5): each predicate takes {(setting, method): row}
# and gives (what was measured, holds), or None where the rows are not there.

@claim("single: company P-probe (first token) within 10 points of its baseline at positions 0-3 "
       "and >= 80% at position 4")
def company_found_at_its_position(by):
    single = by.get(("single", "qa_finetune"), {}).get("p_probe")
    if not single:
        return None
    company = single["first_token"][bk.ATTRIBUTES.index("company")]
    base = single["baseline"]["first_token"]["company"]
    measured = f"{', '.join(map(fmt, company[:4]))} (base {fmt(base)}); {fmt(company[4])}"
    return measured, all(v <= base + 10 for v in company[:4]) and company[4] >= 80


@claim(f"{AUGMENTED}: P-probe (first token) >= 80% at position 0 for company and birth month")
def augmented_stored_at_the_name(by):
    augmented = by.get((AUGMENTED, "qa_finetune"), {}).get("p_probe")
    if not augmented:
        return None
    grid = augmented["first_token"]
    at_name = [grid[bk.ATTRIBUTES.index(a)][0] for a in ("company", "birth_date")]
    return ", ".join(map(fmt, at_name)), min(at_name) >= 80


@claim(f"Q-probe whole-value mean of {AUGMENTED} within 15 points of its QA P_test")
def q_probe_reads_what_qa_extracts(by):
    augmented = by.get((AUGMENTED, "qa_finetune"))
    if not augmented or "q_probe" not in augmented:
        return None
    q, qa = whole_means(augmented)
    return f"{fmt(q)} against {fmt(qa)}", bool(q >= qa - 15)


@claim(f"Q-probe whole-value mean: {AUGMENTED} at least 40 points above single")
def q_probe_sees_augmentation(by):
    rows = [by.get((s, "qa_finetune")) for s in (AUGMENTED, "single")]
    if not all(r and "q_probe" in r for r in rows):
        return None
    q_aug, q_single = (whole_means(r)[0] for r in rows)
    return f"{fmt(q_aug)} against {fmt(q_single)}", bool(q_aug >= q_single + 40)


@claim("Q-probe tracks QA: correlation across rows >= 0.9, the Q-probe spanning the range (its "
       "highest >= 50%)")
def q_probe_tracks_qa(by):
    probed = [whole_means(r) for r in by.values() if "q_probe" in r]
    corr = pearson(*zip(*probed)) if probed else None
    if corr is None:
        return None
    top = max(q for q, _ in probed)
    return f"{corr}, highest {fmt(top)}", corr >= 0.9 and top >= 50


PROBE_CHECKS = (company_found_at_its_position, augmented_stored_at_the_name,
                q_probe_reads_what_qa_extracts, q_probe_sees_augmentation, q_probe_tracks_qa)


def probe_checks(rows):
    return checked(PROBE_CHECKS, {(r["setting"], r["method"]): r for r in rows})


# The orderings the paper reports across the 16 settings (Figure 3): each predicate takes
# {setting: P_test mean} of QA finetuning and of mixed training, over the settings there.

def pairs_hold(qa, lower_higher, margin=0.0, need=None):
    """Whether the higher setting of each pair there beats the lower by MARGIN, in NEED pairs."""
    there = [(lo, hi) for lo, hi in lower_higher if lo in qa and hi in qa]
    if not there:
        return None
    held = [(lo, hi) for lo, hi in there if qa[hi] > qa[lo] + margin]
    detail = ", ".join(f"{lo} {qa[lo]:.1f} -> {hi} {qa[hi]:.1f}" for lo, hi in there)
    need = min(need or len(there), len(there))
    return f"{len(held)} of {len(there)}: {detail}", len(held) >= need


@claim("single+permute1 below single (QA)")
def permute1_below_single(qa, mixed):
    return pairs_hold(qa, [("single+permute1", "single")])


@claim("multi5 well below multi5+permute (QA, by over 10 points)")
def multi5_needs_permutation(qa, mixed):
    return pairs_hold(qa, [("multi5", "multi5+permute")], margin=10)


@claim("fullname helps (QA, 7 of the 8 pairs at least)")
def fullname_helps(qa, mixed):
    pairs = [(s, s + "+fullname") for s in FULL_SETTINGS if "fullname" not in s]
    return pairs_hold(qa, pairs, need=7)


@claim("permutation helps (QA, every pair)")
def permutation_helps(qa, mixed):
    fullname = ("", "+fullname")
    pairs = [(f"multi{m}{f}", f"multi{m}+permute{f}") for m in (2, 5) for f in fullname]
    pairs += [(f"single+permute{a}{f}", f"single+permute{b}{f}")
              for a, b in ((1, 2), (2, 5)) for f in fullname]
    return pairs_hold(qa, pairs)


@claim("mixed training high across all rows (>= 60 on every setting)")
def mixing_works_everywhere(qa, mixed):
    if not mixed:
        return None
    lowest = min(mixed, key=mixed.get)
    return f"lowest {mixed[lowest]:.1f} ({lowest})", mixed[lowest] >= 60


QA_ORDERINGS = (permute1_below_single, multi5_needs_permutation, fullname_helps, permutation_helps)
ORDERING_CHECKS = QA_ORDERINGS + (mixing_works_everywhere,)


def setting_means(lines):
    """{method: {setting: P_test mean}} of the full table's lines."""
    return {m: {r["setting"]: r["qa_test"]["mean"] for r in lines if r["method"] == m}
            for m in FULL_METHODS}


@claim("celebrities lift the minority's P_test by 20+ points, for each setting and seed")
def celebrities_lift(rows):
    lifts = celebrity_lifts(rows)
    if not lifts:
        return None
    detail = "; ".join(f"{s} {' / '.join(f'{v:+.1f}' for v in ours.values())} on seed"
                       f"{'s' * (len(ours) > 1)} {' / '.join(map(str, ours))} (paper {paper:+.1f})"
                       for s, ours, paper in lifts)
    return detail, all(v >= 20 for _, ours, _ in lifts for v in ours.values())


@claim("GBERT's two best attributes are birth date and major")
def gbert_learns_what_the_paper_says(rows):
    if not rows:
        return None
    by_attr = {a: float(np.mean([r["qa_test"][a] for r in rows])) for a in bk.ATTRIBUTES}
    best = sorted(bk.ATTRIBUTES, key=by_attr.get, reverse=True)[:2]
    measured = ", ".join(f"{a} {by_attr[a]:.1f}" for a in bk.ATTRIBUTES)
    return measured, set(best) == set(PAPER_GBERT_LEARNED)


# --------------------------------------------------------------------------------------------------
# --- the verdict: a row per result of the paper, decided by the rule beside it

@dataclasses.dataclass
class Results:
    """The results files of OUT, read once: the headline on each seed and each table's lines."""
    headline: list
    tables: dict

    def lines(self, name):
        return self.tables.get(name, [])


def load_results(out):
    path = os.path.join(out, "reproduce.json")
    if not os.path.isfile(path):
        raise bk.UserError(f"no {path} (run `python bioknow.py reproduce --out {out}` first)")
    seeds = sorted(glob.glob(os.path.join(out, "seed*", "reproduce.json")))
    tables = {t.file: all_seeds(os.path.join(out, t.file)) for t in TABLES.values()}
    tables["finetune_recipe.jsonl"] = jsonl_lines(os.path.join(out, "finetune_recipe.jsonl"))
    if os.path.isfile(os.path.join(out, "gpu_session.json")):
        tables["gpu_session.json"] = bk.read_json(os.path.join(out, "gpu_session.json"))
    return Results([bk.read_json(p) for p in [path] + seeds], tables)


def all_seeds(path):
    others = sorted(glob.glob(os.path.join(os.path.dirname(path), "seed*", os.path.basename(path))))
    return jsonl_lines(path) + [r for other in others for r in bk.read_jsonl(other)]


def headline_rows(results, key):
    return [next(r for r in res["rows"] if (r["setting"], r["method"]) == key)
            for res in results.headline]


def p_test(rows):
    return [r["qa_test"]["mean"] for r in rows]


def seeds_text(values):
    return ", ".join(fmt(v) for v in values)


def verdict(reproduces, partly):
    return "reproduces" if reproduces else "partly" if partly else "not at this scale"


def on_every_seed(results, checks):
    """Whether each check holds on every seed's headline; None where one does not apply."""
    found = [[check({(r["setting"], r["method"]): r for r in res["rows"]})
              for res in results.headline] for check in checks]
    return None if None in sum(found, []) else [all(ok for _, ok in seeds) for seeds in found]


@claim("reproduces: every seed within 10 points of the paper; partly: every seed 30+ points above "
       "QA finetuning on single")
def result_1(results):
    mixed, qa = (p_test(headline_rows(results, ("single", m))) for m in ("mixed", "qa_finetune"))
    paper, settings = paper_qa("single", "mixed"), [paper_qa(s, "mixed") for s in FULL_SETTINGS]
    ours = seeds_text(mixed)
    full = setting_means(results.lines("full_table.jsonl"))["mixed"]
    if full:
        ours += f"; the 16 settings {min(full.values()):.1f}-{max(full.values()):.1f}"
    return (f"{paper:.1f}; the 16 settings {min(settings):.1f}-{max(settings):.1f}", ours,
            verdict(min(mixed) >= paper - 10, min(mixed) >= max(qa) + 30))


@claim(f"reproduces: on every seed single <= 20 and {AUGMENTED} >= 70, and the QA orderings of "
       "the 16 settings hold; partly: the seeds do")
def results_2_3(results):
    single, augmented = (p_test(headline_rows(results, (s, "qa_finetune")))
                         for s in ("single", AUGMENTED))
    full = setting_means(results.lines("full_table.jsonl"))
    orderings = checked(QA_ORDERINGS, *full.values())
    held = sum(ok for _, _, ok in orderings)
    ours = (f"single {seeds_text(single)}; augmented {seeds_text(augmented)}; {held} of "
            f"{len(orderings)} orderings")
    gaps = [m - paper_qa(s, "qa_finetune") for s, m in full["qa_finetune"].items()]
    if gaps:
        ours += f"; {sum(g < -5 for g in gaps)} of {len(gaps)} settings 5+ points below the paper"
    seeds_hold = max(single) <= 20 and min(augmented) >= 70
    paper = (f"single {paper_qa('single', 'qa_finetune'):.1f}, augmented "
             f"{paper_qa(AUGMENTED, 'qa_finetune'):.1f}")
    return paper, ours, verdict(seeds_hold and orderings and held == len(orderings), seeds_hold)


@claim("reproduces: both P-probe checks hold on every seed; partly: one does")
def result_4(results):
    held = on_every_seed(results, (company_found_at_its_position, augmented_stored_at_the_name))
    if held is None:
        return None
    company = bk.ATTRIBUTES.index("company")
    single = [r["p_probe"]["first_token"][company]
              for r in headline_rows(results, ("single", "qa_finetune"))]
    grids = [r["p_probe"]["first_token"]
             for r in headline_rows(results, (AUGMENTED, "qa_finetune"))]
    at_name = " / ".join(f"{fmt(g[company][0])}, {fmt(g[0][0])}" for g in grids)
    ours = (f"single: company at most {' / '.join(fmt(max(g[:4])) for g in single)} before its "
            f"position, {' / '.join(fmt(g[4]) for g in single)} at it; augmented at the name "
            f"(company, birth month) {at_name}")
    paper = PAPER_P_PROBE["single"]["company"]
    paper_at_name = min(PAPER_P_PROBE[AUGMENTED][a][0] for a in ("company", "birth_date"))
    return (f"single: company at most {fmt(max(paper[:4]))} before its position, {fmt(paper[4])} "
            f"at it; augmented at least {fmt(paper_at_name)} at the name", ours,
            verdict(all(held), any(held)))


@claim("reproduces: both Q-probe checks (near QA, 40 points above single) hold on every seed; "
       "partly: one does")
def result_5(results):
    held = on_every_seed(results, (q_probe_reads_what_qa_extracts, q_probe_sees_augmentation))
    if held is None:
        return None
    aug, single = (headline_rows(results, (s, "qa_finetune")) for s in (AUGMENTED, "single"))
    ours = (f"augmented {seeds_text(whole_means(r)[0] for r in aug)}; single "
            f"{seeds_text(whole_means(r)[0] for r in single)}")
    paper = f"augmented {fmt(paper_q_probe(AUGMENTED))}, single {fmt(paper_q_probe('single'))}"
    return paper, ours, verdict(all(held), any(held))


@claim("reproduces: " + celebrities_lift.claim)
def result_6(results):
    rows = results.lines("celebrity.jsonl")
    lift = celebrities_lift(rows)
    if not lift:
        return None
    paper = "; ".join(f"{s} {fmt(a)} -> {fmt(w)}" for s, (a, w) in PAPER_CELEBRITY.items())
    ours = "; ".join(f"{s} " + ", ".join(f"{fmt(v[False])} -> {fmt(v[True])}"
                                         for v in seeds.values())
                     for s, seeds in celebrity_pairs(rows).items())
    return paper, ours, verdict(lift[1], False)


@claim("not tested where no GBERT row has memorised its P_test biographies; then reproduces: "
       + gbert_learns_what_the_paper_says.claim)
def result_7(results):
    rows = results.lines("gbert.jsonl") + results.lines("gbert_budget.jsonl")
    if not rows:
        return None
    learned = " and ".join(a.replace("_", " ") for a in PAPER_GBERT_LEARNED)
    paper = (f"single {fmt(PAPER_GBERT['single', 'qa_finetune'])} (QA), "
             f"{fmt(PAPER_GBERT['single', 'mixed'])} (mixed); only {learned} learned")
    best = max(rows, key=lambda r: r["memorization_p_test"]["mean"])
    ours = (f"biographies at most {best['memorization_p_test']['mean']:.1f}% memorised (P_test, "
            f"{best['passes']} passes)")
    memorised = [r for r in rows if is_memorised(r)]
    if not memorised:
        return paper, ours, "not tested"
    return paper, ours, verdict(gbert_learns_what_the_paper_says(memorised)[1], False)


@claim("reproduces: P_test <= 15 for every recipe and seed and full finetuning fits P_train "
       "(>= 95%, first token) at some epochs; partly: P_test does")
def figure_2(results):
    rows = results.lines("finetune_grid.jsonl")
    if not rows:
        return None
    full, lora = grid_fit(rows)
    test = p_test(rows)
    paper_lora = [v[0] for k, v in PAPER_FINETUNE.items() if k != (0, 0)]
    paper = (f"full finetuning P_train {fmt(PAPER_FINETUNE[0, 0][0])}, LoRA {min(paper_lora):.1f}-"
             f"{max(paper_lora):.1f}; P_test {PAPER_FINETUNE[0, 0][1]:.1f}-"
             f"{max(v[1] for v in PAPER_FINETUNE.values()):.1f}")
    epochs = ", ".join(f"{v:.1f} ({e:g} epochs)" for e, v in sorted(full.items()))
    ours = (f"full finetuning P_train {epochs}; LoRA {min(lora):.1f}-{max(lora):.1f}; P_test "
            f"{min(test):.1f}-{max(test):.1f}")
    return paper, ours, verdict(max(test) <= 15 and max(full.values()) >= 95, max(test) <= 15)


def grid_fit(rows):
    """Full finetuning's P_train first-token mean of the seeds by epochs, and each LoRA recipe's."""
    groups = grouped(rows, ("recipe", "passes"))
    full = {k[1]: qa_mean(rs, "qa_train_first_token") for k, rs in groups.items()
            if k[0] == "full finetuning"}
    lora = [qa_mean(rs, "qa_train_first_token") for k, rs in groups.items()
            if k[0] != "full finetuning"]
    return full, lora


SECTIONS = dict(headline="The headline, seed by seed (Results 1-3)",
                probes="Probing (Results 4-5, Figures 5 and 7)",
                full="All 16 bioS settings (Figure 3)",
                celebrity="Celebrities help the minority (Result 6)",
                gbert="GBERT, the bidirectional model (Result 7)",
                grid="QA finetuning recipes (Figure 2)",
                qa_ratio="Mixed training and the QA ratio (Figure 10)",
                scale="Mixed training against people, passes, width and depth",
                probe_scale="Probes against scale (Results 4-5)",
                storage_map="Where a fact is stored, block by block (Results 4-5)",
                gpu="Measured on a GPU",
                recipe="The QA finetuning recipe, chosen on held-out P_train people of every seed")
VERDICTS = (("Result 1: mixed training extracts", result_1, "headline"),
            ("Results 2-3: QA finetuning needs augmentation", results_2_3, "full"),
            ("Result 4: P-probe, where a fact is stored", result_4, "probes"),
            ("Result 5: Q-probe, stored at the name", result_5, "probes"),
            ("Result 6: celebrities help the minority", result_6, "celebrity"),
            ("Result 7: GBERT does not extract", result_7, "gbert"),
            ("Figure 2: no finetuning recipe extracts", figure_2, "grid"))


def anchor(title):
    return "#" + "".join(c for c in title.lower() if c.isalnum() or c in " -_").replace(" ", "-")


def verdict_markdown(results):
    rows = []
    for result, decide, key in VERDICTS:
        paper, ours, word = decide(results) or ("", "", "not tested")
        link = f"[{SECTIONS[key].split(' (')[0]}]({anchor(SECTIONS[key])})"
        rows.append([result, paper, ours, f"**{word}**", decide.claim, link])
    first, full = results.headline[0], results.lines("full_table.jsonl")
    shape = f"{first['config']['n_layer']}-layer, {first['config']['n_embd']}-wide GPT"
    sizes = f"N = {first['config']['people']:,}"
    sizes += f"; tables N = {full[0]['people']:,}" if full else ""
    seeds = ", ".join(str(res["seed"]) for res in results.headline)
    lines = ["# bioknow: what reproduces", "",
             f"Allen-Zhu & Li, Physics of Language Models Part 3.1, on a {shape} (preset "
             f"`{first['preset']}`, {sizes}) against the paper's GPT-2 124M at N = 100,000. "
             f"P_test QA exact match in %, seeds {seeds}; every number is read from results/, and "
             "each verdict is decided by the rule beside it.", ""]
    header = ["result", "paper", "bioknow (each seed)", "verdict", "rule", "section"]
    lines += markdown_table(header, rows)
    lines += ["", "How each recipe was chosen: [experiments/NOTES.md](../experiments/NOTES.md). "
              "Tables that chose today's recipes and are not rerun: [archive.md](archive.md)."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# --- rendering: one helper for a markdown table, and the cells every section uses

def markdown_table(header, rows):
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def section(key, caption, *blocks):
    lines = [f"## {SECTIONS[key]}", "", caption]
    for block in blocks:
        lines += [""] + list(block)
    return "\n".join(lines) + "\n"


def fmt(v):
    return "–" if v is None else f"{v:.1f}"


def yes(ok):
    return "yes" if ok else "NO"


def pearson(xs, ys):
    """Pearson correlation, or None where it is undefined (fewer than 3 points, or a constant)."""
    if len(xs) < 3 or np.std(xs) == 0 or np.std(ys) == 0:
        return None
    return round(float(np.corrcoef(xs, ys)[0, 1]), 3)


def provenance(lines, command):
    """Said once a table: the command, where and how long its runs ran, and their commits."""
    hardware = " and ".join(sorted({r["hardware"] for r in lines if r.get("hardware")}))
    commits = sorted({r["commit"][:7] for r in lines if r.get("commit")})
    shown = ", ".join(commits[:3]) + (f" and {len(commits) - 3} more" if len(commits) > 3 else "")
    return (f"`{command}`; {len(lines)} runs, {sum(r['minutes'] for r in lines):.1f} minutes on "
            f"{hardware or 'unrecorded hardware'}; commit {shown or 'unrecorded'}.")


def machine(line):
    return line["hardware"].split(",")[0].split(" (")[0]


def grouped(rows, fields):
    """{values of FIELDS: [rows]}, in the order they first appear: one configuration's seeds."""
    groups = {}
    for r in rows:
        key = tuple(json.dumps(plain(r.get(f)), sort_keys=True) if isinstance(r.get(f), dict)
                    else r.get(f) for f in fields)
        groups.setdefault(key, []).append(r)
    return groups


def qa_mean(rows, field="qa_test"):
    return float(np.mean([r[field]["mean"] for r in rows]))


def qa_cell(rows, field="qa_test"):
    """Each seed's QA mean, then their mean where there are several: `58.6, 51.9 (mean 55.2)`."""
    mean = f" (mean {qa_mean(rows, field):.1f})" if len(rows) > 1 else ""
    return ", ".join(fmt(r[field]["mean"]) for r in rows) + mean


def is_memorised(row):
    p_test_bios = row.get("memorization_p_test")
    return (p_test_bios["mean"] if p_test_bios else row["bio_memorization"]) >= bk.MEMORISED


def memorised_cell(row):
    """First-token memorisation of the biographies, P_train / P_test, marked where not memorised."""
    if "memorization_p_test" not in row:
        return f"{row['bio_memorization']:.1f}" + ("" if is_memorised(row) else " (not memorised)")
    train, test = row["memorization_p_train"]["mean"], row["memorization_p_test"]["mean"]
    return f"{train:.1f} / {test:.1f}" + ("" if is_memorised(row) else " **not memorised**")


def whole_mean(scores):
    """The mean over the five attributes a Q-probe reads whole (all but the birth date)."""
    return float(np.mean([scores[a] for a in bk.ATTRIBUTES[1:]]))


def whole_means(row):
    """A row's Q-probe whole-value mean and its QA P_test mean, over the same five attributes."""
    return whole_mean(row["q_probe"]["whole"]), whole_mean(row["qa_test"])


def attribute_cells(row, field="qa_test"):
    return [fmt(row[field][a]) for a in bk.ATTRIBUTES]


# --------------------------------------------------------------------------------------------------
# --- the sections of REPORT.md

def headline_markdown(results):
    first, cols = results.headline[0], ("mean",) + bk.ATTRIBUTES
    per_attribute = []
    for row in first["rows"]:
        key = (row["setting"], row["method"])
        paper = PAPER_TABLE[key[0]][METHOD_COLUMN[key[1]]]
        per_attribute += [
            [*key, memorised_cell(row), "P_train"] + [fmt(row["qa_train"][c]) for c in cols],
            ["", "", "", "**P_test**"] + [f"**{fmt(row['qa_test'][c])}**" for c in cols],
            ["", "", "", "paper"] + [fmt(v) for v in paper]]
    per_seed = []
    for key in bk.REPRODUCE_ROWS:
        check = HEADLINE_CHECKS[key]
        per_seed.append([" ".join(key), check.claim, fmt(paper_qa(*key))] + [
            f"**{fmt(r['qa_test']['mean'])}** ({memorised_cell(r)}): {yes(check(r))}"
            for r in headline_rows(results, key)])
    caption = ("`python bioknow.py reproduce --seed S --jobs 2 --out results/seedS` (seed 0: "
               "`--out results`). P_train: people whose QA was trained on; P_test: the other half; "
               "memorised: first-token accuracy on the biographies of P_train / P_test people. "
               "The spread over every seed first, then seed 0 by attribute, then each seed against "
               "its target; each seed's machine and minutes below.")
    seeds = [f"seed {res['seed']}: P_test (memorised)" for res in results.headline]
    machines = [[res["seed"], res["hardware"], fmt(res["minutes"]), f"`{res['command']}`"]
                for res in results.headline]
    return section("headline", caption,
                   markdown_table(["row", "paper", "seeds", "P_test mean", "min", "max",
                                   "P_train mean", "memorised P_test, min"],
                                  spread_rows(results)),
                   markdown_table(["setting", "method", "memorised", "split", *cols],
                                  per_attribute),
                   markdown_table(["row", "what it must show", "paper", *seeds], per_seed),
                   markdown_table(["seed", "hardware", "minutes", "command"], machines))


def spread_rows(results):
    """Each headline row over every seed: P_test as mean, minimum and maximum, P_train beside, and
    the least memorised seed's P_test biographies (a seed that has not memorised tests nothing)."""
    rows = []
    for key in bk.REPRODUCE_ROWS:
        runs = headline_rows(results, key)
        tests = p_test(runs)
        trains = [r["qa_train"]["mean"] for r in runs]
        memorised = [r["memorization_p_test"]["mean"] for r in runs]
        rows.append([" ".join(key), fmt(paper_qa(*key)), len(runs), f"**{fmt(np.mean(tests))}**",
                     fmt(min(tests)), fmt(max(tests)), fmt(np.mean(trains)), fmt(min(memorised))])
    return rows


def probes_markdown(results):
    probed = [r for r in results.headline[0]["rows"] if "q_probe" in r]
    if not probed:
        return ""
    base = probed[0]["q_probe"]["baseline"]
    q_rows = [["majority guess", ""] + [fmt(base["first_token"][a]) for a in bk.ATTRIBUTES]
              + [fmt(base["whole"][a]) for a in bk.ATTRIBUTES[1:]] + ["", ""],
              ["paper: majority guess", ""] + [fmt(v) for v in PAPER_Q_PROBE["majority"]]
              + ["", ""]]
    for row in probed:
        q, (q_mean, qa) = row["q_probe"], whole_means(row)
        q_rows.append([row["setting"], row["method"]]
                      + [fmt(q["first_token"][a]) for a in bk.ATTRIBUTES]
                      + [fmt(q["whole"][a]) for a in bk.ATTRIBUTES[1:]]
                      + [f"**{fmt(q_mean)}**", fmt(qa)])
        paper = PAPER_Q_PROBE.get(row["setting"]) if row["method"] == "qa_finetune" else None
        if paper:
            q_rows.append([f"paper: {row['setting']}", ""] + [fmt(v) for v in paper]
                          + [fmt(paper_q_probe(row["setting"])), ""])
    header = (["setting", "method"] + [f"first {a}" for a in bk.ATTRIBUTES]
              + [f"whole {a}" for a in bk.ATTRIBUTES[1:]] + ["whole mean", "QA P_test"])
    checks = [probe_checks(res["rows"]) for res in results.headline]
    check_rows = [[words] + [f"{c[k][1]}: {yes(c[k][2])}" for c in checks]
                  for k, (words, _, _) in enumerate(checks[0])]
    about = probed[0]["q_probe"]
    caption = (f"Frozen pretrained models before QA finetuning; probes trained on "
               f"{about['probe_people']} P_train people, scored on {about['scored_people']} P_test "
               f"people ({about['steps']} joint steps after the read-out fit; notes: recipe). "
               "Seed 0's P-probe grids and Q-probe; the checks on every seed. After every block "
               f"and causally: [{SECTIONS['storage_map']}]({anchor(SECTIONS['storage_map'])}).")
    seeds = [f"seed {res['seed']}" for res in results.headline]
    return section("probes", caption,
                   ["![P-probe grids, first token, beside the paper's Figure 5](p_probe.png)"],
                   ["**Q-probe** at the name's last token (paper: Figure 7, an end token after it)",
                    ""] + markdown_table(header, q_rows),
                   markdown_table(["what the probes must show", *seeds], check_rows))


def full_markdown(results):
    lines = results.lines("full_table.jsonl")
    rows = {(r["setting"], r["method"]): r for r in lines}
    settings = [s for s in FULL_SETTINGS if (s, "qa_finetune") in rows or (s, "mixed") in rows]
    table = []
    for s in settings:
        cells, paper_cells = [s, "bioknow"], ["", "paper"]
        for m in FULL_METHODS:
            r = rows.get((s, m))
            cells += ([f"**{fmt(r['qa_test']['mean'])}**", *attribute_cells(r), memorised_cell(r)]
                      if r else ["–"] * 8)
            paper = PAPER_TABLE[s][METHOD_COLUMN[m]]
            paper_cells += [fmt(v) for v in paper] + [""] * (8 - len(paper))
        probes = " / ".join(fmt(whole_means(rows[s, m])[0]) if (s, m) in rows else "–"
                            for m in FULL_METHODS)
        table += [cells + [probes], paper_cells + [fmt(paper_q_probe(s))]]
    header = ["setting", ""] + [c for m in ("QA", "mixed")
                                for c in (f"{m} mean", *bk.ATTRIBUTES, "memorised")] + ["Q-probe"]
    ours = setting_means(lines)
    paper = {m: {s: paper_qa(s, m) for s in settings} for m in FULL_METHODS}
    checks = zip(checked(ORDERING_CHECKS, *ours.values()),
                 checked(ORDERING_CHECKS, *paper.values()))
    orderings = [[mine[0], yes(mine[2]), mine[1], "yes" if theirs[2] else "no"]
                 for mine, theirs in checks]
    corr = pearson(*zip(*[whole_means(r) for r in lines]))
    probed = [s for s in settings if s in PAPER_Q_PROBE]
    paper_corr = pearson([paper_q_probe(s) for s in probed],
                         [float(np.mean(PAPER_TABLE[s][0][2:])) for s in probed])
    caption = (f"{provenance(lines, 'python experiments/tables.py full')} Preset "
               f"`{lines[0]['preset']}` (N = {lines[0]['people']}), one recipe a method; Q-probe: "
               "whole-value mean on each pretrained model (QA / mixed). Memorised: P_train / "
               "P_test.")
    summary = [f"Q-probe against QA P_test (Result 5): correlation {corr} across the {len(lines)} "
               f"rows (the paper's {len(probed)} Q-probed settings: {paper_corr})."]
    return section("full", caption, markdown_table(header, table),
                   markdown_table(["the paper's ordering", "bioknow", "detail", "paper"],
                                  orderings),
                   summary)


def celebrity_pairs(rows):
    """{setting: {seed: {with celebrities: P_test mean}}}, seeds that have both rows."""
    pairs = {}
    for r in rows:
        by_seed = pairs.setdefault(r["setting"], {}).setdefault(r["seed"], {})
        by_seed[bool(r["celebrities"])] = r["qa_test"]["mean"]
    return {s: {seed: v for seed, v in sorted(seeds.items()) if len(v) == 2}
            for s, seeds in pairs.items()}


def celebrity_lifts(rows):
    """[(setting, {seed: our lift}, the paper's lift)]."""
    pairs = celebrity_pairs(rows)
    return [(s, {seed: v[True] - v[False] for seed, v in pairs[s].items()}, with_ - alone)
            for s, (alone, with_) in PAPER_CELEBRITY.items() if pairs.get(s)]


def celebrity_markdown(results):
    rows = results.lines("celebrity.jsonl")
    table = [[r["setting"], r["celebrities"] or "none", r["seed"], fmt(r.get("passes")),
              memorised_cell(r), fmt(r["qa_train"]["mean"]), f"**{fmt(r['qa_test']['mean'])}**",
              *attribute_cells(r),
              fmt(PAPER_CELEBRITY.get(r["setting"], (None, None))[bool(r["celebrities"])])]
             for r in rows]
    command = "python experiments/tables.py celebrity [--seed 1 --out results/seed1]"
    caption = (f"{provenance(rows, command)} N = {rows[0]['people']} minority people with one "
               "biography; with celebrities, N more with multi5+permute biographies in the same "
               "pretraining, QA finetuning on the celebrities only; passes over one-entry-a-person "
               "data, so each minority entry gets the alone rows' passes.")
    header = ["minority setting", "celebrities", "seed", "passes", "memorised", "P_train",
              "**minority P_test**", *bk.ATTRIBUTES, "paper"]
    lift = celebrities_lift(rows)
    return section("celebrity", caption, markdown_table(header, table),
                   [f"{celebrities_lift.claim}: {yes(lift[1])}; {lift[0]}."] if lift else [])


def gbert_markdown(results):
    rows = results.lines("gbert.jsonl")
    budget = sorted(results.lines("gbert_budget.jsonl"),
                    key=lambda r: (r["setting"] != "single", r["passes"], r["seed"]))
    blocks = []
    if rows:
        gpt = {(r["setting"], r["method"]): r for r in results.lines("full_table.jsonl")
               if (r["preset"], r["seed"]) == (rows[0]["preset"], rows[0]["seed"])}
        table = []
        for r in rows:
            key = (r["setting"], r["method"])
            for name, row in (("GBERT", r), ("GPT", gpt.get(key))):
                if row:
                    paper = fmt(PAPER_GBERT.get(key)) if name == "GBERT" else ""
                    table.append([*key, name, memorised_cell(row),
                                  f"**{fmt(row['qa_test']['mean'])}**", *attribute_cells(row),
                                  paper])
        measured, learned = gbert_learns_what_the_paper_says(rows)
        header = ["setting", "method", "model", "memorised", "**P_test mean**", *bk.ATTRIBUTES,
                  "paper"]
        blocks += [["`tables.py gbert`: twice the GPT's passes; the GPT rows are the full table's.",
                    ""] + markdown_table(header, table),
                   [f"{gbert_learns_what_the_paper_says.claim}: {yes(learned)} (GBERT's mean by "
                    f"attribute: {measured})."]]
    if budget:
        table = [[r["setting"], r["passes"], r["seed"], memorised_cell(r),
                  fmt(r["qa_test"]["mean"])] + attribute_cells(r, "memorization_p_test")
                 for r in budget]
        header = ["setting", "passes", "seed", "memorised", "P_test QA"]
        blocks += [["`tables.py gbert-budget`: more passes, until the biographies are memorised.",
                    ""] + markdown_table(header + [f"memorised {a}" for a in bk.ATTRIBUTES], table)]
    caption = (f"{provenance(rows + budget, 'python experiments/tables.py gbert / gbert-budget')} "
               "The same transformer with full attention, pretrained by filling in masked words "
               "(15%; 80% <mask>, 10% random, 10% kept); QA fills one <mask> per answer token. A "
               "row whose P_test biographies are not memorised does not test Result 7.")
    return section("gbert", caption, *blocks)


def finetune_grid_markdown(results):
    rows = results.lines("finetune_grid.jsonl")
    table = []
    for (recipe, lr, epochs), runs in grouped(rows, ("recipe", "lr", "passes")).items():
        paper = PAPER_FINETUNE.get((runs[0]["lora_qv"], runs[0]["lora_emb"]), (None, None))
        table.append([recipe, f"{lr:g}", f"{epochs:g}", ", ".join(str(r["seed"]) for r in runs),
                      qa_cell(runs, "qa_train_first_token"), qa_cell(runs, "qa_train"),
                      f"**{qa_cell(runs)}**", f"{fmt(paper[0])}, {fmt(paper[1])}"])
    command = "python experiments/tables.py finetune-grid [--seed 1 --out results/seed1]"
    caption = (f"{provenance(rows, command)} One pretrained bioS single model a seed, QA-finetuned "
               "on P_train by each recipe (10 epochs unless the line says more); LoRA freezes the "
               "base. Paper: Figure 2(a), about 8 epochs.")
    header = ["recipe", "lr", "epochs", "seeds", "P_train first token", "P_train exact",
              "**P_test exact**", "paper: P_train first token, P_test"]
    return section("grid", caption, markdown_table(header, table))


def ratio_groups(rows):
    """{(QAr, passes): [seeds' lines]}, and the preset's passes (the most common): Figure 10's."""
    counts = [r["passes"] for r in rows]
    by_ratio = sorted(rows, key=lambda r: (r["qa_ratio"], r["passes"], r["seed"]))
    return grouped(by_ratio, ("qa_ratio", "passes")), max(set(counts), key=counts.count)


def qa_ratio_markdown(results):
    rows = results.lines("qa_ratio.jsonl")
    groups, fixed = ratio_groups(rows)
    table = [[f"{q:g}", f"{passes:g}", f"{passes * q / (1 - q):.0f}",
              ", ".join(memorised_cell(r) for r in rs), f"**{qa_cell(rs)}**",
              fmt(PAPER_QA_RATIO.get(q) if passes == fixed else None)]
             for (q, passes), rs in groups.items()]
    caption = (f"{provenance(rows, 'python experiments/tables.py qa-ratio [--seed 1]')} bioS "
               "single, mixed training, the biographies getting the column's passes at every "
               "ratio; QA seen: passes x QAr / (1 - QAr). Each seed's P_test, then the mean.")
    return section("qa_ratio", caption, ["![P_test against the QA ratio](qa_ratio.png)"],
                   markdown_table(["QAr", "passes", "QA seen", "memorised", "**P_test**", "paper"],
                                  table))


def scale_groups(rows):
    """{(overrides, machine): [seeds' lines]}: a point of the scale study on one machine."""
    groups = {}
    for r in sorted(rows, key=lambda r: r["seed"]):
        key = json.dumps(plain(r["overrides"]), sort_keys=True), machine(r)
        groups.setdefault(key, []).append(r)
    return groups


def scale_curves(rows, field):
    """{(N, machine): [(FIELD's value, seeds' lines)]}: whole-entry points that differ from the
    cpu preset in N and FIELD only (FIELD people: in N only), where FIELD takes several values."""
    curves = {}
    for runs in scale_groups(rows).values():
        r = runs[0]
        if r["packing"] == "entries" and set(r["overrides"]) <= {"people", "packing", field}:
            n = None if field == "people" else r["people"]
            curves.setdefault((n, machine(r)), []).append((r[field], runs))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in curves.items()
            if len({p[0] for p in v}) > 1}


SCALE_FIELDS = (("people", "people"), ("passes", "biography passes"), ("n_embd", "width"),
                ("n_layer", "depth"))


def scale_markdown(results):
    rows = results.lines("mixed_scale.jsonl")
    shape = ("people", "n_layer", "n_embd", "block_size", "packing", "passes")
    groups = sorted(scale_groups(rows).values(),
                    key=lambda rs: [str(rs[0].get(k)).zfill(6) for k in shape])
    table = [[r["people"], f"{r['n_layer']}x{r['n_embd']}", f"{r['block_size']}x{r['batch_size']}",
              f"{r['lr']:g} / {r['weight_decay']:g}", r["packing"], f"{r['passes']:g}", machine(r),
              ", ".join(memorised_cell(x) for x in rs), f"**{qa_cell(rs)}**"]
             for rs in groups for r in rs[:1]]
    every = [f"{rs[0]['people']} people, {rs[0]['n_layer']}x{rs[0]['n_embd']}, {rs[0]['passes']:g} "
             f"passes ({qa_cell(rs)})" for rs in groups if all(map(mixing_extracts, rs))]
    target = (f"The headline's target for mixed training ({mixing_extracts.claim}) on every seed: "
              f"{'; '.join(every) or 'at no point'}.")
    command = "python experiments/tables.py scale [--device cuda]"
    caption = (f"{provenance(rows, command)} bioS single, mixed training, QAr 0.8, the cpu preset "
               "but for the columns; each seed's P_test, then the mean. Paper: "
               f"{paper_qa('single', 'mixed')} at 12x768 and N = 100,000.")
    header = ["people", "layers x width", "context x batch", "lr / wd", "packing", "passes",
              "machine", "memorised", "**P_test QA**"]
    return section("scale", caption,
                   ["![P_test against people, passes, width and depth](mixed_scale.png)"],
                   markdown_table(header, table), [target])


def p_probe_at(result, position):
    """A P-probe's first-token mean at one read position (None: each attribute's own)."""
    firsts = result["first_token"]
    picked = [row[k if position is None else position] for k, row in enumerate(firsts)]
    return float(np.mean(picked))


def probe_scale_cells(row):
    """P-probe at position 0 and at each attribute's own, Q-probe whole value; each read-out."""
    p = {k: row["probes"][k]["p_probe"] for k in PROBE_SCALE_READOUTS}
    cells = ([p_probe_at(p[k], 0) for k in p], [p_probe_at(p[k], None) for k in p],
             [whole_mean(row["probes"][k]["q_probe"]["whole"]) for k in p])
    return [" / ".join(f"{v:.1f}" for v in values) for values in cells]


def probe_scale_markdown(results):
    rows = in_spec_order(results.lines("probe_scale.jsonl"),
                         [(s, m, ov) for s, m, ov, _ in PROBE_SCALE],
                         ("setting", "method", "overrides"))
    table = [[f"{r['setting']} {r['method']}", r["config"]["people"],
              f"{r['n_layer']}x{r['n_embd']}", f"{r['config']['passes']:g}",
              r["qa_ratio"] if r["method"] == "mixed" else "", r["seed"], memorised_cell(r),
              fmt(r["qa_test"]["mean"]), *probe_scale_cells(r)]
             for r in rows]
    q = {k: [whole_mean(r["probes"][k]["q_probe"]["whole"]) for r in rows]
         for k in PROBE_SCALE_READOUTS}
    q_all = sum(q.values(), [])
    corr = ", ".join(f"{k} {pearson(v, p_test(rows))}" for k, v in q.items())
    summary = [f"Q-probe whole-value mean {min(q_all):.1f}-{max(q_all):.1f}% on every model and "
               f"read-out (the paper: {fmt(paper_q_probe(AUGMENTED))}% on its augmented model); "
               f"its correlation with QA P_test: {corr}."]
    caption = (f"{provenance(rows, 'python experiments/tables.py probe-scale')} Pretrained models "
               "of the cpu preset but for the columns, probed as in the headline; each cell linear "
               "/ candidate read-out (scored against the model's own embeddings of the values).")
    header = ["model", "N", "layers x width", "passes", "QAr", "seed", "memorised", "QA P_test",
              "P-probe pos 0", "P-probe own position", "Q-probe whole"]
    return section("probe_scale", caption, markdown_table(header, table), summary)


STORED_AT_THE_NAME = ("company", "birth_date")  # the P-probe's two attributes in the storage check


@claim("the paper's storage pattern: P-probe first token at position 0 >= 80% for company and "
       "birth month, Q-probe first-token mean >= 80% and its whole-value mean within 15 points "
       "of QA P_test (read after the last block)")
def storage_pattern(row):
    company, birth_month, q_first, q_whole = layer_cells(row["layers"][-1])
    near_qa = abs(q_whole - whole_mean(row["qa_test"])) <= 15
    return min(company, birth_month) >= 80 and q_first >= 80 and near_qa


def layer_cells(probed):
    """One layer's P-probe at position 0 (company, birth month; None where not probed) and
    Q-probe first-token and whole-value means."""
    at_name = [None, None]
    if "p_probe" in probed:
        firsts = probed["p_probe"]["first_token"]
        at_name = [firsts[bk.ATTRIBUTES.index(a)][0] for a in STORED_AT_THE_NAME]
    q = probed["q_probe"]
    q_first = float(np.mean(list(q["first_token"].values())))
    return at_name + [q_first, whole_mean(q["whole"])]


def layer_name(k, n_layer):
    return "embedding" if k == 0 else f"block {k}" + (" (final LN)" if k == n_layer else "")


def best_layer(row):
    """The layer whose Q-probe first-token mean is highest, and that mean."""
    q_first = [layer_cells(probed)[2] for probed in row["layers"]]
    k = int(np.argmax(q_first))
    return layer_name(k, row["n_layer"]), q_first[k]


def lookup_cells(row):
    """Own-value recall intact, cut from the name at every block; after the name's states are
    patched at the embedding (the donor's name), the share that follows the donor."""
    lookup = row["lookup"]
    donor = lookup["patch"]["after block 0"]["follows_donor"]["mean"]
    return [lookup["intact"]["mean"], lookup["cut"]["every block"]["mean"], donor]


def lookup_summary(row):
    """In words: the block whose cut alone drops recall most, the last patch the prediction still
    follows (half the reads or more), and the best the Q-probe reads at the name."""
    lookup = row["lookup"]
    cuts = {b: c["mean"] for b, c in lookup["cut"].items() if b != "every block"}
    worst = min(cuts, key=cuts.get)
    followed = [(k, p["follows_donor"]["mean"]) for k, p in lookup["patch"].items()
                if p["follows_donor"]["mean"] >= 50]
    if followed:
        patch = (f"with another person's name states patched in {followed[-1][0]}, "
                 f"{fmt(followed[-1][1])}% of reads follow that person")
    else:
        patch = "no patch of the name's states moves half the reads to another person"
    where, q_first = best_layer(row)
    majority = np.mean(list(row["layers"][0]["q_probe"]["baseline"]["first_token"].values()))
    untested = "" if is_memorised(row) else " (biographies not memorised: does not test the claim)"
    return (f"{row['setting']} {shape_name(row)} seed {row['seed']}{untested}: first-token recall "
            f"{fmt(lookup['intact']['mean'])}% intact, {fmt(cuts[worst])}% with the reads cut "
            f"from the name at {worst} alone; {patch}; the Q-probe at the name reads at most "
            f"{fmt(q_first)}% (first token, {where}; majority guess {fmt(majority)}%).")


def storage_by_shape(rows):
    """The name's best Q-probe read (first token) and position 0's P-probe after the last block,
    shape by shape, on the augmented models that memorised their biographies: whether width or
    depth starts to put a fact at the name."""
    memorised = [r for r in rows if r["setting"] == AUGMENTED and is_memorised(r)]
    if not memorised:
        return "No augmented model here has memorised its biographies."
    parts = []
    for seeds in grouped(memorised, ("overrides",)).values():
        last = [layer_cells(r["layers"][-1]) for r in seeds]
        q_first = " / ".join(fmt(best_layer(r)[1]) for r in seeds)
        company = " / ".join(fmt(cells[0]) for cells in last)
        month = " / ".join(fmt(cells[1]) for cells in last)
        names = " / ".join(str(r["seed"]) for r in seeds)
        parts.append(f"{shape_name(seeds[0])} (seed {names}): {q_first}% (position 0: company "
                     f"{company}%, birth month {month}%)")
    return ("The name's best Q-probe read, first-token mean at any block, shape by shape "
            "(augmented models whose biographies are memorised): " + "; ".join(parts)
            + f". The paper's GPT-2 small: {fmt(paper_q_probe_first_token(AUGMENTED))}% "
            f"({fmt(paper_q_probe(AUGMENTED))}% whole value); position 0 about 100%.")


def shape_name(row):
    """Layers x width, and the learning rate where a row sets its own (the preset's otherwise)."""
    name = f"{row['n_layer']}x{row['n_embd']}"
    lr = row.get("overrides", {}).get("lr")
    if lr:
        name += f", lr {lr:g}"
    return name


def storage_map_markdown(results):
    rows = in_spec_order(results.lines("storage_map.jsonl"), [(s, o) for s, o, _, _ in STORAGE_MAP],
                         ("setting", "overrides"))
    headline = [r for r in rows if not r["overrides"]]
    profile = []
    for r in headline:
        baseline = r["layers"][0]["q_probe"]["baseline"]
        for k, probed in enumerate(r["layers"]):
            name = f"{r['setting']} seed {r['seed']}" if k == 0 else ""
            profile.append([name, layer_name(k, r["n_layer"])] +
                           [fmt(v) for v in layer_cells(probed)])
        majority = [r["layers"][0]["p_probe"]["baseline"]["first_token"][a]
                    for a in STORED_AT_THE_NAME]
        majority += [float(np.mean(list(baseline["first_token"].values()))),
                     whole_mean(baseline["whole"])]
        profile.append(["", "majority guess"] + [fmt(v) for v in majority])
    header = ["model", "read after", "P-probe pos 0: company", "birth month",
              "Q-probe first token", "Q-probe whole value"]
    lookup = []
    for r in headline:
        cells = [r["lookup"]["intact"]] + list(r["lookup"]["cut"].values())
        names = ["intact"]
        names += [f"read positions cut from the name at {b}" for b in r["lookup"]["cut"]]
        for name, c in zip(names, cells):
            lookup.append([f"{r['setting']} seed {r['seed']}" if name == "intact" else "", name,
                           fmt(c["mean"]), ""])
        for name, c in r["lookup"]["patch"].items():
            where = "the embedding (the donor's name)" if name == "after block 0" else name
            lookup.append(["", f"name's states patched: {where}", fmt(c["keeps_own"]["mean"]),
                           fmt(c["follows_donor"]["mean"])])
    lookup_header = ["model", "intervention", "own value (first token)", "follows the donor"]
    shapes = [[r["setting"], shape_name(r), r["seed"], memorised_cell(r), fmt(r["qa_test"]["mean"]),
               *[fmt(v) for v in layer_cells(r["layers"][-1])], "%s (%.1f)" % best_layer(r),
               *[fmt(v) for v in lookup_cells(r)],
               yes(storage_pattern(r)) if r["setting"] == AUGMENTED else "",
               f"{r['minutes']:.0f}"] for r in rows]
    shapes_header = ["model", "layers x width (lr)", "seed", "memorised", "QA P_test",
                     "P-probe pos 0: company", "birth month", "Q-probe first token", "whole value",
                     "best layer (Q first token)", "recall intact", "cut at every block",
                     "follows donor's name", "paper's pattern", "minutes"]
    gpu_points = [shape_name(dict(n_layer=o["n_layer"], n_embd=o["n_embd"], overrides=o))
                  for _, o, _, where in STORAGE_MAP if where == "gpu"]
    caption = (f"{provenance(rows, 'python experiments/tables.py storage-map')} "
               "bioknow's own addition: the paper probes the last layer only. The cpu preset (N "
               "= 1,000, 60 passes, lr 0.003 unless the row names its own) at each shape, probed "
               "as in the headline after every block (`probe --layer K`; the P-probe after the "
               "last block only but on the headline's models) and checked causally (`probe "
               "--kind lookup`): on P_test people's first biographies, the first token of each "
               "value predicted from the token before it, with those read positions cut from "
               "the name's tokens by the attention mask, or with another person's hidden states "
               "patched in at the name. Points sized for a GPU ("
               f"{'; '.join(gpu_points)}"
               "): `python experiments/tables.py storage-map --device cuda --jobs 4`. A row "
               "whose pretraining, or part of it, ran before it (`pretraining_reused`) leaves "
               "that part out of its minutes.")
    summary = ["- " + lookup_summary(r) for r in rows if r["setting"] == AUGMENTED] + [""]
    summary += [storage_by_shape(rows), ""]
    summary += [f"{storage_pattern.claim}: " + (
        "shown by " + ", ".join(f"{shape_name(r)} seed {r['seed']}" for r in rows
                                if storage_pattern(r))
        if any(storage_pattern(r) for r in rows) else "shown by no model here") + "."]
    return section("storage_map", caption, ["![probes by layer](layer_profile.png)"],
                   ["Layer profile of the headline's models:"], markdown_table(header, profile),
                   ["Where the lookup happens, causally:"], markdown_table(lookup_header, lookup),
                   ["Against depth and width:"], markdown_table(shapes_header, shapes), summary)


def gpu_markdown(results):
    g = results.tables.get("gpu_session.json")
    paper, cut, d = g["paper_shape_step"], g["paper_slice"], g["ddp_one_nccl_process"]
    table = [["paper shape (12x768, context 512, batch 96), compiled, bf16",
              f"{paper['tokens_per_sec']:,} tokens/s, {paper['ms_per_step']} ms/step, **MFU "
              f"{100 * paper['mfu']:.1f}%**", "MFU >= 45% (stretch 55%)"],
             ["300-step slice of the paper preset through `train`",
              f"{cut['slice_tokens_per_sec']:,} tokens/s: **{cut['projected_hours_80k']} h** for "
              "80,000 steps", "<= 70 min on one H100"]]
    for b in g["small_presets"]:
        s = b["shape"]
        table.append([f"cpu preset's step ({s['n_layer']}x{s['n_embd']}, batch {s['batch_size']} x "
                      f"{s['block_size']}), {'compiled' if b['compiled'] else 'eager'}",
                      f"{b['ms_per_step']} ms/step ({b['tokens_per_sec']:,} tokens/s)", ""])
    table.append([f"DDP: torchrun, {d['processes']} NCCL process, against a plain process",
                  f"largest loss gap {d['max_gap']}", "the same curve"])
    top = ", ".join(f"{k['name'].split('<')[0].strip()} {k['self_cuda_percent']}"
                    for k in g["paper_step_profile"]["top"][:6])
    caption = (f"`{g['command']}` on {g['device']}, commit {g['commit'][:7]}. MFU: model FLOPs (6 "
               "per parameter per token plus attention) against the card's dense bf16 peak (989 "
               "TFLOP/s).")
    profile = g["paper_step_profile"]["note"]
    return section("gpu", caption, markdown_table(["measurement", "result", "target"], table),
                   [f"Where the paper-shape step's GPU time goes ({profile}): {top}.", "",
                    f"Scale study: {g['scale_study']['note']}."])


# Each section, and the results files of which it needs one (None: the headline is enough).
def recipe_markdown(results):
    """Finetuning recipes on the headline's augmented pretrained model of several seeds, each with
    a fifth of the P_train people held out: the held-out mean decides; P_test is shown, not used."""
    lines = results.lines("finetune_recipe.jsonl")
    seeds = sorted({r["seed"] for r in lines})
    by_recipe = {}
    for r in lines:
        by_recipe.setdefault(r["flags"] or "(the preset's)", {})[r["seed"]] = r
    rows = []
    for flags, runs in by_recipe.items():
        cells = []
        for seed in seeds:
            r = runs.get(seed)
            cells.append(f"**{fmt(r['qa_holdout'])}** ({fmt(r['qa_test'])})" if r else "–")
        rows.append([flags] + cells)
    caption = (f"`finetune --holdout 0.2` then `eval` on `reproduce`'s pretrained "
               f"{lines[0]['setting']} model of each seed (preset cpu: full finetuning, lr 3e-4, "
               f"10 epochs); {lines[0]['hardware']}. Held-out P_train mean, P_test in brackets.")
    header = ["recipe (finetune flags)"] + [f"seed {seed}" for seed in seeds]
    return section("recipe", caption, markdown_table(header, rows))


REPORT_SECTIONS = ((headline_markdown, None), (probes_markdown, None),
                   (full_markdown, ["full_table.jsonl"]), (celebrity_markdown, ["celebrity.jsonl"]),
                   (gbert_markdown, ["gbert.jsonl", "gbert_budget.jsonl"]),
                   (finetune_grid_markdown, ["finetune_grid.jsonl"]),
                   (qa_ratio_markdown, ["qa_ratio.jsonl"]), (scale_markdown, ["mixed_scale.jsonl"]),
                   (probe_scale_markdown, ["probe_scale.jsonl"]),
                   (storage_map_markdown, ["storage_map.jsonl"]),
                   (recipe_markdown, ["finetune_recipe.jsonl"]),
                   (gpu_markdown, ["gpu_session.json"]))


# --------------------------------------------------------------------------------------------------
# --- pictures (matplotlib, optional: experiments/requirements.txt)

PAPER_COLOR, OURS_COLOR = "tab:gray", "tab:blue"
SCALE_COLORS = {500: "tab:orange", 1000: "tab:blue"}  # a curve's people


def draw_p_probe(plt, results):
    rows = [r for r in results.headline[0]["rows"] if "p_probe" in r]
    fig, axes = plt.subplots(len(rows), 2, figsize=(9, 3.4 * len(rows)), squeeze=False)
    for (ours, theirs), row in zip(axes, rows):
        paper = PAPER_P_PROBE[row["setting"]]
        padded = np.array([paper[a] + [np.nan] * (6 - len(paper[a])) for a in bk.ATTRIBUTES])
        theirs_name = "paper, " + ("single" if row["setting"] == "single" else "multi5+permute")
        ours_name = f"bioknow, {row['setting']} (seed 0)"
        for ax, grid, title in ((ours, np.array(row["p_probe"]["first_token"]), ours_name),
                                (theirs, padded, theirs_name)):
            ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=100, cmap="viridis")
            for (i, j), v in np.ndenumerate(grid):
                if not np.isnan(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
                            color="black" if v > 60 else "white")
            ax.set_xticks(range(6), [f"pos {i}" for i in range(6)])
            ax.set_yticks(range(len(bk.ATTRIBUTES)), bk.ATTRIBUTES)
            ax.set_title(title, fontsize=9)
    fig.suptitle("P-probe, first token (%): where each attribute can be read", fontsize=10)
    return fig


def draw_qa_ratio(plt, results):
    groups, fixed = ratio_groups(results.lines("qa_ratio.jsonl"))
    curve = {q: rs for (q, passes), rs in groups.items() if passes == fixed}
    ratios = sorted(curve)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(ratios, [qa_mean(curve[q]) for q in ratios], "o-", color=OURS_COLOR,
            label=f"bioknow, seeds' mean ({fixed:g} biography passes)")
    for q in ratios:
        ax.plot([q] * len(curve[q]), p_test(curve[q]), ".", color=OURS_COLOR, alpha=0.5)
    ax.plot(list(PAPER_QA_RATIO), list(PAPER_QA_RATIO.values()), "s--", color=PAPER_COLOR,
            label="paper (Figure 10)")
    ax.set(xlabel="QA ratio (share of QA windows)", ylabel="P_test QA, %", ylim=(0, 100))
    ax.legend(fontsize=8)
    return fig


def draw_scale(plt, results):
    rows = results.lines("mixed_scale.jsonl")
    fig, axes = plt.subplots(1, len(SCALE_FIELDS), figsize=(13, 3.4), sharey=True)
    for ax, (field, title) in zip(axes, SCALE_FIELDS):
        values = set()
        for (n, where), points in scale_curves(rows, field).items():
            values |= {v for v, _ in points}
            ax.plot([v for v, _ in points], [qa_mean(rs) for _, rs in points],
                    "o-" if where == "cpu" else "s:", color=SCALE_COLORS.get(n, "tab:green"),
                    label=(f"N = {n:,}, " if n else "") + where)
            for v, rs in points:
                ax.plot([v] * len(rs), p_test(rs), ".", color="black", alpha=0.3)
        ax.axhline(paper_qa("single", "mixed"), color=PAPER_COLOR, ls="--",
                   label="paper (124M, N = 100,000)")
        if field == "people":
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(sorted(values), [f"{v:g}" for v in sorted(values)])
        ax.set(xlabel=title, ylim=(0, 100))
        ax.legend(fontsize=7)
    axes[0].set_ylabel("P_test QA, %")
    fig.suptitle("Mixed training on bioS single (QAr 0.8, 2x128 unless varied): P_test, seeds' "
                 "mean", fontsize=10)
    return fig


LAYER_CURVES = ("P-probe pos 0: company", "P-probe pos 0: birth month", "Q-probe first token",
                "Q-probe whole value")  # layer_cells' order


def draw_layer_profile(plt, results):
    """Per model (the headline's and the map's: its first seed whose biographies are memorised,
    else its first, marked): each probe against the block it reads after, the paper's last-layer
    number for the augmented setting beside it."""
    lines = in_spec_order(results.lines("storage_map.jsonl"),
                          [(s, o) for s, o, _, _ in STORAGE_MAP], ("setting", "overrides"))
    rows = []
    for seeds in grouped(lines, ("setting", "overrides")).values():
        seeds = sorted(seeds, key=lambda r: r["seed"])
        rows.append(next((r for r in seeds if is_memorised(r)), seeds[0]))
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.4), sharey=True,
                             squeeze=False)
    paper_q = paper_q_probe_first_token(AUGMENTED)
    for ax, row in zip(axes[0], rows):
        cells = np.array([layer_cells(probed) for probed in row["layers"]], dtype=float)
        for curve, name in enumerate(LAYER_CURVES):
            ax.plot(range(len(cells)), cells[:, curve], "o-", label=name)
        if row["setting"] == AUGMENTED:
            ax.axhline(paper_q, color=PAPER_COLOR, ls="--", label="paper's Q-probe first token")
        names = [layer_name(k, row["n_layer"]).split(" (")[0].replace("block ", "")
                 for k in range(len(cells))]
        ax.set_xticks(range(len(cells)), ["emb"] + names[1:])
        untested = "" if is_memorised(row) else ", not memorised"
        ax.set(xlabel="read after block", ylim=(0, 103),
               title=f"{row['setting']}, {shape_name(row)}, seed {row['seed']} (QA "
                     f"{row['qa_test']['mean']:.0f}%{untested})")
        ax.title.set_fontsize(8)
    axes[0][0].set_ylabel("probe accuracy on P_test, %")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Where a fact can be read, block by block", fontsize=10)
    return fig


PICTURES = (("p_probe.png", draw_p_probe, None), ("qa_ratio.png", draw_qa_ratio, "qa_ratio.jsonl"),
            ("layer_profile.png", draw_layer_profile, "storage_map.jsonl"),
            ("mixed_scale.png", draw_scale, "mixed_scale.jsonl"))


def draw_pictures(results, out):
    """The report's PNGs beside it; without matplotlib the committed ones stay, a line says so."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("tables: no matplotlib (pip install -r experiments/requirements.txt): REPORT.md "
              "written, its pictures left as they were", file=sys.stderr)
        return
    for name, draw, needs in PICTURES:
        if needs is None or results.lines(needs):
            figure = draw(plt, results)
            figure.tight_layout()
            figure.savefig(os.path.join(out, name), dpi=110)
            plt.close("all")


# --------------------------------------------------------------------------------------------------
# --- REPORT.md and the command line

def report_markdown(results):
    parts = [verdict_markdown(results)]
    for render, needs in REPORT_SECTIONS:
        if needs is None or any(results.lines(name) for name in needs):
            parts.append(render(results))
    return "\n".join(p for p in parts if p)


def write_report(out):
    results = load_results(out)
    markdown = report_markdown(results)
    bk.write_text(os.path.join(out, "REPORT.md"), markdown)
    draw_pictures(results, out)
    print(markdown)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="experiments/tables.py",
                                     description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=("report",) + tuple(TABLES),
                        help="report: render OUT/REPORT.md; any other: run that table into OUT")
    parser.add_argument("--preset", help="default: table for full / celebrity / gbert(-budget) "
                                         "(the cpu preset at N = 500), cpu otherwise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, default=1, help="rows side by side, a process each on "
                        "one thread (default 1; 2 on a 2-core CPU, more on a GPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        if args.table == "report":
            return write_report(args.out)
        table = TABLES[args.table]
        run_table(table, args.preset or table.preset, args.seed, args.out, args.device,
                  quiet=args.quiet, jobs=args.jobs)
    except bk.UserError as e:
        print(f"tables: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
