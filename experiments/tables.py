"""
The paper's experiments beside bioknow's method: every table of results/REPORT.md, how it is run, the paper's
numbers it is compared with, and the checks of what the paper claims. It imports bioknow.py, which holds the method.

    python experiments/tables.py report        # results/REPORT.md from results/reproduce.json and every table there
    python experiments/tables.py full          # the 16 bioS settings x QA finetuning / mixed training (Figure 3)
    python experiments/tables.py celebrity     # celebrity helps minority (Result 6)
    python experiments/tables.py gbert         # the bidirectional model (Result 7)
    python experiments/tables.py gbert-budget  # the passes GBERT needs before it has memorised its biographies
    python experiments/tables.py finetune-grid # LoRA ranks and full finetuning on bioS single (Figure 2)
    python experiments/tables.py qa-ratio      # mixed training at QAr 0.1 ... 0.8 (Figure 10)
    python experiments/tables.py headline-choice # the headline's mixed row, chosen on held-out P_train people
    python experiments/tables.py mixed-sweep   # mixed training at larger budgets, people and widths
    python experiments/tables.py probe-scale   # P- and Q-probes against width, depth and passes, and on mixed models

Each writes one JSONL file in --out (results/ by default), a line a run with its configuration, seed, hardware,
minutes and commit; `report` renders them all.
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
from bioknow import git_commit, read_json, read_jsonl, rewrite_jsonl, write_text  # noqa: E402

RULER = "# " + "-" * 118


# ----------------------------------------------------------------------------------------------------------------------
# --- the paper's numbers: P_test accuracy, %

# Per setting: QA finetuning after bio pretraining (Figure 3), and mixed training (Figure 3; per attribute for
# single only, Figure 1); each the mean, then the six attributes.
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
PAPER_QA = {(s, m): PAPER_TABLE[s][k] for s, m, k in (("single", "qa_finetune", 0), ("single", "mixed", 1),
                                                        ("multi5+permute+fullname", "qa_finetune", 0))}

# P-probing (Figure 5), first token, by read position (bioS single: up to the attribute's own position, the
# fixed order; multi5+permute, the paper's augmented P-probe row, set beside our multi5+permute+fullname).
PAPER_P_PROBE = {
    "single": {"birth_date": [100], "birth_city": [5.9, 100], "university": [38.0, 37.1, 99.2],
               "major": [4.7, 4.6, 5.4, 99.9], "company": [1.5, 1.2, 1.3, 2.4, 99.5],
               "company_city": [15.4, 15.4, 14.9, 13.0, 69.1, 100]},
    "multi5+permute+fullname": dict({a: [100] * 6 for a in bk.ATTRIBUTES}, company=[99.9, 99.9, 99.9, 100, 100, 100],
                                    company_city=[99.8, 99.8, 99.9, 100, 100, 100]),
}
# Q-probing (Figure 7): first token (6 attributes) then whole value (5 attributes).
PAPER_Q_PROBE = {
    "majority": [8.3, 2.5, 37.0, 4.0, 1.5, 14.8, 0.5, 0.3, 1.0, 0.4, 13.7],
    "single": [63.4, 1.9, 37.5, 3.1, 0.2, 13.1, 1.1, 0.3, 1.4, 0.1, 11.6],
    "single+fullname": [78.8, 47.5, 65.4, 51.0, 47.4, 28.9, 43.9, 31.2, 40.8, 44.4, 28.9],
    "single+permute5": [95.3, 49.7, 66.6, 68.6, 96.5, 99.1, 47.7, 40.7, 63.0, 96.2, 98.9],
    "multi5": [100, 39.8, 40.3, 40.1, 3.2, 13.2, 38.1, 9.7, 36.1, 2.3, 11.9],
    "multi5+permute": [100, 100, 99.9, 100, 99.9, 99.8, 96.1, 72.6, 94.9, 99.6, 99.7],
    "multi5+permute+fullname": [100, 100, 99.8, 100, 100, 99.8, 95.4, 68.1, 92.0, 99.9, 99.8],
}

# ----------------------------------------------------------------------------------------------------------------------
# --- shared helpers

def fmt(v):
    return "–" if v is None else f"{v:.1f}"


def pearson(xs, ys):
    """Pearson correlation, or None where it is undefined (fewer than 3 points, or a constant)."""
    if len(xs) < 3 or np.std(xs) == 0 or np.std(ys) == 0:
        return None
    return round(float(np.corrcoef(xs, ys)[0, 1]), 3)


def provenance(rows):
    """The sentence a table's caption ends with: where its runs ran, and for how long."""
    hardware = sorted({r["hardware"] for r in rows if r.get("hardware")})
    return (f"Ran on {' and '.join(hardware) or 'unrecorded hardware'}: {sum(r['minutes'] for r in rows):.1f} "
            f"minutes for the {len(rows)} runs.")


def jsonl_lines(path):
    """The lines of a table's JSONL file, none when it is not there yet."""
    return read_jsonl(path) if os.path.isfile(path) else []


def all_seeds(path):
    """A table's lines with those of other seeds (OUT/seed*/TABLE.jsonl, the --out a seed's reproduce uses) after
    them, and the paths of those other files."""
    others = sorted(glob.glob(os.path.join(os.path.dirname(path), "seed*", os.path.basename(path))))
    return read_jsonl(path) + [r for other in others for r in read_jsonl(other)], others


def table_line(row, preset, seed, **extra):
    """A table's JSON line: the row's numbers (with the hardware that ran it) and what produced them (preset, seed,
    N, version, commit)."""
    return dict(row, **extra, preset=preset, seed=seed, people=bk.resolve_config(preset).people, bioknow=bk.VERSION,
                commit=git_commit())


def memorised_cell(row):
    """A row's memorisation of its biographies (first token, %), P_train / P_test, marked when its P_test biographies
    are under bioknow's MEMORISED: such a row does not test the paper's claim. Older lines have one number for all."""
    if "memorization_p_test" not in row:
        return f"{row['bio_memorization']:.1f}" + (" (not memorised)" if row["bio_memorization"] < bk.MEMORISED else "")
    train, test = row["memorization_p_train"]["mean"], row["memorization_p_test"]["mean"]
    return f"{train:.1f} / {test:.1f}" + (" **not memorised**" if test < bk.MEMORISED else "")


def grouped(rows, key):
    """{key(row): [rows]}, keys in the order they first appear: the seeds of one configuration, a list each."""
    groups = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


def seed_cells(rows, value):
    """One cell of a table that shows each seed: value(row) of each row, joined."""
    return ", ".join(value(r) for r in rows)


def qa_mean(rows, field="qa_test"):
    """The QA mean of the seeds of one configuration: on P_test, or on the people FIELD names (qa_holdout)."""
    return float(np.mean([r[field]["mean"] for r in rows]))


def qa_cell(rows, field="qa_test"):
    """Each seed's QA mean (P_test unless FIELD says), then their mean where there are several: `58.6, 51.9 (mean
    55.2)`."""
    return ", ".join(fmt(r[field]["mean"]) for r in rows) + (
        f" (mean {qa_mean(rows, field):.1f})" if len(rows) > 1 else "")


def is_memorised(row):
    """P_test biographies memorised (older lines: everyone's)."""
    p_test = row.get("memorization_p_test")
    return (p_test["mean"] if p_test else row["bio_memorization"]) >= bk.MEMORISED


def whole_means(row):
    """A row's Q-probe whole-value accuracy and its QA P_test accuracy, each the mean of the same five attributes."""
    return (float(np.mean([row["q_probe"]["whole"][a] for a in bk.ATTRIBUTES[1:]])),
            float(np.mean([row["qa_test"][a] for a in bk.ATTRIBUTES[1:]])))


# ----------------------------------------------------------------------------------------------------------------------
# --- the headline report: `python bioknow.py reproduce`'s rows and their probes (Results 1-5, Figures 5 and 7)

# What the default preset must show: memorised yet not extractable; augmentation and mixing fix it.
THRESHOLDS = {
    ("single", "qa_finetune"): "bio memorisation >= 95% on every attribute, P_test mean <= 20%",
    ("multi5+permute+fullname", "qa_finetune"): "P_test mean >= 70%",
    ("single", "mixed"): "P_test mean >= 60%, its P_test biographies >= 95% memorised",
}


def meets_threshold(row):
    key = (row["setting"], row["method"])
    if key == ("single", "qa_finetune"):
        return row["bio_memorization_min"] >= 95 and row["qa_test"]["mean"] <= 20
    if key == ("multi5+permute+fullname", "qa_finetune"):
        return row["qa_test"]["mean"] >= 70
    if key == ("single", "mixed"):
        return row["qa_test"]["mean"] >= 60 and is_memorised(row)
    return None


def report_markdown(result):
    cols = ("mean",) + bk.ATTRIBUTES
    lines = [f"# bioknow: headline reproduction (preset `{result['preset']}`)", "",
             f"Hardware: {result['hardware']}. Total wall time: {result['minutes']:.1f} minutes. "
             f"Seed {result['seed']}. Command: `{result['command']}`.", "",
             "Accuracy in %, exact match of the whole answer, greedy decoding. P_train: people whose QA was trained "
             "on; "
             "P_test: the other half, whose QA was never seen; memorised: first-token accuracy on the biographies of "
             "P_train / P_test people. Paper: GPT-2 124M, N = 100,000 (Figures 1 and 3).", "",
             "| setting | method | memorised | split | " + " | ".join(cols) + " |",
             "|---|---|---|---|" + "---|" * len(cols)]
    for row in result["rows"]:
        key = (row["setting"], row["method"])
        paper = PAPER_QA.get(key)
        lines.append(f"| {row['setting']} | {row['method']} | {memorised_cell(row)} | P_train | "
                     + " | ".join(fmt(row["qa_train"][c]) for c in cols) + " |")
        lines.append("| | | | **P_test** | " + " | ".join(f"**{fmt(row['qa_test'][c])}**" for c in cols) + " |")
        if paper:
            lines.append("| | | | paper P_test | " + " | ".join(fmt(v) for v in paper) + " |")
    lines += ["", "| row | what it must show | shown | minutes |", "|---|---|---|---|"]
    for row in result["rows"]:
        key = (row["setting"], row["method"])
        ok = meets_threshold(row)
        lines.append(f"| {row['setting']} {row['method']} | {THRESHOLDS.get(key, '')} | "
                     f"{'yes' if ok else 'NO' if ok is False else ''} | {row['minutes']:.1f} |")
    for row in result["rows"]:
        if meets_threshold(row) is False:
            lines += ["", f"**Not reproduced at this preset:** {row['setting']} {row['method']} should show "
                          f"{THRESHOLDS[(row['setting'], row['method'])]}; it shows P_test "
                          f"{row['qa_test']['mean']:.1f} "
                          f"with the biographies {memorised_cell(row)}% memorised (P_train / P_test). The notes "
                          "below say what was tried."]
    return "\n".join(lines) + "\n"


def seeds_markdown(results):
    """The headline's rows on every seed run (OUT/reproduce.json and OUT/seed*/reproduce.json), each check per seed:
    a conclusion rests on at least two."""
    lines = ["## The headline on every seed", "",
             "Each seed is `python bioknow.py reproduce --seed S --jobs 2` (seed 0 above; others with `--out "
             "results/seedS`): data, pretraining, probes and finetuning all drawn from that seed. P_test QA in %; "
             "Q-probe: whole-value mean at the name.", "",
             "| row | seed | memorised | P_train QA | **P_test QA** | shown | Q-probe | paper P_test | hardware, "
             "minutes (row / whole command) |", "|---|---|---|---|---|---|---|---|---|"]
    for key in bk.REPRODUCE_ROWS:
        for result in results:
            row = next(r for r in result["rows"] if (r["setting"], r["method"]) == key)
            ok = meets_threshold(row)
            lines.append(f"| {' '.join(key)} | {result['seed']} | {memorised_cell(row)} | "
                         f"{row['qa_train']['mean']:.1f} "
                         f"| **{row['qa_test']['mean']:.1f}** | {'yes' if ok else 'NO' if ok is False else ''} | "
                         f"{fmt(whole_means(row)[0]) if 'q_probe' in row else ''} | {fmt(PAPER_QA[key][0])} | "
                         f"{row.get('hardware', result['hardware'])}, {row['minutes']:.1f} / {result['minutes']:.1f} |")
        tests = [next(r for r in res["rows"] if (r["setting"], r["method"]) == key)["qa_test"]["mean"]
                 for res in results]
        lines.append(f"| {' '.join(key)} | mean | | | **{np.mean(tests):.1f}** | | | | |")
    checks = [probe_checks(res["rows"]) for res in results]
    if all(checks):
        lines += ["", "| what the probes must show | " + " | ".join(f"seed {res['seed']}" for res in results) + " |",
                  "|---|" + "---|" * len(results)]
        lines += [f"| {claim} | " + " | ".join(f"{c[k][1]}: {'yes' if c[k][2] else 'NO'}" for c in checks) + " |"
                  for k, (claim, _, _) in enumerate(checks[0])]
    return "\n".join(lines) + "\n"


def q_probe_vs_qa(rows):
    """Q-probe whole-value accuracy against QA P_test accuracy on the same five attributes (paper Result 5): the
    correlation across rows (of the means) and across (row, attribute) pairs."""
    rows = [r for r in rows if "q_probe" in r]
    means = [whole_means(r) for r in rows]
    pairs = [(r["q_probe"]["whole"][a], r["qa_test"][a]) for r in rows for a in bk.ATTRIBUTES[1:]]
    return dict(rows=pearson(*zip(*means)) if means else None, row_attributes=pearson(*zip(*pairs)) if pairs else None)


def probe_checks(rows):
    """What the probes must show on the headline's models (the targets of the paper's Results 4-5 at this scale),
    each as (claim, what was measured, shown: bool), so a missed target says by how much."""
    by = {(r["setting"], r["method"]): r for r in rows if "p_probe" in r or "q_probe" in r}
    single, augmented = by.get(("single", "qa_finetune")), by.get(("multi5+permute+fullname", "qa_finetune"))
    checks = []
    if single and augmented:
        i = bk.ATTRIBUTES.index("company")
        company, base = single["p_probe"]["first_token"][i], single["p_probe"]["baseline"]["first_token"]["company"]
        checks.append(("single: company P-probe (first token) within 10 points of its baseline at positions 0-3 and "
                       ">= 80% at position 4", f"{', '.join(fmt(v) for v in company[:4])} (base {fmt(base)}); "
                       f"{fmt(company[4])}", all(v <= base + 10 for v in company[:4]) and company[4] >= 80))
        at_name = [augmented["p_probe"]["first_token"][bk.ATTRIBUTES.index(a)][0] for a in ("company", "birth_date")]
        checks.append(("multi5+permute+fullname: P-probe (first token) >= 80% at position 0 for company and birth "
                       "month", ", ".join(map(fmt, at_name)), min(at_name) >= 80))
        (q_single, _), (q_aug, qa_aug) = whole_means(single), whole_means(augmented)
        checks.append(("Q-probe whole-value mean of multi5+permute+fullname within 15 points of its QA P_test",
                       f"{fmt(q_aug)} against {fmt(qa_aug)}", bool(q_aug >= qa_aug - 15)))
        checks.append(("Q-probe whole-value mean: multi5+permute+fullname at least 40 points above single",
                       f"{fmt(q_aug)} against {fmt(q_single)}", bool(q_aug >= q_single + 40)))
    corr, top = q_probe_vs_qa(rows)["rows"], max((whole_means(r)[0] for r in rows if "q_probe" in r), default=0)
    if corr is not None:
        checks.append(("Q-probe tracks QA: correlation across rows >= 0.9, the Q-probe spanning the range (its "
                       "highest >= 50%)", f"{corr}, highest {fmt(top)}", corr >= 0.9 and top >= 50))
    return checks


def probe_markdown(result):
    """The probes laid out like the paper's Figure 5 (P-probing: attribute x read position) and Figure 7 (Q-probing:
    one line per setting), the paper's numbers beside ours."""
    rows = [r for r in result["rows"] if "p_probe" in r or "q_probe" in r]
    if not rows:
        return ""
    about = rows[0].get("p_probe") or rows[0]["q_probe"]
    population = (f"{about['probe_people']} P_train people and scored on the {about['scored_people']} P_test people"
                  if "probe_people" in about else "P_train people and scored on P_test people")
    lines = ["## Probing: where the pretrained model keeps each fact (Results 4-5)", "",
             f"Frozen pretrained models (before QA finetuning), probes trained on the {population} (at the paper's "
             "N = 100,000: 50,000 and 50,000), accuracy in %; `base` is the majority guess. Recipe (notes below): "
             f"the paper's linear classifier, its read-outs fitted on the frozen features ({bk.PROBE_HEAD_STEPS} "
             f"full-batch steps), then trained with the rank-2 (P) / rank-16 (Q) embedding update for "
             f"{about.get('steps', 'the')} steps; AdamW lr 1e-3, wd 0.3, linear decay. The candidate read-out and "
             "other models: the probe tables further down."]
    for row in rows:
        if "p_probe" not in row:
            continue
        p = row["p_probe"]
        lines += ["", f"### P-probing, {row['setting']} (Figure 5)", "",
                  "Read at the token just before each attribute, positions 0-5 in sentence order"
                  + (" (fixed order: position k precedes attribute k)." if "permute" not in row["setting"] else
                     " (permuted: the attribute at each position varies).")
                  + " Whole value for five attributes (birth date: first token only). Paper: Figure 5"
                  + (" (its augmented row is multi5+permute)." if row["setting"] != "single" else "."), "",
                  "| target | kind | base | " + " | ".join(f"pos {i}" for i in range(6)) + " | paper (first token) |",
                  "|---|---|---|" + "---|" * 7]
        for kind, attrs in p["attributes"].items():
            for attr, accs in zip(attrs, p[kind]):
                paper = PAPER_P_PROBE.get(row["setting"], {}).get(attr) if kind == "first_token" else None
                lines.append(f"| {attr} | {kind.replace('_', ' ')} | {fmt(p['baseline'][kind][attr])} | "
                             + " | ".join(fmt(v) for v in accs) + f" | {' '.join(fmt(v) for v in paper or [])} |")
        if "seen" in p:  # how much the classes no probe-training person has hold the whole-value numbers down
            best = {a: max(range(6), key=lambda i: p["whole"][k][i]) for k, a in enumerate(p["attributes"]["whole"])}
            lines += ["", "Whole value at each attribute's best position, all P_test people / those whose value some "
                      "probe-training person has (the share who have none): " + "; ".join(
                          f"{a} {fmt(p['whole'][k][best[a]])} / {fmt(p['seen']['whole'][a][best[a]])} "
                          f"({fmt(p['unseen_share']['whole'][a])}%)" for k, a in enumerate(p["attributes"]["whole"]))
                      + "."]
    lines += ["", "### Q-probing (Figure 7)", "",
              "Only the full name after a start token, read at the name's last token. Paper rows from Figure 7 "
              "(its Q-probe reads an end token after the name). QA P_test: the row's QA accuracy (mean of the same "
              "five attributes as the whole-value columns).", "",
              "| setting | method | " + " | ".join(f"first {a}" for a in bk.ATTRIBUTES) + " | "
              + " | ".join(f"whole {a}" for a in bk.ATTRIBUTES[1:]) + " | whole mean | QA P_test |",
              "|---|---|" + "---|" * (len(bk.ATTRIBUTES) * 2 + 1)]
    base = rows[0]["q_probe"]["baseline"]
    lines.append("| majority guess | | " + " | ".join(fmt(base["first_token"][a]) for a in bk.ATTRIBUTES) + " | "
                 + " | ".join(fmt(base["whole"][a]) for a in bk.ATTRIBUTES[1:]) + " | | |")
    lines.append("| paper: majority guess | | " + " | ".join(fmt(v) for v in PAPER_Q_PROBE["majority"]) + " | | |")
    for row in rows:
        q, (q_mean, qa_mean) = row["q_probe"], whole_means(row)
        lines.append(f"| {row['setting']} | {row['method']} | "
                     + " | ".join(fmt(q["first_token"][a]) for a in bk.ATTRIBUTES) + " | "
                     + " | ".join(fmt(q["whole"][a]) for a in bk.ATTRIBUTES[1:]) + f" | **{fmt(q_mean)}** | "
                     f"{fmt(qa_mean)} |")
        paper = PAPER_Q_PROBE.get(row["setting"]) if row["method"] == "qa_finetune" else None
        if paper:
            lines.append(f"| paper: {row['setting']} | | " + " | ".join(fmt(v) for v in paper) + " | "
                         f"{fmt(float(np.mean(paper[6:])))} | |")
    corr = q_probe_vs_qa(result["rows"])
    lines += ["", f"Correlation of Q-probe whole-value accuracy with QA P_test accuracy: across rows (means) "
                  f"{corr['rows'] if corr['rows'] is not None else '–'}, across (row, attribute) pairs "
                  f"{corr['row_attributes'] if corr['row_attributes'] is not None else '–'}.", "",
              "| what the probes must show | measured | shown |", "|---|---|---|"]
    lines += [f"| {claim} | {measured} | {'yes' if ok else 'NO'} |"
              for claim, measured, ok in probe_checks(result["rows"])]
    return "\n".join(lines) + "\n"

# ----------------------------------------------------------------------------------------------------------------------
# --- all 16 bioS settings (Figure 3, Result 5)

# `full` (Figure 3): all 16 bioS settings, each with QA finetuning after bio pretraining and with
# mixed training, every pretrained model Q-probed (Result 5). 32 pretraining runs: the `table` preset (the cpu preset
# at a smaller N) keeps them within 90 minutes on 2 cores.
FULL_SETTINGS = ("single", "single+fullname", "single+permute1", "single+permute2", "single+permute5",
                 "single+permute1+fullname", "single+permute2+fullname", "single+permute5+fullname",
                 "multi2", "multi2+fullname", "multi2+permute", "multi2+permute+fullname",
                 "multi5", "multi5+fullname", "multi5+permute", "multi5+permute+fullname")
FULL_METHODS = ("qa_finetune", "mixed")


def full_table(preset, seed, out, device, quiet=False, jobs=1):
    """Every setting x method, Q-probed -> OUT/full_table.jsonl, a line a row as it finishes (in table order). Rows
    already there for this preset and seed are kept, so a killed run continues where it stopped (delete the file to
    start over)."""
    os.makedirs(out, exist_ok=True)
    path, work = os.path.join(out, "full_table.jsonl"), os.path.join(out, "work", "full")
    lines = jsonl_lines(path)
    kept = [r for r in lines if (r.get("preset"), r.get("seed")) == (preset, seed)]
    if kept:
        print(f"keeping the {len(kept)} finished rows of {path} (delete it to rerun them)", flush=True)
    done = {(r["setting"], r["method"]) for r in kept}
    order = [(s, m) for s in FULL_SETTINGS for m in FULL_METHODS]
    tasks = [dict(setting=s, method=m, probes=("q",)) for s, m in order if (s, m) not in done]
    for _, row in bk.run_rows(tasks, preset, seed, device, work, jobs, quiet, "full table"):
        kept.append(table_line(row, preset, seed))
        rewrite_jsonl(path, sorted(kept, key=lambda r: order.index((r["setting"], r["method"]))))
        print(f"{row['setting']:>26} {row['method']:<12} memorised {memorised_cell(row)}  P_test "
              f"{row['qa_test']['mean']:5.1f}  Q-probe {whole_means(row)[0]:5.1f}  ({row['minutes']:.1f} min)",
              flush=True)


def ordering_checks(qa, mixed):
    """The orderings the paper reports across the settings (Figure 3), checked on {setting: P_test mean} of QA
    finetuning and of mixed training: a list of (claim, holds, detail), each over the settings that are there."""
    def pairs(claim, lower_higher, margin=0.0, need=None):
        lower_higher = [(lo, hi) for lo, hi in lower_higher if lo in qa and hi in qa]
        held = [(lo, hi) for lo, hi in lower_higher if qa[hi] > qa[lo] + margin]
        need = len(lower_higher) if need is None else min(need, len(lower_higher))
        detail = ", ".join(f"{lo} {qa[lo]:.1f} -> {hi} {qa[hi]:.1f}" for lo, hi in lower_higher)
        return claim, len(held) >= need, f"{len(held)} of {len(lower_higher)}: {detail}"

    bases = [s for s in FULL_SETTINGS if "fullname" not in s]
    permuted = [(f"multi{m}{f}", f"multi{m}+permute{f}") for m in (2, 5) for f in ("", "+fullname")] + [
        (f"single+permute{a}{f}", f"single+permute{b}{f}") for a, b in ((1, 2), (2, 5)) for f in ("", "+fullname")]
    checks = [pairs("single+permute1 below single (QA)", [("single+permute1", "single")]),
              pairs("multi5 well below multi5+permute (QA, by over 10 points)", [("multi5", "multi5+permute")], 10),
              pairs("fullname helps (QA, 7 of the 8 pairs at least)", [(s, s + "+fullname") for s in bases], need=7),
              pairs("permutation helps (QA, every pair)", permuted)]
    checks = [c for c in checks if not c[2].startswith("0 of 0")]
    if mixed:
        checks.append(("mixed training high across all rows (>= 60 on every setting)", min(mixed.values()) >= 60,
                       f"lowest {min(mixed.values()):.1f} ({min(mixed, key=mixed.get)})"))
    return checks


def full_table_markdown(path):
    rows = {(r["setting"], r["method"]): r for r in read_jsonl(path)}
    settings = [s for s in FULL_SETTINGS if (s, "qa_finetune") in rows or (s, "mixed") in rows]
    any_row = next(iter(rows.values()))
    lines = ["## All 16 bioS settings (Figure 3)", "",
             f"From `{os.path.basename(path)}`; `python experiments/tables.py full` (`make reproduce-full`). "
             f"Preset `{any_row['preset']}` (N = {any_row['people']}), seed {any_row['seed']}. "
             + provenance(list(rows.values())) + " One recipe for every row, nothing selected on P_test: QA = bio "
             "pretraining then full QA finetuning on P_train (the preset's optimiser and epochs); mixed = biographies "
             "and P_train QA in one run (QAr 0.8; its biographies get the bio rows' passes unless a line says "
             "otherwise). "
             "P_test exact match in %; memorised = first-token accuracy on the biographies of P_train / P_test "
             "people after pretraining, **not memorised** under 95% on P_test: such a row does not test the paper's "
             "claim; Q-probe = whole-value mean (five attributes) of a Q-probe on each "
             "pretrained model. Paper: GPT-2 124M, N = 100,000; it gives mixed training per attribute for single "
             "only.", "",
             "| setting | | QA mean | " + " | ".join(bk.ATTRIBUTES) + " | memorised | mixed mean | "
             + " | ".join(bk.ATTRIBUTES) + " | memorised | Q-probe (QA / mixed model) |", "|---|---|" + "---|" * 17]
    for s in settings:
        qa, mix = rows.get((s, "qa_finetune")), rows.get((s, "mixed"))
        cells = lambda r: [f"**{fmt(r['qa_test']['mean'])}**"] + [fmt(r["qa_test"][a]) for a in bk.ATTRIBUTES] \
            if r else ["–"] * 7
        probes = " / ".join(fmt(whole_means(r)[0]) if r else "–" for r in (qa, mix))
        lines.append(f"| {s} | bioknow | " + " | ".join(cells(qa)) + f" | {memorised_cell(qa) if qa else '–'} | "
                     + " | ".join(cells(mix)) + f" | {memorised_cell(mix) if mix else '–'} | {probes} |")
        paper_qa, paper_mix = PAPER_TABLE[s]
        paper_q = PAPER_Q_PROBE.get(s)
        lines.append("| | paper | " + " | ".join(fmt(v) for v in paper_qa) + " | | "
                     + " | ".join(fmt(v) for v in paper_mix + [None] * (7 - len(paper_mix))) + " | | "
                     + (fmt(float(np.mean(paper_q[6:]))) if paper_q else "") + " |")
    means = {m: {s: rows[(s, m)]["qa_test"]["mean"] for s in settings if (s, m) in rows} for m in FULL_METHODS}
    paper = {m: {s: PAPER_TABLE[s][k][0] for s in means[m]} for k, m in enumerate(FULL_METHODS)}
    lines += ["", "| the paper's ordering | bioknow | detail | paper |", "|---|---|---|---|"]
    checks = list(zip(ordering_checks(*means.values()), ordering_checks(*paper.values())))
    for ours, theirs in checks:
        lines.append(f"| {ours[0]} | {'yes' if ours[1] else 'NO'} | {ours[2]} | {'yes' if theirs[1] else 'no'} |")
    gap = {s: means["qa_finetune"][s] - paper["qa_finetune"][s] for s in means["qa_finetune"]}
    close = [s for s, g in gap.items() if abs(g) <= 5]
    lines += ["", f"{sum(ours[1] for ours, _ in checks)} of the paper's {len(checks)} orderings hold here "
                  f"({sum(theirs[1] for _, theirs in checks)} on the paper's own numbers). QA P_test within 5 points "
                  "of "
                  f"the paper's: {', '.join(close) or 'no setting'}; {sum(g < -5 for g in gap.values())} settings "
                  f"below it by more, {sum(g > 5 for g in gap.values())} above."]
    if len(rows) > 2:
        corr = q_probe_vs_qa(list(rows.values()))
        paper_q = [s for s in settings if s in PAPER_Q_PROBE]
        paper_corr = pearson([float(np.mean(PAPER_Q_PROBE[s][6:])) for s in paper_q],
                             [float(np.mean(PAPER_TABLE[s][0][2:])) for s in paper_q])
        lines += ["", f"Q-probe against QA (Result 5): the correlation of the Q-probe whole-value mean with the row's "
                      f"P_test mean on the same five attributes is {corr['rows'] or '–'} across the {len(rows)} rows "
                      f"and {corr['row_attributes'] or '–'} across row x attribute pairs (the paper's {len(paper_q)} "
                      f"Q-probed settings: {paper_corr or '–'})."]
    return "\n".join(lines) + "\n"

# ----------------------------------------------------------------------------------------------------------------------
# --- celebrity helps minority (Result 6)

# `celebrity` (Result 6, Figure 17): N people with one biography each, alone (P_train half of them)
# or beside N celebrities with multi5+permute biographies (P_train: the celebrities, P_test: all N). QA finetuning
# on P_train only, so the minority's QA is never seen: does the celebrities' augmentation teach the model to store
# the minority's facts extractably? The budget is counted per minority entry: each is seen the preset's passes, with
# celebrities or without. Alone rows reuse the full table's pretrained models when they are there.
CELEBRITY_ROWS = (("single+permute1", False), ("single+permute1", True), ("single", False), ("single", True))
PAPER_CELEBRITY = {"single+permute1": (4.4, 86.8), "single": (9.7, 63.2)}  # P_test mean: alone, with celebrities


def celebrity_passes(preset, setting, celebrities):
    """Passes over one-entry-a-person data of everyone that give each minority entry the preset's passes."""
    cfg, minority = bk.resolve_config(preset), bk.entries_per_person(bk.parse_aug(setting))
    entries = cfg.people * minority + celebrities * bk.entries_per_person(bk.parse_aug("multi5+permute"))
    return cfg.passes * entries / ((cfg.people + celebrities) * minority)


def celebrity_table(preset, seed, out, device, quiet=False, jobs=1):
    """CELEBRITY_ROWS -> OUT/celebrity.jsonl (rewritten whole): the minority's P_test QA with and without
    celebrities."""
    work, path, lines = os.path.join(out, "work", "full"), os.path.join(out, "celebrity.jsonl"), []
    people = bk.resolve_config(preset).people
    tasks = [dict(setting=s, method="qa_finetune", reuse=True, celebrities=people if c else 0,
                  train_overrides=dict(passes=celebrity_passes(preset, s, people if c else 0)))
             for s, c in CELEBRITY_ROWS]
    for task, row in bk.run_rows(tasks, preset, seed, device, work, jobs, quiet, "celebrity table"):
        celebrities = task["celebrities"]
        lines.append(table_line(row, preset, seed, celebrities=celebrities, passes=task["train_overrides"][
            "passes"], celebrity_aug="multi5+permute" if celebrities else None))
        order = [(t["setting"], t["celebrities"]) for t in tasks]
        rewrite_jsonl(path, sorted(lines, key=lambda r: order.index((r["setting"], r["celebrities"]))))
        print(f"{row['setting']:>16} {'with' if celebrities else 'without'} celebrities: memorised "
              f"{memorised_cell(row)}  P_train {row['qa_train']['mean']:5.1f}  minority P_test "
              f"{row['qa_test']['mean']:5.1f}  ({row['minutes']:.1f} min)", flush=True)


def celebrity_markdown(path):
    """The celebrity table, with the rows of other seeds (OUT/seed*/celebrity.jsonl) below seed 0's."""
    rows, others = all_seeds(path)
    lines = ["## Celebrity helps minority (Result 6, Figure 17)", "",
             f"From `{os.path.basename(path)}`; `python experiments/tables.py celebrity`"
             + ("; another seed's rows: `tables.py celebrity --seed N --out results/seedN`" if others else "")
             + ". Preset "
             f"`{rows[0]['preset']}`: N = {rows[0]['people']} minority people with one biography under the setting; "
             "alone, QA finetuning on half of them (P_train) and P_test the other half; with celebrities, N more "
             "people with multi5+permute biographies in the same pretraining, QA finetuning on the celebrities only "
             "and P_test all N minority people. P_test exact match in %; memorised: first-token accuracy on the "
             "biographies of P_train / P_test people (with celebrities: celebrities / minority). The budget is counted "
             "per minority entry (passes: over one-entry-a-person data of everyone). An alone row that reused the "
             "full table's pretrained model counts only its finetuning and evaluation minutes. " + provenance(rows),
             "",
             "| minority setting | celebrities | seed | passes | memorised | P_train | **minority P_test** | "
             + " | ".join(bk.ATTRIBUTES)
             + " | paper P_test | minutes |", "|---|---|---|---|---|---|---|" + "---|" * 8]
    for r in rows:
        paper = PAPER_CELEBRITY.get(r["setting"], (None, None))[bool(r["celebrities"])]
        lines.append(f"| {r['setting']} | {r['celebrities'] or 'none'} | {r['seed']} | {fmt(r.get('passes'))} | "
                     f"{memorised_cell(r)} | "
                     f"{r['qa_train']['mean']:.1f} | **{r['qa_test']['mean']:.1f}** | "
                     + " | ".join(fmt(r["qa_test"][a]) for a in bk.ATTRIBUTES)
                     + f" | {fmt(paper)} | {r['minutes']:.1f} |")
    lifts = []  # (setting, {seed: our lift}, the paper's lift)
    for setting, (alone, with_) in PAPER_CELEBRITY.items():
        by_seed = {}
        for r in rows:
            if r["setting"] == setting:
                by_seed.setdefault(r["seed"], {})[bool(r["celebrities"])] = r["qa_test"]["mean"]
        ours = {s: v[True] - v[False] for s, v in sorted(by_seed.items()) if len(v) == 2}
        if ours:
            lifts.append((setting, ours, with_ - alone))
    if lifts:
        shown = all(v >= 20 for _, ours, _ in lifts for v in ours.values())
        lines += ["", "Celebrities lift the minority by tens of points (20+ for each setting and seed): "
                  f"{'yes' if shown else 'NO'}; " + "; ".join(
                      f"{s} " + " / ".join(f"{v:+.1f}" for v in ours.values()) + " points"
                      + (f" on seeds {' / '.join(map(str, ours))}" if len(ours) > 1 else "")
                      + f" (paper {paper:+.1f})" for s, ours, paper in lifts) + "."]
    return "\n".join(lines) + "\n"

# ----------------------------------------------------------------------------------------------------------------------
# --- GBERT (Result 7)

# `gbert` (Result 7, Figure 9): the same transformer with full attention, pretrained by filling in
# masked words (--objective mlm), then QA-finetuned or mixed-trained, beside the GPT rows of the full table. The paper
# trains GBERT twice as long as the GPT (Appendix H): twice the preset's passes.
GBERT_ROWS = tuple((s, m) for s in ("single", "multi5+permute", "multi5+permute+fullname") for m in FULL_METHODS)
PAPER_GBERT = {("single", "qa_finetune"): 3.7, ("single", "mixed"): 30.1}  # P_test mean; best 39.7 (QA), 43.6 (mixed)


def gbert_table(preset, seed, out, device, quiet=False, jobs=1):
    """GBERT_ROWS -> OUT/gbert.jsonl (rewritten whole), one line a row."""
    work, path, lines = os.path.join(out, "work", "gbert"), os.path.join(out, "gbert.jsonl"), []
    overrides = dict(objective="mlm", passes=2 * bk.resolve_config(preset).passes)
    tasks = [dict(setting=s, method=m, train_overrides=overrides) for s, m in GBERT_ROWS]
    for _, row in bk.run_rows(tasks, preset, seed, device, work, jobs, quiet, "gbert table"):
        lines.append(table_line(row, preset, seed, **overrides))
        rewrite_jsonl(path, sorted(lines, key=lambda r: GBERT_ROWS.index((r["setting"], r["method"]))))
        print(f"GBERT {row['setting']:>24} {row['method']:<12} memorised {memorised_cell(row)}  P_test "
              f"{row['qa_test']['mean']:5.1f}  ({row['minutes']:.1f} min)", flush=True)


def gbert_markdown(path):
    rows = read_jsonl(path)
    full_path = os.path.join(os.path.dirname(path), "full_table.jsonl")
    gpt = {(r["setting"], r["method"]): r for r in jsonl_lines(full_path)
           if (r["preset"], r["seed"]) == (rows[0]["preset"], rows[0]["seed"])}
    lines = ["## GBERT: the bidirectional model (Result 7, Figure 9)", "",
             f"From `{os.path.basename(path)}`; `python experiments/tables.py gbert`. Preset "
             f"`{rows[0]['preset']}` (N = {rows[0]['people']}); the same transformer with full attention, pretrained "
             "by filling in masked words (`--objective mlm`: 15% of words; 80% <mask>, 10% random, 10% kept), then "
             "QA-finetuned (the question and one <mask> per answer token, correct only when all are filled in) or "
             "mixed-trained, for twice the GPT's passes unless the line says otherwise. The GPT rows are the full "
             "table's (same preset and seed). P_test exact match in %; memorised: P_train / P_test. Paper: "
             "only birth date and major are learned; single 3.7 (QA) and 30.1 (mixed); best 39.7 (QA), 43.6 "
             "(mixed). " + provenance(rows),
             "", "| setting | method | model | memorised | **P_test mean** | " + " | ".join(bk.ATTRIBUTES)
             + " | paper |",
             "|---|---|---|---|---|" + "---|" * 7]
    for r in rows:
        key = (r["setting"], r["method"])
        for name, row in (("GBERT", r), ("GPT", gpt.get(key))):
            if row:
                lines.append(f"| {r['setting']} | {r['method']} | {name} | {memorised_cell(row)} | "
                             f"**{row['qa_test']['mean']:.1f}** | "
                             + " | ".join(fmt(row["qa_test"][a]) for a in bk.ATTRIBUTES)
                             + f" | {fmt(PAPER_GBERT.get(key)) if name == 'GBERT' else ''} |")
    by_attr = {a: float(np.mean([r["qa_test"][a] for r in rows])) for a in bk.ATTRIBUTES}
    best = sorted(bk.ATTRIBUTES, key=by_attr.get, reverse=True)[:2]
    lines += ["", f"GBERT's P_test by attribute, mean of its {len(rows)} rows: "
              + ", ".join(f"{a} {by_attr[a]:.1f}" for a in bk.ATTRIBUTES) + f". Its two best: {' and '.join(best)} "
              f"(the paper: birth date and major): {'yes' if set(best) == {'birth_date', 'major'} else 'NO'}."]
    others = [a for a in bk.ATTRIBUTES if a not in ("birth_date", "major")]
    pairs = [(r, gpt[(r["setting"], r["method"])]) for r in rows if (r["setting"], r["method"]) in gpt
             and "permute" in r["setting"] and r["method"] == "qa_finetune"]
    if pairs:
        ahead = all(g["qa_test"][a] > r["qa_test"][a] for r, g in pairs for a in others)
        lines += ["", "On multi5+permute(+fullname) after QA finetuning, the GPT is above GBERT on each of the other "
                      f"four attributes: {'yes' if ahead else 'NO'}."]
    return "\n".join(lines) + "\n"

# `gbert-budget`: how many passes GBERT needs before it has memorised its biographies, as every row must (the paper
# trains its models until they have, Appendix C). Bio pretraining by masked words then QA finetuning, at passes
# a multiple of the GPT's 60: bioS single, and multi5+permute, where the GPT extracts 98.6% (Result 7 says GBERT does
# not). A line a run, kept when there (same setting, passes and seed).
GBERT_BUDGET = (("single", 120), ("single", 480), ("single", 960), ("multi5+permute", 960))


def gbert_budget(preset, seed, out, device, quiet=False, jobs=1):
    """GBERT_BUDGET's runs -> OUT/gbert_budget.jsonl, a line a run as it finishes (the file read again before each
    write, so two of these commands may run side by side)."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "gbert_budget.jsonl")
    key = lambda r: (r["setting"], r["passes"], r["seed"])  # noqa: E731
    done = {key(r) for r in jsonl_lines(path) if r["preset"] == preset}
    tasks = [dict(setting=s, method="qa_finetune", train_overrides=dict(objective="mlm", passes=p),
                  work=os.path.join(out, "work", "gbert-budget", f"{s}-passes{p}-seed{seed}"))
             for s, p in sorted(GBERT_BUDGET, key=lambda sp: -sp[1]) if (s, p, seed) not in done]  # longest first
    for task, row in bk.run_rows(tasks, preset, seed, device, None, jobs, quiet, "gbert budget"):
        kept = jsonl_lines(path)
        kept.append(table_line(row, preset, seed, **task["train_overrides"]))
        rewrite_jsonl(path, sorted(kept, key=lambda r: (r["setting"] != "single", r["passes"], r["seed"])))
        print(f"GBERT {row['setting']}, {task['train_overrides']['passes']} passes: memorised "
              f"{memorised_cell(row)}  P_test {row['qa_test']['mean']:5.1f}  ({row['minutes']:.1f} min)", flush=True)


def gbert_budget_markdown(path):
    rows = read_jsonl(path)
    lines = ["## GBERT: passes until its biographies are memorised", "",
             f"From `{os.path.basename(path)}`; `python experiments/tables.py gbert-budget` (`--seed 1` for the "
             f"second seed). Preset `{rows[0]['preset']}` (N = {rows[0]['people']}): GBERT pretrained by filling in "
             "masked words for the passes shown (over bioS-single-sized data; the GPT memorises in 60), then "
             "QA-finetuned on P_train. Memorised: the whole value masked, its first token filled in, P_train / "
             "P_test. QA exact match in %. " + provenance(rows), "",
             "| setting | passes | seed | memorised | P_train QA | **P_test mean** | " + " | ".join(bk.ATTRIBUTES)
             + " | minutes |", "|---|---|---|---|---|---|" + "---|" * 7]
    lines += [f"| {r['setting']} | {r['passes']} | {r['seed']} | {memorised_cell(r)} | {r['qa_train']['mean']:.1f} | "
              f"**{r['qa_test']['mean']:.1f}** | " + " | ".join(fmt(r["qa_test"][a]) for a in bk.ATTRIBUTES)
              + f" | {r['minutes']:.1f} |" for r in rows]
    lines += ["", "P_test biographies memorised by attribute (first token of the whole masked value, %):", "",
              "| setting | passes | seed | " + " | ".join(bk.ATTRIBUTES) + " |", "|---|---|---|" + "---|" * 6]
    lines += [f"| {r['setting']} | {r['passes']} | {r['seed']} | "
              + " | ".join(fmt(r["memorization_p_test"][a]) for a in bk.ATTRIBUTES) + " |" for r in rows]
    # A row can fall short of the rule on some attributes only: those it has memorised still test Result 7.
    held = []
    for r in rows:
        cells = [f"{a} {r['memorization_p_test'][a]:.1f} -> {r['qa_test'][a]:.1f}" for a in bk.ATTRIBUTES
                 if r["memorization_p_test"][a] >= bk.MEMORISED]
        if cells:
            held.append(f"{r['setting']} at {r['passes']} passes (seed {r['seed']}): " + ", ".join(cells))
    lines += ["", f"Attributes memorised on P_test biographies (at least {bk.MEMORISED:g}%), memorised -> P_test QA: "
              + ("; ".join(held) if held else "none") + "."]
    return "\n".join(lines) + "\n"

# ----------------------------------------------------------------------------------------------------------------------
# --- QA finetuning recipes (Figure 2)

# `finetune-grid` (Figure 2): bioS single pretrained once, then QA-finetuned with each recipe. In the paper only full
# finetuning fits P_train (98.9% first token) and its LoRA cells 21-41%, at about 8 epochs (50,000 steps of 48 over
# 300,000 questions); P_test stays near 10% with every recipe. The last two recipes give full finetuning more epochs,
# to see whether P_test stays low once P_train is fitted, as the paper's full-finetuning cell says.
FINETUNE_GRID = [dict(), dict(lora_qv=8), dict(lora_qv=16), dict(lora_qv=8, lora_emb=128),
                 dict(lora_qv=16, lora_emb=128), dict(passes=30), dict(passes=100)]
PAPER_FINETUNE = {(0, 0): (98.9, 7.5), (8, 0): (21.0, 7.8), (16, 0): (22.7, 7.9), (8, 128): (25.0, 9.4),
                  (16, 128): (27.3, 9.7)}  # Figure 2(a), 124M: (lora_qv, lora_emb) -> (P_train first token, P_test)


def recipe_name(overrides):
    if not overrides.get("lora_qv") and not overrides.get("lora_emb"):
        return "full finetuning"
    return f"LoRA q/v rank {overrides.get('lora_qv', 0)}" + (f" + embedding rank {overrides['lora_emb']}"
                                                             if overrides.get("lora_emb") else "")


def finetune_grid(preset, seed, out, device, quiet=False):
    """FINETUNE_GRID on bioS single -> OUT/finetune_grid.jsonl: P_train first-token and exact-match accuracy and
    P_test exact match per recipe, a line a recipe as it finishes; finished recipes are kept. Reuses reproduce's
    pretrained single model when it is there (another seed's: `--seed N --out results/seedN`, as reproduce)."""
    work, path = os.path.join(out, "work"), os.path.join(out, "finetune_grid.jsonl")
    order = [(recipe_name(o), bk.resolve_config(preset, "finetune", **o).passes) for o in FINETUNE_GRID]
    lines = [r for r in jsonl_lines(path) if r.get("preset") == preset]
    done = {(r["recipe"], r["passes"], r["seed"]) for r in lines}
    tasks = [o for o, k in zip(FINETUNE_GRID, order) if k + (seed,) not in done]
    rank = {k: i for i, k in enumerate(order)}  # the file in the grid's order; a recipe no longer in it sorts last
    if not tasks:
        return
    data_dir, data, run, _, _ = bk.pretrained_run("single", "qa_finetune", preset, seed, device, work, quiet,
                                                  reuse=True)
    dev, tok = bk.pick_device(device), bk.Tokenizer(data["vocab"])
    split = {s: [r for r in data["qa"] if r["split"] == s] for s in ("train", "test")}
    for overrides in tqdm(tasks, desc="finetune grid", disable=quiet):
        t0 = time.time()
        cfg = bk.resolve_config(preset, "finetune", seed=seed, device=device, **overrides)
        model, info = bk.finetune(cfg, run, data_dir, os.path.join(work, "single-grid"), force=True, quiet=True)
        qa_train, qa_train_first_token = bk.qa_accuracies(model, tok, split["train"], dev)
        row = dict(recipe=recipe_name(overrides), lora_qv=cfg.lora_qv, lora_emb=cfg.lora_emb, lr=cfg.lr,
                   passes=cfg.passes, steps=info["steps"], qa_train_first_token=qa_train_first_token,
                   qa_train=qa_train, qa_test=bk.qa_accuracies(model, tok, split["test"], dev)[0],
                   minutes=round((time.time() - t0) / 60, 2), hardware=bk.hardware_name(dev))
        lines.append(table_line(row, preset, seed))
        rewrite_jsonl(path, sorted(lines, key=lambda r: (rank.get((r["recipe"], r["passes"]), len(order)), r["seed"])))
        print(f"{row['recipe']:>40}, {row['passes']:g} epochs: P_train first token "
              f"{row['qa_train_first_token']['mean']:.1f}, exact {row['qa_train']['mean']:.1f}; P_test "
              f"{row['qa_test']['mean']:.1f}", flush=True)


def finetune_grid_markdown(path):
    """The Figure 2 grid: a line a recipe and number of epochs, each seed's number in a cell, the paper's beside."""
    rows, _ = all_seeds(path)
    lines = ["## QA finetuning recipes on bioS single (paper Figure 2)", "",
             f"From `{os.path.basename(path)}`; `python experiments/tables.py finetune-grid` (another seed: `--seed N "
             "--out results/seedN`, beside that seed's reproduce). One pretrained bioS single model a "
             "seed, QA-finetuned on P_train with each recipe: the preset's optimiser (lr 3e-4 was best for LoRA too on "
             "held-out P_train people: notes below) and 10 epochs unless the line says more; LoRA freezes the base "
             "and merges the adapters on save. Accuracy in %, mean of the six attributes, each seed's number then "
             "their mean. Paper (Figure 2(a), GPT-2 124M, about 8 epochs of its 50,000 people's questions): only full "
             "finetuning fits P_train, 98.9% (first token), its LoRA cells 21.0-27.3% (up to 40.7% at higher ranks "
             "than these); P_test 7.5-10.5% with every recipe. " + provenance(rows), "",
             "| recipe | lr | epochs | steps | seeds | P_train first token | P_train exact | **P_test exact** | "
             "paper: P_train first token, P_test | minutes |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups = grouped(rows, lambda r: (r["recipe"], r["lr"], r["passes"]))
    for (recipe, lr, epochs), runs in groups.items():
        paper = PAPER_FINETUNE.get((runs[0]["lora_qv"], runs[0]["lora_emb"]), (None, None))
        lines.append(f"| {recipe} | {lr:g} | {epochs:g} | {seed_cells(runs, lambda r: str(r['steps']))} | "
                     f"{seed_cells(runs, lambda r: str(r['seed']))} | {qa_cell(runs, 'qa_train_first_token')} | "
                     f"{qa_cell(runs, 'qa_train')} | **{qa_cell(runs)}** | {fmt(paper[0])}, {fmt(paper[1])} | "
                     f"{seed_cells(runs, lambda r: fmt(r['minutes']))} |")
    test = [qa_mean(runs) for runs in groups.values()]
    full = {epochs: qa_mean(runs, "qa_train_first_token") for (recipe, _, epochs), runs in groups.items()
            if recipe == "full finetuning"}
    fitted = [e for e, v in sorted(full.items()) if v >= 95]
    lines += ["", f"P_test stays at {min(test):.1f}-{max(test):.1f}% (seeds' mean) whatever the recipe, as in the "
                  "paper. Full finetuning's P_train first-token accuracy against epochs: "
              + ", ".join(f"{e:g} epochs {v:.1f}" for e, v in sorted(full.items()))
              + (f"; it fits P_train (at least 95%) from {fitted[0]:g} epochs, as the paper's 98.9%." if fitted else
                 "; it does not reach the paper's 98.9% at any number of epochs here.")]
    return "\n".join(lines) + "\n"

# ----------------------------------------------------------------------------------------------------------------------
# --- mixed training: the QA ratio (Figure 10) and larger budgets

# `qa-ratio` (Figure 10): mixed training on bioS single at each QA ratio, at the preset, the biographies getting the
# preset's passes at every ratio (the steps scaled by 1 / (1 - QAr)). With the biography passes fixed, a higher ratio
# also shows the QA more often (QA windows per biography window: QAr / (1 - QAr), 0.11 at 0.1, 4 at 0.8); the last
# points keep QAr 0.4 and 0.6 but give them the biography passes at which their QA is seen as often as at 0.8
# (360 x 0.4 / 0.6 = 160 x 0.6 / 0.4 = 60 x 0.8 / 0.2), to tell the share from the repetition.
QA_RATIO_SWEEP = [dict(qa_ratio=r) for r in (0.1, 0.2, 0.4, 0.6, 0.8)] + [
    dict(qa_ratio=0.4, passes=360), dict(qa_ratio=0.6, passes=160)]
PAPER_QA_RATIO = {0.1: 24.5, 0.2: 53.6, 0.4: 77.5, 0.6: 87.1, 0.8: 85.7}  # Figure 10, P_test mean

# `headline-choice`: the configurations of the headline's mixed row that fit `make reproduce`'s 20 minutes on 2 cores
# (the same steps: people x passes held), each trained with 20% of its P_train people's QA held out, which is what
# the choice is made on; P_test is shown, never chosen on. Run with --seed 0 and --seed 1. The recipe candidates keep
# the preset's people and steps and change one thing: weight decay, learning rate (the earlier sweep's best recipe
# changes), or a larger QA share with the biographies' passes cut to keep the steps (45 / 0.15 = 60 / 0.2).
HEADLINE_CANDIDATES = [dict(people=n, passes=p, holdout=0.2) for n, p in ((1000, 60), (500, 120), (1500, 40))] + [
    dict(people=1000, passes=60, holdout=0.2, weight_decay=0.5), dict(people=1000, passes=60, holdout=0.2, lr=6e-3),
    dict(people=1000, passes=45, holdout=0.2, qa_ratio=0.85)]

# `packing`: whole-entry packing (the default) against windows cut anywhere (stream), on the headline's rows: mixed
# training and bio pretraining + QA finetuning, seeds 0 and 1, the cpu preset.
PACKING_ROWS = [(s, m, p, seed) for s, m in (("single", "mixed"), ("single", "qa_finetune"),
                                              ("multi5+permute+fullname", "qa_finetune"),
                                              ("multi5+permute+fullname", "mixed"))
                for p in ("stream", "entries") for seed in (0, 1)]


def packing_table(preset, seed, out, device, quiet=False, jobs=1):
    """PACKING_ROWS -> OUT/packing.jsonl, a line a run as it finishes; runs already there are kept."""
    path = os.path.join(out, "packing.jsonl")
    kept = jsonl_lines(path)
    done = {(r["setting"], r["method"], r["packing"], r["seed"]) for r in kept}
    tasks = [dict(setting=s, method=m, seed=sd, train_overrides=dict(packing=p),
                  work=os.path.join(out, "work", "packing", f"{p}-seed{sd}")) for s, m, p, sd in PACKING_ROWS
             if (s, m, p, sd) not in done]
    for task, row in bk.run_rows(tasks, preset, seed, device, None, jobs, quiet, "packing"):
        kept.append(table_line(row, preset, task["seed"], packing=task["train_overrides"]["packing"]))
        rewrite_jsonl(path, sorted(kept, key=lambda r: PACKING_ROWS.index(
            (r["setting"], r["method"], r["packing"], r["seed"]))))
        print(f"{row['setting']:>24} {row['method']:<12} {task['train_overrides']['packing']:<8} seed {task['seed']}: "
              f"memorised {memorised_cell(row)}, P_test {row['qa_test']['mean']:.1f}", flush=True)


def packing_markdown(path):
    rows = read_jsonl(path)
    lines = ["## Packing: whole entries against windows cut anywhere", "",
             f"From `{os.path.basename(path)}`; `python experiments/tables.py packing`. The cpu preset (N = 1,000, "
             "context 128, 60 biography passes; mixed: QAr 0.8, the steps scaled so the biographies get those "
             "passes). `stream` cuts windows anywhere, so a later sentence can land in another window than its "
             "person's name (44% of entries are cut at 128 tokens); `entries` packs whole entries only, padding the "
             "rest of the window. P_test QA mean in %, each seed. " + provenance(rows), "",
             "| setting | method | packing | steps | memorised P_train / P_test | P_train QA | **P_test QA** | paper |",
             "|---|---|---|---|---|---|---|---|"]
    for (setting, method, packing), rs in grouped(rows, lambda r: (r["setting"], r["method"], r["packing"])).items():
        paper = PAPER_TABLE[setting][method == "mixed"][0]
        lines.append(f"| {setting} | {method} | {packing} | {seed_cells(rs, lambda r: str(r['pretrain_steps']))} | "
                     f"{seed_cells(rs, memorised_cell)} | {seed_cells(rs, lambda r: fmt(r['qa_train']['mean']))} | "
                     f"**{qa_cell(rs)}** | {fmt(paper)} |")
    return "\n".join(lines) + "\n"


# `scale`: where mixed training on bioS single starts to work. Each point a set of overrides of the cpu preset, run
# for seeds 0 and 1; biographies get 60 passes (budget "bio") unless the point says, QAr 0.8. `where` says which
# machine it is sized for: the gpu points ran (or wait to run) 12 side by side on a GPU; the cpu points take 20-90
# minutes a seed on one thread. The cpu point at N = 1,000 is the headline's mixed row (the QA-ratio sweep's QAr 0.8
# runs are the same configuration): the GPU's bf16 runs differ from the CPU's, so passes are compared on one machine.
# Then the headline's row with the weight decay that `headline-choice` ranked first on held-out people, and depth
# (2, 4, 6, 8 layers) at N = 500 with whole entries, all on one CPU (the gpu depth points cut windows anywhere).
SCALE_POINTS = [dict(people=n, packing=p, **kw, where=w) for n, p, kw, w in [
    (500, "stream", {}, "gpu"), (1000, "stream", {}, "gpu"), (1000, "entries", {}, "gpu"),
    (500, "stream", dict(n_layer=4), "gpu"), (500, "stream", dict(n_embd=256), "gpu"),
    (500, "entries", {}, "gpu"), (500, "stream", dict(block_size=512, batch_size=2), "gpu"),
    (500, "stream", dict(n_layer=4, n_embd=256), "gpu"), (500, "stream", dict(n_layer=8), "gpu"),
    (1000, "stream", dict(n_layer=4), "gpu"), (1000, "stream", dict(n_embd=256), "gpu"),
    (1000, "entries", dict(n_layer=4), "gpu"),
    (2000, "entries", dict(n_embd=256), "gpu"), (8000, "entries", {}, "gpu"),
    (1000, "entries", dict(n_embd=256), "cpu"), (2000, "entries", {}, "cpu"), (4000, "entries", {}, "cpu"),
    (1000, "entries", {}, "cpu"), (1000, "entries", dict(passes=120), "cpu"),
    (500, "entries", dict(passes=120), "cpu"), (1000, "entries", dict(weight_decay=0.5), "cpu"),
    (500, "entries", {}, "cpu"), (500, "entries", dict(n_layer=4), "cpu"), (500, "entries", dict(n_layer=6), "cpu"),
    (500, "entries", dict(n_layer=8), "cpu"), (500, "entries", dict(n_embd=256), "cpu"),
    (500, "entries", dict(n_embd=192), "cpu"), (500, "entries", dict(n_embd=64), "cpu")]]
SCALE_SEEDS = (0, 1)

# The earlier mixed-training sweep (`mixed-sweep`): bioS single, mixed training, its passes counting every window
# (budget "all"), each line a set of overrides of the cpu preset; one seed. Passes and width were the levers.
MIXED_SWEEP = [dict(people=n, passes=p, budget="all", **kw) for n, p, kw in [
    (500, 200, {}), (500, 400, {}), (1000, 100, {}), (1000, 200, {}), (1000, 400, {}), (2000, 200, {}),
    (4000, 200, {}), (8000, 100, {}), (1000, 100, dict(n_layer=1)), (1000, 200, dict(n_layer=4)),
    (2000, 200, dict(n_layer=4)), (1000, 100, dict(n_embd=192)), (1000, 100, dict(n_embd=256, lr=2e-3)),
    (2000, 200, dict(n_embd=256, lr=2e-3)), (1000, 100, dict(n_head=2)), (1000, 100, dict(n_head=8)),
    (1000, 100, dict(rotary_frac=1.0)), (1000, 100, dict(lr=6e-3)), (1000, 100, dict(lr=1e-2, warmup_steps=100)),
    (2000, 200, dict(lr=1e-3)), (1000, 100, dict(weight_decay=0.0)), (1000, 100, dict(weight_decay=0.5)),
    (1000, 100, dict(batch_size=4, lr=2e-3)), (1000, 100, dict(qa_ratio=0.5))]]
SWEEP_FIELDS = ("people", "n_layer", "n_head", "n_embd", "passes", "lr", "batch_size", "block_size", "weight_decay",
                "qa_ratio", "rotary_frac", "budget", "packing")


def mixed_sweep(preset, seed, out, device, quiet=False, sweep=None, name="mixed_sweep.jsonl", resume=False, jobs=1):
    """Mixed training on bioS single for each set of overrides (MIXED_SWEEP by default), one JSON line a run in
    OUT/NAME with its configuration, seed, memorisation and QA, appended to what is there; with resume, a run whose
    line (same overrides and seed) is there already is not run again, so a killed sweep continues."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, name)
    kept = jsonl_lines(path)
    there = lambda o: any((r["preset"], r["seed"]) == (preset, seed)  # noqa: E731
                          and all(r["config"].get(k) == v for k, v in o.items()) for r in kept)
    sweep = MIXED_SWEEP if sweep is None else sweep
    tasks = [dict(setting="single", method="mixed", train_overrides=o, work=os.path.join(out, "work", f"sweep-{i}"))
             for i, o in enumerate(sweep) if not (resume and there(o))]
    for task, row in bk.run_rows(tasks, preset, seed, device, None, jobs, quiet, "mixed sweep"):
        kept.append(sweep_line(row, task["train_overrides"], preset, seed, device))
        rewrite_jsonl(path, kept)
        print(f"mixed {json.dumps(task['train_overrides'])}: memorised {memorised_cell(row)}, P_test "
              f"{row['qa_test']['mean']:.1f} ({row['minutes']:.1f} min)", flush=True)


def pretraining_config(preset, method, seed, device, overrides):
    """The configuration bk.pretrained_run trains for METHOD (bio pretraining for qa_finetune, mixed training for
    mixed), so a result line records the run as it was trained."""
    return bk.resolve_config(preset, "train", seed=seed, device=device,
                             mode="bio" if method == "qa_finetune" else "mixed", **overrides)


def sweep_line(row, overrides, preset, seed, device):
    cfg = pretraining_config(preset, "mixed", seed, device, overrides)
    return dict({k: getattr(cfg, k) for k in SWEEP_FIELDS}, steps=row["pretrain_steps"],
                **{k: row[k] for k in ("bio_memorization", "memorization_p_train", "memorization_p_test",
                                       "qa_train", "qa_test", "minutes", "hardware", "qa_holdout") if k in row},
                seed=seed, preset=preset, config=dataclasses.asdict(cfg), bioknow=bk.VERSION, commit=git_commit())


def scale_study(preset, seed, out, device, quiet=False, jobs=1):
    """SCALE_POINTS sized for this device (cpu, or gpu for CUDA) x SCALE_SEEDS (`seed` is not used) ->
    OUT/mixed_scale.jsonl, a line a run as it finishes; runs already there (same overrides and seed) are kept. Each
    point's seeds run one after the other, points in their order."""
    os.makedirs(out, exist_ok=True)
    path, dev = os.path.join(out, "mixed_scale.jsonl"), bk.pick_device(device)
    kept = jsonl_lines(path)
    done = {(json.dumps(r["overrides"], sort_keys=True), r["seed"], r["where"]) for r in kept}
    where = "gpu" if bk.device_type(dev) == "cuda" else "cpu"
    tasks = []
    for point in SCALE_POINTS:
        overrides = {k: v for k, v in point.items() if k != "where"}
        key = json.dumps(overrides, sort_keys=True)
        name = "-".join(f"{k}{v}" for k, v in sorted(overrides.items()))
        tasks += [dict(setting="single", method="mixed", train_overrides=overrides, seed=s,
                       work=os.path.join(out, "work", "scale", f"{name}-seed{s}"))
                  for s in SCALE_SEEDS if point["where"] == where and (key, s, where) not in done]
    for task, row in bk.run_rows(tasks, preset, seed, device, None, jobs, quiet, "scale"):
        overrides = task["train_overrides"]
        kept.append(dict(sweep_line(row, overrides, preset, task["seed"], device),
                         overrides=overrides, where=where))
        rewrite_jsonl(path, kept)
        print(f"scale {json.dumps(overrides)} seed {task['seed']}: memorised {memorised_cell(row)}, P_test "
              f"{row['qa_test']['mean']:.1f} ({row['minutes']:.1f} min)", flush=True)


def sweep_columns(r):
    """The shape of a sweep line: people, layers x width, context x batch, lr / wd, packing and the mixed budget."""
    return (f"| {r['people']} | {r['n_layer']}x{r['n_embd']} | {r.get('block_size', 128)}x{r['batch_size']} | "
            f"{r['lr']:g} / {r['weight_decay']:g} | {r.get('packing', 'stream')} | {r['passes']:g} "
            f"{r.get('budget', 'all')} |")


def scale_markdown(path):
    rows = read_jsonl(path)
    groups = grouped(sorted(rows, key=lambda r: r["seed"]), lambda r: (json.dumps(r["overrides"], sort_keys=True),
                                                                     r["where"]))
    lines = ["## Mixed training: where it starts to work", "",
             f"From `{os.path.basename(path)}`; `python experiments/tables.py scale` (`--device cuda` for the larger "
             "points). bioS single, mixed training from scratch, QAr 0.8, the biographies getting the passes of "
             "the passes column (the steps scaled by 1 / (1 - QAr)), the cpu preset otherwise; "
             "P_test QA mean in %, each seed's number, then the mean. Paper: 86.6% (GPT-2 124M, N = 100,000). "
             + provenance(rows), "",
             "| people | layers x width | context x batch | lr / wd | packing | passes (budget) | seeds | memorised "
             "P_train / P_test | P_train QA | **P_test QA** | paper | minutes | hardware |", "|" + "---|" * 13]
    shape = ("people", "n_layer", "n_embd", "block_size", "packing", "passes")
    for key, rs in sorted(groups.items(), key=lambda kv: [str(kv[1][0].get(k)).zfill(6) for k in shape]):
        lines.append(sweep_columns(rs[0]) + f" {seed_cells(rs, lambda r: str(r['seed']))} | "
                     f"{seed_cells(rs, memorised_cell)} | {seed_cells(rs, lambda r: fmt(r['qa_train']['mean']))} | "
                     f"**{qa_cell(rs)}** | 86.6 | {sum(r['minutes'] for r in rs):.1f} | {rs[0]['hardware']} |")
    best = max(groups.values(), key=qa_mean)
    machine = lambda rs: rs[0]["hardware"].split(",")[0]  # noqa: E731  "cpu (its model)" or the card's name
    lines += ["", f"Best: {qa_mean(best):.1f}% (" + sweep_columns(best[0]).strip("| ").replace(" | ", ", ")
              + "), against the paper's 86.6%."]
    curve = sorted(((rs[0]["people"], rs) for rs in groups.values()  # the cpu preset but for N, whole entries
                    if set(rs[0]["overrides"]) == {"people", "packing"} and rs[0]["packing"] == "entries"),
                   key=lambda c: (c[0], c[1][0]["where"]))
    if len(curve) > 1:
        lines += ["", "P_test against people (2x128, whole entries, seeds' mean): " + ", ".join(
            f"{n:,} {mean_marked(rs)} ({machine(rs)})" for n, rs in curve) + "; the paper: 86.6 at 100,000."]
    for field, unit, title in (("passes", "passes", "biography passes (2x128, whole entries, seeds' mean; the paper "
                                                     "trains ~108)"),
                               ("n_layer", "layers", "depth (width 128, whole entries, 60 passes, seeds' mean; the "
                                                     "paper has 12)"),
                               ("n_embd", "wide", "width (2 layers, whole entries, 60 passes, seeds' mean; the "
                                                  "paper has 768)")):
        curves = curves_along(groups, field, unit, machine)
        lines += ["", f"P_test against {title}: " + "; ".join(curves) + "."] if curves else []
    shown = lambda r: meets_threshold(dict(r, setting="single", method="mixed"))  # noqa: E731
    points = lambda gs: "; ".join(sweep_columns(rs[0]).strip("| ").replace(" | ", ", ")  # noqa: E731
                                  + f" ({qa_cell(rs)}, {machine(rs)})" for rs in gs)
    every = [rs for rs in groups.values() if all(map(shown, rs))]
    some = [rs for rs in groups.values() if any(map(shown, rs)) and not all(map(shown, rs))]
    lines += ["", f"The headline's target for mixed training ({THRESHOLDS['single', 'mixed']}, on every seed): "
              + (f"reached at {points(every)}" if every else "reached at no point on every seed")
              + (f"; on some seeds at {points(some)}" if some else "") + "." + probed_mixed(path, shown, machine)]
    return "\n".join(lines) + "\n"


def probed_mixed(path, shown, machine):
    """The bioS single mixed runs `probe-scale` trains (beside PATH) with the same recipe, where they meet the target
    on every seed (a seed repeats a run bitwise only on one CPU model, so the two files may disagree)."""
    probed = os.path.join(os.path.dirname(path), "probe_scale.jsonl")
    rows = [r for r in read_jsonl(probed) if (r["setting"], r["method"]) == ("single", "mixed")] \
        if os.path.isfile(probed) else []
    groups = grouped(sorted(rows, key=lambda r: r["seed"]),
                     lambda r: probe_scale_key(r["setting"], r["method"], r["overrides"]))
    met = [f"N = {rs[0]['config']['people']:,}, {rs[0]['n_layer']}x{rs[0]['n_embd']} ({qa_cell(rs)}, {machine(rs)})"
           for rs in groups.values() if len(rs) > 1 and all(map(shown, rs))]
    return f" The same recipe in `probe_scale.jsonl` reaches it on every seed at {'; '.join(met)}." if met else ""


def curves_along(groups, field, unit, machine):
    """A curve a population: the seeds' mean P_test against FIELD (passes, n_layer or n_embd), the cpu preset
    otherwise and whole entries; shown where the field takes more than one value."""
    kept = sorted((rs for rs in groups.values() if rs[0]["packing"] == "entries"
                   and set(rs[0]["overrides"]) <= {"people", "packing", field}),
                  key=lambda rs: (rs[0]["people"], rs[0][field]))
    return [f"N = {n:,}: " + ", ".join(f"{rs[0][field]:g} {unit} {mean_marked(rs)} ({machine(rs)})" for rs in runs)
            for n, runs in grouped(kept, lambda rs: rs[0]["people"]).items()
            if len({rs[0][field] for rs in runs}) > 1]


def mean_marked(runs):
    """The seeds' mean P_test, marked where a seed's biographies are not memorised."""
    return f"{qa_mean(runs):.1f}" + ("" if all(map(is_memorised, runs)) else " (not memorised)")


def mixed_sweep_markdown(path):
    """A table of mixed-training runs (one JSON object a line, as `reproduce_row` returns plus the run's shape)."""
    rows = read_jsonl(path)
    lines = ["## Mixed training: the earlier sweep", "",
             f"From `{os.path.basename(path)}` (raw numbers, one run a line, one seed). bioS single, mixed training "
             "from scratch, passes counting every window (budget `all`: at QAr 0.8 the biographies get a fifth of "
             "them); P_test QA mean in %. Regenerate with `python experiments/tables.py mixed-sweep` (the "
             "`MIXED_SWEEP` list: overrides of the `cpu` preset), then `tables.py report`. Hardware and minutes as "
             "recorded in the file; lines without a `bioknow` version ran on 0.1.0 (another data order, the tanh "
             "GELU, an unpadded embedding): comparable in trend, not to the digit.", "",
             "| people | layers x width | heads | rotary | passes | steps | lr | wd | QAr | batch | memorised | "
             "P_train | P_test | minutes | hardware |", "|" + "---|" * 15]
    for r in rows:
        lines.append(f"| {r['people']} | {r['n_layer']}x{r['n_embd']} | {r['n_head']} | {r['rotary_frac']:g} | "
                     f"{r['passes']:g} | {r['steps']} | "
                     f"{r['lr']:g} | {r['weight_decay']:g} | {r['qa_ratio']:g} | {r['batch_size']} | "
                     f"{memorised_cell(r)} | {r['qa_train']['mean']:.1f} | **{r['qa_test']['mean']:.1f}** | "
                     f"{r['minutes']:.1f} | {r['hardware']} |")
    best = max(rows, key=lambda r: r["qa_test"]["mean"])
    lines += ["", f"Best P_test {best['qa_test']['mean']:.1f}% (N = {best['people']}, {best['passes']:g} passes, "
                  f"{best['n_layer']}x{best['n_embd']}), against the paper's 86.6% for mixed training on bioS single: "
                  "P_test rises with passes and width; at this budget rule no run reaches the paper's level."]
    return "\n".join(lines) + "\n"


def headline_choice_markdown(path):
    rows = read_jsonl(path)
    recipe = lambda r: (r["people"], r["passes"], r["qa_ratio"], r["lr"], r["weight_decay"])  # noqa: E731
    groups = grouped(sorted(rows, key=lambda r: r["seed"]), recipe)
    lines = ["## Choosing the headline's mixed row on held-out P_train people", "",
             f"From `{os.path.basename(path)}`; `python experiments/tables.py headline-choice` (and `--seed 1`). bioS "
             "single, mixed training, the cpu preset but for the columns' people, biography passes, QA ratio, "
             "learning rate and weight decay, chosen so that every candidate takes the headline's steps and fits "
             "`make reproduce`; 20% of the P_train people's QA held out of training (so P_test lies below the "
             "headline's, which trains on all of it). The choice is made on the held-out people's QA; P_test is "
             "shown beside it, not used. Each cell a seed, in seed order. " + provenance(rows), "",
             "| people | passes | QAr | lr | wd | seeds | memorised P_train / P_test | **held-out P_train QA** | "
             "against the preset, seed by seed | P_test QA | paper P_test | minutes |", "|" + "---|" * 12]
    preset = recipe(dataclasses.asdict(bk.resolve_config(rows[0]["preset"])))
    base = {r["seed"]: r["qa_holdout"]["mean"] for r in groups.get(preset, [])}
    gain = lambda rs: [r["qa_holdout"]["mean"] - base[r["seed"]] for r in rs if r["seed"] in base]  # noqa: E731
    signed = lambda ds: ", ".join(f"{d:+.1f}" for d in ds)  # noqa: E731
    for key, rs in groups.items():
        lines.append("| " + " | ".join([str(key[0])] + [f"{v:g}" for v in key[1:]]) + " | "
                     f"{seed_cells(rs, lambda r: str(r['seed']))} | {seed_cells(rs, memorised_cell)} | "
                     f"**{qa_cell(rs, 'qa_holdout')}** | {'the preset' if key == preset else signed(gain(rs))} | "
                     f"{qa_cell(rs)} | 86.6 | {seed_cells(rs, lambda r: format(r['minutes'], '.1f'))} |")
    held = lambda rs: qa_mean(rs, "qa_holdout")  # noqa: E731
    ranked = sorted(groups.items(), key=lambda kv: -held(kv[1]))
    name = lambda k: f"N = {k[0]:,} at {k[1]:g} passes, QAr {k[2]:g}, lr {k[3]:g}, wd {k[4]:g}"  # noqa: E731
    top, best = ranked[0]
    lines += ["", f"Highest on held-out P_train people: {name(top)} ({held(best):.1f}% over "
                  f"{len(best)} seed{'s' if len(best) > 1 else ''})."]
    spread = max(np.ptp([r["qa_holdout"]["mean"] for r in rs]) for _, rs in ranked)
    if len(ranked) > 1 and len(best) > 1 and held(best) - held(ranked[1][1]) < spread:
        lines[-1] += (f" The next, {name(ranked[1][0])}, gives {held(ranked[1][1]):.1f}%: closer than the seeds "
                      f"of one candidate lie apart (up to {spread:.1f} points), so no candidate is shown to be "
                      "better.")
    if top != preset and len(gain(best)) > 1 and min(gain(best)) > 0:
        lines[-1] += (f" Seed by seed (the same data and initialisation), it is above the preset's recipe on every "
                      f"seed ({signed(gain(best))} points).")
    return "\n".join(lines) + "\n"


def qa_exposure(row):
    """How often a mixed run shows its QA, in passes over the biographies' windows: passes x QAr / (1 - QAr)."""
    return row["passes"] * row["qa_ratio"] / (1 - row["qa_ratio"])


def qa_ratio_markdown(path):
    rows = read_jsonl(path)
    lines = ["## Mixed training and the QA ratio (Figure 10)", "",
             f"From `{os.path.basename(path)}`; `python experiments/tables.py qa-ratio` (add `--seed 1` for the "
             "second seed). bioS single, mixed training from scratch at the preset, QAr = the probability that a "
             "window is QA; the biographies get the passes of the column at every ratio unless the budget column "
             "says `all` (passes counting every window); QA seen: passes x QAr / (1 - QAr), how often the QA is "
             "shown against the biographies' windows. Each cell a seed, in seed order. Accuracy in %. "
             + provenance(rows), "",
             "| QAr | budget | passes | QA seen | steps | memorised | P_train | **P_test** | paper P_test | minutes |",
             "|" + "---|" * 10]
    runs = grouped(sorted(rows, key=lambda r: (r["qa_ratio"], r["passes"], r["seed"])),
                   lambda r: (r["qa_ratio"], r["passes"]))
    counts = [r["passes"] for r in rows]
    fixed = max(set(counts), key=counts.count)  # the preset's passes: the curve the paper's Figure 10 draws
    for (q, passes), rs in runs.items():
        lines.append(f"| {q:g} | {rs[0].get('budget', 'all')} | {passes:g} | {qa_exposure(rs[0]):.0f} | "
                     f"{seed_cells(rs, lambda r: str(r['steps']))} | "
                     f"{seed_cells(rs, memorised_cell)} | {seed_cells(rs, lambda r: fmt(r['qa_train']['mean']))} | "
                     f"**{qa_cell(rs)}** | {fmt(PAPER_QA_RATIO.get(q) if passes == fixed else None)} | "
                     f"{seed_cells(rs, lambda r: format(r['minutes'], '.1f'))} |")
    ours = [(q, qa_mean(rs)) for (q, passes), rs in runs.items() if passes == fixed]
    seeds = sorted({r["seed"] for r in rows})
    below = all(v < PAPER_QA_RATIO.get(q, 101) for q, v in ours)
    lines += ["", f"P_test from the lowest to the highest ratio at {fixed:g} passes ("
              f"{'mean over seeds ' if len(seeds) > 1 else 'seed '}{', '.join(map(str, seeds))}): {ours[0][1]:.1f} "
              f"-> {ours[-1][1]:.1f}% ({'rises' if ours[-1][1] > ours[0][1] + 5 else 'does not rise'}; the paper "
              f"24.5 -> 85.7, most of it by 0.4); {'below' if below else 'not below'} the paper at every ratio."
              + (" One seed a ratio: seeds of the same run differ by up to 20 points at this size (the scale table)."
                 if len(seeds) < 2 else "")]
    cells = lambda ks: "; ".join(f"QAr {q:g} at {p:g} passes {qa_cell(runs[(q, p)])}"  # noqa: E731
                                 for q, p in sorted(ks))
    matched = grouped([k for k in runs if k[1] != fixed], lambda k: qa_exposure(runs[k][0]))
    for seen, keys in matched.items():
        ref = [k for k in runs if k[1] == fixed and abs(qa_exposure(runs[k][0]) - seen) < 1e-6]
        if ref:
            lines += ["", f"The share or the repetition, the QA seen as often ({seen:.0f}) at every ratio: "
                          f"{cells(keys + ref)}; at {fixed:g} passes: "
                          f"{cells([(q, fixed) for q, _ in keys if (q, fixed) in runs])}."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------------
# --- the probe recipe (Appendix E): accuracy against training steps, on held-out P_train people

# `probe-curve`: on the headline's pretrained models (WORK = OUT/work, from `bioknow.py reproduce`), Q-probes (both
# read positions) and P-probes (their cheaper first phase only: 0 joint steps) with both read-outs, scored on 20% of
# P_train people held out from probe training: the curve a recipe is chosen from; P_test is not used.
PROBE_CURVE = dict(models=("single", "multi5+permute+fullname"), q_steps=(0, 100, 400, 1600), p_steps=(0,),
                   readouts=("linear", "candidates"), q_reads=("name", "end"))


def probe_curve(preset, seed, out, device, quiet=False, jobs=1):
    """PROBE_CURVE -> OUT/probe_curve.jsonl (rewritten whole): held-out P_train accuracy of each probe by steps."""
    work, path, lines = os.path.join(out, "work"), os.path.join(out, "probe_curve.jsonl"), []
    runs = [(s, os.path.join(work, f"{s}-qa_finetune"), os.path.join(work, f"data-{s}")) for s in PROBE_CURVE["models"]]
    missing = [r for _, r, _ in runs if not os.path.isfile(os.path.join(r, "model.pt"))]
    if missing:
        raise bk.UserError(f"no pretrained model at {missing[0]} (run `python bioknow.py reproduce --out {out}` first)")
    grid = [(s, r, d, "q", steps, readout, read) for s, r, d in runs for readout in PROBE_CURVE["readouts"]
            for read in PROBE_CURVE["q_reads"] for steps in PROBE_CURVE["q_steps"]]
    grid += [(s, r, d, "p", steps, readout, "name") for s, r, d in runs for readout in PROBE_CURVE["readouts"]
             for steps in PROBE_CURVE["p_steps"]]
    for setting, run, data_dir, kind, steps, readout, read in tqdm(grid, desc="probe curve", disable=quiet):
        t0 = time.time()
        result = bk.probe(run, data_dir, (kind,), steps, device, seed, True, q_read=read, readout=readout,
                          holdout=0.2)
        lines.append(dict(setting=setting, probe=kind, steps=steps, readout=readout, q_read=read,
                          result=result[f"{kind}_probe"], minutes=round((time.time() - t0) / 60, 2), preset=preset,
                          seed=seed, hardware=bk.hardware_name(bk.pick_device(device)), bioknow=bk.VERSION,
                          commit=git_commit()))
        rewrite_jsonl(path, lines)


def probe_means(result, kind):
    """A probe's first-token and whole-value means over attributes (P-probe: at each attribute's best position)."""
    pick = (lambda v: v) if kind == "q" else (lambda row: max(row))
    targets = [(t, a) for t, attrs in bk.PROBE_TARGETS.items() for a in attrs]
    return {t: float(np.mean([pick(result[t][a] if kind == "q" else result[t][result["attributes"][t].index(a)])
                              for tt, a in targets if tt == t])) for t in bk.PROBE_TARGETS}


def probe_curve_markdown(path):
    rows = read_jsonl(path)
    lines = ["## The probe recipe: accuracy against steps (Appendix E)", "",
             f"From `{os.path.basename(path)}`; `python experiments/tables.py probe-curve`. The headline's pretrained "
             f"models; probes trained on 80% of P_train people ({rows[0]['result']['probe_people']}) and scored on the "
             f"other 20% ({rows[0]['result']['scored_people']}), never on P_test. Steps: the joint phase (embedding "
             f"update and read-outs) after {bk.PROBE_HEAD_STEPS} full-batch read-out steps. Mean over attributes of "
             "first-token / whole-value accuracy in % (P-probe: each attribute's best position); `seen`: on the "
             "held-out people whose value some probe-training person has. " + provenance(rows), "",
             "| model | probe | read | read-out | steps | first token | whole value | whole value, seen | minutes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, res = probe_means(r["result"], r["probe"]), r["result"]
        seen = float(np.mean([res["seen"]["whole"][a] if r["probe"] == "q" else max(res["seen"]["whole"][a])
                              for a in bk.PROBE_TARGETS["whole"]]))
        lines.append(f"| {r['setting']} | {r['probe'].upper()} | {r['q_read'] if r['probe'] == 'q' else 'before each'} "
                     f"| {r['readout']} | {r['steps']} | {m['first_token']:.1f} | {m['whole']:.1f} | {seen:.1f} | "
                     f"{r['minutes']:.1f} |")
    q = [r for r in rows if r["probe"] == "q"]
    if q:
        gain = max(probe_means(r["result"], "q")["whole"] - probe_means(s["result"], "q")["whole"] for r in q for s in q
                   if s["steps"] == 0 and (s["setting"], s["readout"], s["q_read"]) == (r["setting"], r["readout"],
                                                                                     r["q_read"]))
        best = {s: max(probe_means(r["result"], "q")["whole"] for r in q if r["setting"] == s)
                for s in dict.fromkeys(r["setting"] for r in q)}
        lines += ["", f"Joint steps beyond the read-out fit lift no Q-probe by more than {gain:.1f} points; the best "
                  "Q-probe whole-value mean of each model, over read positions, read-outs and steps: "
                  + ", ".join(f"{s} {v:.1f}%" for s, v in best.items()) + "."]
    return "\n".join(lines) + "\n"


# `probe-scale` (Results 4-5 against scale): P- and Q-probes, with both read-outs, on the augmented model at two
# widths, two depths and two budgets (the paper's multi5 sees each entry ~108 times; the preset's 60 passes over
# single-sized data give it 12), on single after bio pretraining and after mixed training, on the mixed models of
# the QA-ratio sweep (whose P_test QA spans 11-59%) and of the scale study at more people and at 4 layers: does
# Q-probe accuracy grow with width, depth or training, and does it track QA? Overrides of the cpu preset; a finished
# pretrained run already in the point's work directory with the same configuration is reused.
PROBE_SCALE = [("multi5+permute+fullname", "qa_finetune", {}, (0, 1)),
               ("multi5+permute+fullname", "qa_finetune", dict(n_embd=256), (0, 1)),
               ("single", "qa_finetune", {}, (0, 1)), ("single", "mixed", {}, (0, 1))] + [
    ("single", "mixed", dict(qa_ratio=q), (0,)) for q in (0.1, 0.2, 0.4, 0.6)] + [
    ("multi5+permute+fullname", "qa_finetune", dict(n_layer=4), (0, 1)),
    ("multi5+permute+fullname", "qa_finetune", dict(passes=300), (0, 1)),
    ("multi5+permute+fullname", "qa_finetune", dict(people=2000), (0, 1))] + [
    ("single", "mixed", dict(people=n), (0, 1)) for n in (2000, 4000)] + [
    ("single", "mixed", dict(n_layer=4), (0, 1)), ("single", "mixed", dict(n_embd=256), (0, 1))]
PROBE_SCALE_READOUTS = ("linear", "candidates")


def probe_scale_key(setting, method, overrides):
    """What names a probe-scale model, the seed aside (overrides as sorted JSON)."""
    return setting, method, json.dumps(overrides, sort_keys=True)


def probe_scale_work(out, setting, method, overrides, seed):
    name = "-".join([setting, method] + [f"{k}{v}" for k, v in sorted(overrides.items())] + [f"seed{seed}"])
    return os.path.join(out, "work", "probe-scale", name)


def probe_scale(preset, seed, out, device, quiet=False, jobs=1):
    """PROBE_SCALE (`seed` is not used: each point names its seeds) -> OUT/probe_scale.jsonl, a line a model as it
    finishes; models already there (same setting, method, overrides and seed) are kept."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "probe_scale.jsonl")
    kept = jsonl_lines(path)
    done = {(*probe_scale_key(r["setting"], r["method"], r["overrides"]), r["seed"]) for r in kept}
    tasks = [dict(setting=st, method=m, train_overrides=ov, seed=s, work=probe_scale_work(out, st, m, ov, s),
                  reuse=True)
             for st, m, ov, seeds in PROBE_SCALE for s in seeds
             if (*probe_scale_key(st, m, ov), s) not in done]
    reused = {t["work"]: os.path.isfile(os.path.join(t["work"], f"{t['setting']}-{t['method']}", "model.pt"))
              for t in tasks}
    for task, row in bk.run_rows(tasks, preset, seed, device, None, jobs, quiet, "probe scale"):
        t0, run = time.time(), os.path.join(task["work"], f"{task['setting']}-{task['method']}")
        probes = {r: bk.probe(run, os.path.join(task["work"], f"data-{task['setting']}"), ("p", "q"), device=device,
                              seed=task["seed"], quiet=True, readout=r) for r in PROBE_SCALE_READOUTS}
        cfg = pretraining_config(preset, task["method"], task["seed"], device, task["train_overrides"])
        kept.append(dict(setting=task["setting"], method=task["method"], overrides=task["train_overrides"],
                         seed=task["seed"], n_layer=cfg.n_layer, n_embd=cfg.n_embd, qa_ratio=cfg.qa_ratio,
                         **{k: row[k] for k in ("memorization_p_train", "memorization_p_test", "qa_train", "qa_test",
                                                "pretrain_steps")},
                         probes=probes, pretraining_reused=reused[task["work"]],
                         minutes=round(row["minutes"] + (time.time() - t0) / 60, 2), preset=preset,
                         config=dataclasses.asdict(cfg), hardware=row["hardware"], bioknow=bk.VERSION,
                         commit=git_commit()))
        rewrite_jsonl(path, kept)
        q = {r: probe_means(p["q_probe"], "q")["whole"] for r, p in probes.items()}
        print(f"probe scale {task['setting']} {task['method']} {json.dumps(task['train_overrides'])} seed "
              f"{task['seed']}: QA P_test {row['qa_test']['mean']:.1f}, Q-probe whole "
              + " / ".join(f"{v:.1f}" for v in q.values()), flush=True)


def p_probe_at(result, position):
    """A P-probe's first-token mean over attributes at one read position (None: each attribute's own position)."""
    firsts = result["first_token"]
    return float(np.mean([row[position if position is not None else k] for k, row in enumerate(firsts)]))


def unseen_share(result):
    """The share of scored people whose whole value no probe-training person has, mean over attributes (%)."""
    return float(np.mean(list(result["unseen_share"]["whole"].values())))


def probe_scale_markdown(path):
    rows = read_jsonl(path)
    lines = ["## Probes against scale (Results 4-5)", "",
             f"From `{os.path.basename(path)}`; `python experiments/tables.py probe-scale`. Pretrained models (before "
             f"QA finetuning) of bioS, N people, probed as in the headline: trained on the P_train people (half of N), "
             "scored on the P_test people (the other half); each cell linear classifier "
             "/ candidate read-out (bioknow's addition: scored against the model's own embeddings of the values). "
             "P-probe: first-token mean over the six attributes at position 0 and at each attribute's own position "
             "(sentence order; for permuted biographies the attribute there varies). Q-probe: at the name's last "
             "token, whole-value mean of five attributes. Minutes: this table's run of a row; a pretraining already "
             "trained by the headline or the QA-ratio sweep, with the same configuration, is reused. Paper (12x768, "
             "N = 100,000): multi5+permute P-probe ~100% at position 0, Q-probe whole value 91.0%; single 2.9%. "
             + provenance(rows), "",
             "| model | N | layers x width | passes | QAr | seed | memorised | QA P_test | P-probe pos 0 | "
             "P-probe own position | Q-probe whole | minutes |", "|" + "---|" * 12]
    order = [probe_scale_key(st, m, ov) for st, m, ov, _ in PROBE_SCALE]
    key = lambda r: probe_scale_key(r["setting"], r["method"], r["overrides"])  # noqa: E731
    rows = sorted(rows, key=lambda r: (order.index(key(r)) if key(r) in order else len(order), r["seed"]))
    for r in rows:
        lin, cand = r["probes"]["linear"], r["probes"]["candidates"]
        cell = lambda f: " / ".join(f"{f(p):.1f}" for p in (lin, cand))  # noqa: E731
        lines.append(f"| {r['setting']} {r['method']} | {r['config']['people']} | {r['n_layer']}x{r['n_embd']} | "
                     f"{r['config']['passes']:g} | "
                     f"{r['qa_ratio'] if r['method'] == 'mixed' else ''} | {r['seed']} | {memorised_cell(r)} | "
                     f"{r['qa_test']['mean']:.1f} | {cell(lambda p: p_probe_at(p['p_probe'], 0))} | "
                     f"{cell(lambda p: p_probe_at(p['p_probe'], None))} | "
                     f"{cell(lambda p: probe_means(p['q_probe'], 'q')['whole'])} | {r['minutes']:.1f}"
                     f"{' (pretraining reused)' if r['pretraining_reused'] else ''} |")
    qa = [r["qa_test"]["mean"] for r in rows]
    corr = {k: float(np.corrcoef([probe_means(r["probes"][k]["q_probe"], "q")["whole"] for r in rows], qa)[0, 1])
            for k in PROBE_SCALE_READOUTS} if len(rows) > 2 else {}
    q_all = [probe_means(r["probes"][k]["q_probe"], "q")["whole"] for r in rows for k in PROBE_SCALE_READOUTS]
    augmented = {}
    for r in rows:
        if "permute" in r["setting"]:
            augmented.setdefault(f"{r['n_layer']}x{r['n_embd']} at {r['config']['passes']:g} passes, N = "
                                 f"{r['config']['people']:,}", []).append(
                p_probe_at(r["probes"]["candidates"]["p_probe"], 0))
    lines += ["", f"Q-probe whole-value mean {min(q_all):.1f}-{max(q_all):.1f}% on every model and read-out (the "
              "paper: 91.0% on the augmented model)"
              + ("; the augmented model's P-probe at position 0 (candidates, mean over seeds): "
                 + ", ".join(f"{w} {np.mean(v):.1f}%" for w, v in augmented.items()) if augmented else "") + "."]
    by_people = grouped(sorted((r for r in rows if set(r["overrides"]) <= {"people"}),
                               key=lambda r: r["config"]["people"]), lambda r: (r["setting"], r["method"]))
    per_readout = lambda rs, f: " / ".join(f"{np.mean([f(r['probes'][k]) for r in rs]):.1f}"  # noqa: E731
                                           for k in PROBE_SCALE_READOUTS)
    curves = []
    for (setting, method), rs in by_people.items():
        at = grouped(rs, lambda r: r["config"]["people"])
        if len(at) > 1:
            curves.append(f"{setting} {method}: " + "; ".join(
                f"N = {n:,} Q-probe {per_readout(g, lambda p: probe_means(p['q_probe'], 'q')['whole'])}, "
                f"P-probe pos 0 {per_readout(g, lambda p: p_probe_at(p['p_probe'], 0))}, QA {qa_mean(g):.1f}, "
                f"values no trainee has {np.mean([unseen_share(r['probes']['linear']['q_probe']) for r in g]):.1f}%"
                + ("" if all(map(is_memorised, g)) else " (not memorised)") for n, g in at.items()))
    if curves:
        lines += ["", "Against people (the preset's model and passes; the probes train on N / 2 people, so a larger N "
                      "gives each value more examples; seeds' mean, linear / candidates): " + ". ".join(curves) + "."]
    if corr:
        lines += ["", "Correlation of Q-probe whole-value mean with QA P_test over these models: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in corr.items()) + f" (paper: 0.996 over its settings); with "
                  f"every Q-probe under {np.ceil(max(q_all)):.0f}% it orders small numbers, not a probe that reads "
                  "what QA extracts."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------------
# --- measured on a GPU (bench/gpu_session.sh)

def gpu_session_markdown(path):
    """results/gpu_session.json: the paper shape's step and slice, the small presets, DDP and the step's profile."""
    g = json.load(open(path))
    paper, cut = g["paper_shape_step"], g["paper_slice"]
    lines = ["## Measured on a GPU", "",
             f"From `{os.path.basename(path)}`: `{g['command']}` on {g['device']}, commit {g['commit'][:7]}. MFU is "
             "model FLOPs (6 per parameter per token plus attention) against the card's dense bf16 peak (989 "
             "TFLOP/s for the H100 and H200).", "",
             "| measurement | result | target |", "|---|---|---|",
             f"| paper shape (12x768, context 512, batch 96), compiled, bf16 | {paper['tokens_per_sec']:,} tokens/s, "
             f"{paper['ms_per_step']} ms/step, **MFU {100 * paper['mfu']:.1f}%** | MFU >= 45% (stretch 55%) |",
             f"| 300-step slice of the paper preset through `train` (N = 100,000 multi5+permute+fullname) | "
             f"{cut['slice_tokens_per_sec']:,} tokens/s: **{cut['projected_hours_80k']} h** for 80,000 steps | "
             "<= 70 min on one H100 |"]
    for b in g["small_presets"]:
        shape = b["shape"]
        lines.append(f"| cpu preset's step ({shape['n_layer']}x{shape['n_embd']}, batch {shape['batch_size']} x "
                     f"{shape['block_size']}), {'compiled' if b['compiled'] else 'eager'} | {b['ms_per_step']} ms/step "
                     f"({1000 / b['ms_per_step']:.0f} steps/s, {b['tokens_per_sec']:,} tokens/s) | |")
    d = g["ddp_one_nccl_process"]
    lines.append(f"| DDP: torchrun, {d['processes']} NCCL process, against a plain process ({len(d['steps'])} logged "
                 f"steps) | largest loss gap {d['max_gap']} | the same curve |")
    top = ", ".join(f"{k['name'].split('<')[0].strip()} {k['self_cuda_percent']}"
                    for k in g["paper_step_profile"]["top"][:6])
    lines += ["", f"Where the paper-shape step's GPU time goes ({g['paper_step_profile']['note']}): {top}.",
              "", f"Scale study: {g['scale_study']['note']}."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------------
# --- REPORT.md

def write_report(result, out):
    """REPORT.md from a reproduce result and its probes, each table whose OUT/*.jsonl is there, and the notes."""
    markdown = report_markdown(result) + "\n" + probe_markdown(result)
    others = sorted(glob.glob(os.path.join(out, "seed*", "reproduce.json")))
    if others:
        markdown += "\n" + seeds_markdown([result] + [read_json(p) for p in others])
    for name, table in (("full_table.jsonl", full_table_markdown), ("celebrity.jsonl", celebrity_markdown),
                        ("gbert.jsonl", gbert_markdown), ("gbert_budget.jsonl", gbert_budget_markdown),
                        ("finetune_grid.jsonl", finetune_grid_markdown),
                        ("qa_ratio.jsonl", qa_ratio_markdown), ("headline_choice.jsonl", headline_choice_markdown),
                        ("packing.jsonl", packing_markdown),
                        ("mixed_scale.jsonl", scale_markdown),
                        ("mixed_sweep.jsonl", mixed_sweep_markdown), ("probe_curve.jsonl", probe_curve_markdown),
                        ("probe_scale.jsonl", probe_scale_markdown),
                        ("gpu_session.json", gpu_session_markdown)):
        if os.path.isfile(os.path.join(out, name)):
            markdown += "\n" + table(os.path.join(out, name))
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "NOTES.md")) as f:
        markdown += "\n" + f.read()
    write_text(os.path.join(out, "REPORT.md"), markdown)
    print(markdown)


# ----------------------------------------------------------------------------------------------------------------------
# --- command line

TABLES = {"full": full_table, "celebrity": celebrity_table, "gbert": gbert_table, "gbert-budget": gbert_budget,
          "finetune-grid": lambda *a, jobs=1, **kw: finetune_grid(*a, **kw),
          "qa-ratio": lambda *a, **kw: mixed_sweep(*a, **kw, sweep=QA_RATIO_SWEEP, name="qa_ratio.jsonl", resume=True),
          "headline-choice": lambda *a, **kw: mixed_sweep(*a, **kw, sweep=HEADLINE_CANDIDATES,
                                                          name="headline_choice.jsonl", resume=True),
          "packing": packing_table, "scale": scale_study, "mixed-sweep": mixed_sweep, "probe-curve": probe_curve,
          "probe-scale": probe_scale}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="experiments/tables.py", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=("report",) + tuple(TABLES),
                        help="report: render OUT/REPORT.md; any other: run that table into OUT/TABLE.jsonl")
    parser.add_argument("--preset", help="default: table for full / celebrity / gbert(-budget) (the cpu preset at "
                                         "N = 500), cpu otherwise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, default=1, help="rows side by side, a process each on one thread "
                                                            "(default 1; 2 on a 2-core CPU, more on a GPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        if args.table == "report":
            path = os.path.join(args.out, "reproduce.json")
            if not os.path.isfile(path):
                raise bk.UserError(f"no {path} (run `python bioknow.py reproduce --out {args.out}` first)")
            return write_report(read_json(path), args.out)
        preset = args.preset or ("table" if args.table in ("full", "celebrity", "gbert", "gbert-budget")
                                 else bk.DEFAULT_PRESET)
        TABLES[args.table](preset, args.seed, args.out, args.device, quiet=args.quiet, jobs=args.jobs)
    except bk.UserError as e:
        print(f"tables: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
