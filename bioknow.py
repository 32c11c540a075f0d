"""
bioknow: one readable file that reproduces "Physics of Language Models: Part 3.1, Knowledge Storage and Extraction"
(Allen-Zhu & Li, 2023, arXiv 2309.14316) end to end.

Synthetic people get short template biographies (bioS). A GPT pretrained on all of them memorises every fact, yet after
QA finetuning on half the people (P_train) it answers questions about the other half (P_test) only if the pretraining
data was augmented (several rephrasings, shuffled sentences, full names) or mixed with QA from the start.

Subcommands (each has --help):
    generate   write a bioS data directory: people, biographies, QA pairs, vocabulary
    check      re-verify a data directory's invariants
    train      pretrain a GPT on the biographies (--mode bio) or on biographies + P_train QA (--mode mixed)
    finetune   QA-finetune a pretrained run on P_train questions (answer tokens only)
    bench      time full training steps at a preset's shape: tokens/s, ms/step, MFU
    eval       exact-match QA accuracy on P_train / P_test, and memorisation of the biographies
    probe      P- and Q-probing of a frozen pretrained run (paper §6): where each attribute is stored
    reproduce  the paper's headline comparison, written to results/REPORT.md and results/reproduce.json

Example:
    python bioknow.py generate --out data/single --people 2000 --aug single
    python bioknow.py train --data data/single --out runs/single
    python bioknow.py finetune --run runs/single --data data/single --out runs/single-qa
    python bioknow.py eval --run runs/single-qa --data data/single --out runs/single-qa/eval.json
"""
import argparse
import ctypes
import dataclasses
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from tqdm import tqdm

ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "company", "company_city")


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit status 2, no traceback."""


# ----------------------------------------------------------------------------------------------------------------------
# --- config
# Every field is a command-line flag (--n-layer, --qa-ratio, ...). A preset is a dict of overrides; its "finetune"
# entry overrides the same fields again for QA finetuning, so --lr means "this stage's learning rate" everywhere.

@dataclass
class Config:
    # data (generate)
    people: int = 1000               # N, paper: 100,000
    aug: str = "single"              # augmentation spec, e.g. multi5+permute+fullname (paper §2)
    # model (paper §4: GPT-2 with rotary on 1/4 of each head)
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    rotary_frac: float = 0.25
    rope_base: float = 10000.0
    # optimisation (paper §4: AdamW, warmup, cosine to lr/10)
    batch_size: int = 8
    lr: float = 3e-3
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1
    adam_eps: float = 1e-6
    grad_clip: float = 1.0
    warmup_steps: int = 50
    passes: float = 60.0            # budget in passes over bioS-single-sized data (finetune: epochs over P_train QA)
    steps: int = 0                   # if > 0, overrides passes
    mode: str = "bio"                # bio | mixed (paper §4 mixed training)
    qa_ratio: float = 0.8            # mixed: probability that a window is QA
    holdout: float = 0.0             # finetune: fraction of P_train people held out to choose the recipe
    lora_qv: int = 0                 # finetune: LoRA rank on query/value (0: full finetuning; paper §4: 8 or 16)
    lora_emb: int = 0                # finetune: rank of the LoRA update of the embedding (paper §4: 128)
    objective: str = "clm"           # clm: the causal GPT, next token | mlm: GBERT, full attention, masked words (§8)
    # run
    preset: str = "cpu"              # the preset these values started from (recorded; set with --preset)
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda | mps
    compile: str = "auto"            # auto (on for CUDA) | on | off
    ckpt_every: int = 1000           # steps between checkpoints (0: only at the end); --resume continues from one
    log_every: int = 50
    probe_steps: int = 50            # probe steps training the embedding update (paper §6: 30,000 at batch 50 / 200)


PRESETS = {
    # the default: the headline comparison on a 2-core CPU within minutes (README: why these numbers)
    "cpu": dict(people=1000, n_layer=2, n_head=4, n_embd=128, block_size=128, batch_size=8, lr=3e-3,
                warmup_steps=50, passes=60,
                finetune=dict(lr=3e-4, passes=10, batch_size=32, weight_decay=0.01, warmup_steps=0)),
    # for unit tests: seconds
    "tiny": dict(people=200, n_layer=1, n_head=2, n_embd=32, block_size=128, batch_size=8, passes=4,
                 warmup_steps=5, log_every=10, probe_steps=5,
                 finetune=dict(lr=1e-3, passes=1, batch_size=16, weight_decay=0.01, warmup_steps=0)),
    # paper §4: GPT-2 small, 80k steps of 96 x 512, then QA finetuning with the paper's optimiser (full; or LoRA
    # with --lora-qv 8 --lora-emb 128)
    "paper": dict(people=100_000, n_layer=12, n_head=12, n_embd=768, block_size=512, batch_size=96, steps=80_000,
                  lr=1e-3, weight_decay=0.1, adam_eps=1e-6, warmup_steps=1000, min_lr_frac=0.1, log_every=100,
                  ckpt_every=5000, probe_steps=30_000,
                  finetune=dict(lr=3e-4, weight_decay=0.01, batch_size=48, steps=50_000, warmup_steps=0)),
}
PRESETS["toy"] = dict(PRESETS["cpu"], people=300)  # the headline gap at toy scale: the end-to-end test, ~3.5 min
PRESETS["table"] = dict(PRESETS["cpu"], people=500)  # `reproduce --table full`: 32 runs in ~80 min on 2 cores
DEFAULT_PRESET = "cpu"


def resolve_config(preset=DEFAULT_PRESET, stage="train", **overrides):
    """Config defaults <- preset <- preset's finetune overrides (stage 'finetune') <- explicit overrides."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    values = {k: v for k, v in PRESETS[preset].items() if k != "finetune"}
    values["preset"] = preset
    if stage == "finetune":
        values.update(PRESETS[preset].get("finetune", {}))
    if overrides.get("passes") is not None and overrides.get("steps") is None:
        values["steps"] = 0  # an explicit --passes wins over a preset's steps
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Config(**values)


# ----------------------------------------------------------------------------------------------------------------------
# --- data (paper §2): people, biographies, augmentations, QA
# Every attribute is drawn independently and uniformly; full names are unique. A biography is one sentence per
# attribute, each from ~42 templates; the full name opens the first sentence, pronouns the rest (unless "fullname").

def sample_people(n, seed):
    """n people with unique full names; the first half by id is P_train (ids are random draws, so this is random)."""
    capacity = len(FIRST_NAMES) * len(MIDDLE_NAMES) * len(LAST_NAMES)
    if n <= 0:
        raise UserError(f"--people must be positive, got {n}")
    if n > capacity:
        raise UserError(f"--people {n} exceeds the {capacity} unique full names the name pools allow")
    rng = random.Random(seed)
    hq = company_cities()
    seen, people = set(), []
    while len(people) < n:
        first, middle, last = rng.choice(FIRST_NAMES), rng.choice(MIDDLE_NAMES), rng.choice(LAST_NAMES)
        if (first, middle, last) in seen:
            continue  # rejection sampling keeps full names unique (paper §2)
        seen.add((first, middle, last))
        company = rng.choice(COMPANIES)
        people.append(dict(
            id=len(people), name=f"{first} {middle} {last}", first_name=first, middle_name=middle, last_name=last,
            pronoun=rng.choice(("he", "she", "they")),
            birth_date=f"{rng.choice(MONTHS)} {rng.choice(DAYS)}, {rng.choice(YEARS)}",
            birth_city=rng.choice(CITIES), university=rng.choice(UNIVERSITIES), major=rng.choice(MAJORS),
            company=company, company_city=hq[company],
            split="train" if len(people) < n // 2 else "test"))
    return people


def parse_aug(spec, flag="--aug"):
    """'multi5+permute+fullname' -> {'multi': 5, 'permute': 1, 'fullname': True}. permute on single takes a count."""
    parts = spec.split("+")
    base = parts[0]
    m = re.fullmatch(r"single|multi([1-9]\d*)", base)
    if not m:
        raise UserError(f"bad {flag} {spec!r}: must start with 'single' or 'multiM' (M >= 1), e.g. multi5+permute")
    aug = dict(multi=int(m.group(1) or 1), single=base == "single", permute=0, fullname=False)
    for part in parts[1:]:
        pm = re.fullmatch(r"permute([1-9]\d*)?", part)
        if pm and not aug["permute"] and not aug["fullname"]:
            if aug["single"] and not pm.group(1):
                raise UserError(f"bad {flag} {spec!r}: single takes permuteP with a count, e.g. single+permute2")
            if not aug["single"] and pm.group(1):
                raise UserError(f"bad {flag} {spec!r}: multiM takes plain 'permute' (each entry is shuffled)")
            aug["permute"] = int(pm.group(1) or 1)
        elif part == "fullname" and not aug["fullname"]:
            aug["fullname"] = True
        else:
            raise UserError(f"bad {flag} {spec!r}: unexpected {part!r} (form: single[+permuteP][+fullname] or "
                            f"multiM[+permute][+fullname])")
    return aug


PRONOUNS = {  # subject, possessive, was, is, has
    "he": ("He", "his", "was", "is", "has"),
    "she": ("She", "her", "was", "is", "has"),
    "they": ("They", "their", "were", "are", "have"),
}


def template_variant(template, pronoun, with_name):
    """Fill a template's pronoun and verb slots; with_name leaves {N} for the full name (a singular subject)."""
    subject, possessive, was, is_, has = PRONOUNS[pronoun]
    if with_name:
        subject, was, is_, has = "{N}", "was", "is", "has"
    return (template.replace("{S}", subject).replace("{P}", possessive)
            .replace("{was}", was).replace("{is}", is_).replace("{has}", has))


def _variants():
    """VARIANTS[attr][pronoun][with_name][k]: every template pre-filled, so rendering is two str.replace calls."""
    return {a: {p: {w: [template_variant(t, p, w) for t in TEMPLATES[a]] for w in (False, True)} for p in PRONOUNS}
            for a in ATTRIBUTES}


def render_entry(person, order, templates, fullname):
    """One biography entry: sentences in `order`; the full name in the first sentence (or all, with fullname)."""
    sentences = []
    for k, attr in enumerate(order):
        t = VARIANTS[attr][person["pronoun"]][fullname or k == 0][templates[attr]]
        sentences.append(t.replace("{N}", person["name"]).replace("{V}", person[attr]))
    return " ".join(sentences)


def biographies(person, aug, rng):
    """The entries of one person under an augmentation (paper §2): multiM resamples templates per entry; permute
    shuffles the sentence order (for single+permuteP: P shuffled copies of the same six sentences)."""
    def draw_templates():
        return {a: rng.randrange(len(TEMPLATES[a])) for a in ATTRIBUTES}

    def order():
        if not aug["permute"]:
            return ATTRIBUTES
        shuffled = list(ATTRIBUTES)
        rng.shuffle(shuffled)
        return shuffled

    if aug["single"]:
        templates = draw_templates()
        copies = aug["permute"] or 1
        return [render_entry(person, order(), templates, aug["fullname"]) for _ in range(copies)]
    return [render_entry(person, order(), draw_templates(), aug["fullname"]) for _ in range(aug["multi"])]


def qa_pairs(person):
    """The six questions of paper §3; the answer is the attribute's whole value."""
    return [dict(id=person["id"], attribute=a, question=QUESTIONS[a].replace("{N}", person["name"]),
                 answer=person[a], split=person["split"]) for a in ATTRIBUTES]


def qa_text(question, answer):
    return f"{question}\nAnswer: {answer}."


def write_atomic(path, write):
    """Write through a temporary name and rename into place: a kill leaves the old file or the new, never half."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    write_atomic(path, write)


def write_jsonl(f, rows):
    f.write("".join(json.dumps(r) + "\n" for r in rows))


def rewrite_jsonl(path, rows):
    """PATH as these rows, one JSON object a line, rewritten whole: a kill never leaves half a line."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def entries_per_person(spec):
    return spec["permute"] if spec["single"] and spec["permute"] else spec["multi"]


def add_celebrities(persons, n_celebrities):
    """Paper §7 (celebrity helps minority): the first n_celebrities people become celebrities, P_train, whose QA is
    finetuned on; the rest are the minority, all P_test."""
    for p in persons:
        p["celebrity"] = p["id"] < n_celebrities
        p["split"] = "train" if p["celebrity"] else "test"


def generate(out, people=Config.people, aug="single", seed=0, force=False, quiet=False, celebrities=0,
             celebrity_aug="multi5+permute"):
    """Write a bioS data directory (people.jsonl, bios.jsonl, qa.jsonl, vocab.json, meta.json) atomically. With
    celebrities > 0, that many more people, flagged `celebrity`, get biographies under celebrity_aug (paper §7)."""
    spec, celebrity_spec = parse_aug(aug), parse_aug(celebrity_aug, "--celebrity-aug")
    if os.path.exists(out) and os.listdir(out) and not force:
        raise UserError(f"{out} exists and is not empty (use --force to overwrite)")
    if celebrities < 0:
        raise UserError(f"--celebrities must be >= 0, got {celebrities}")
    t0 = time.time()
    persons = sample_people(people + celebrities, seed)
    if celebrities:
        add_celebrities(persons, celebrities)
    rng = random.Random(seed + 1)
    # no timings or paths in meta.json: the same seed gives byte-identical files
    splits = Counter(p["split"] for p in persons)
    meta = dict(people=len(persons), aug=aug, seed=seed, entries_per_person=entries_per_person(spec),
                n_train=splits["train"], n_test=splits["test"], bioknow=VERSION)
    if celebrities:
        meta.update(celebrities=celebrities, celebrity_aug=celebrity_aug,
                    celebrity_entries_per_person=entries_per_person(celebrity_spec))

    def write(tmp):
        with open(f"{tmp}/people.jsonl", "w") as fp, open(f"{tmp}/bios.jsonl", "w") as fb, \
                open(f"{tmp}/qa.jsonl", "w") as fq:
            for p in tqdm(persons, desc=f"generate {aug}", unit="people", disable=quiet, mininterval=1):
                write_jsonl(fp, [p])
                texts = biographies(p, celebrity_spec if p.get("celebrity") else spec, rng)
                write_jsonl(fb, [dict(id=p["id"], text=t) for t in texts])
                write_jsonl(fq, qa_pairs(p))
        write_json(f"{tmp}/meta.json", meta)
        write_json(f"{tmp}/vocab.json", VOCAB)

    write_data_dir(out, write)
    return dict(meta, seconds=round(time.time() - t0, 2))


def write_data_dir(out, write):
    """write(tmp) fills a temporary directory, which then replaces OUT whole: a kill never leaves half a directory."""
    tmp = f"{out.rstrip('/')}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        write(tmp)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bios_from(data_dir, bios_file, out, force=False, quiet=False):
    """A data directory whose biographies are the user's own texts (paper §2's bioR, written by an LLM; README: "Bring
    your own biographies"): the people and questions of DATA_DIR, the texts of BIOS_FILE ({"id", "text"} lines, any
    number a person). A text that does not mention all six of its person's values verbatim is left out and listed
    in OUT/rejected.jsonl; every person must keep at least one. Words new to the vocabulary are appended to it."""
    if os.path.exists(out) and os.listdir(out) and not force:
        raise UserError(f"{out} exists and is not empty (use --force to overwrite)")
    data = load_checked_data(data_dir)
    if not os.path.isfile(bios_file):
        raise UserError(f"--bios-from {bios_file} does not exist")
    by_id, rows = {p["id"]: p for p in data["people"]}, read_jsonl(bios_file)
    bad = [n for n, r in enumerate(rows, 1) if not isinstance(r, dict) or r.get("id") not in by_id
           or not isinstance(r.get("text"), str)]
    if bad:
        raise UserError(f"{bios_file}:{bad[0]}: each line must be {{\"id\", \"text\"}} with an id of "
                        f"{data_dir}/people.jsonl ({len(bad)} such lines)")
    vocab = list(data["vocab"])
    known = set(vocab)
    vocab += sorted({w for r in rows for w in words(r["text"])} - known)  # appended: the base ids stay as they are
    tok, kept, rejected = Tokenizer(vocab), [], []
    for r in rows:
        found = value_positions(tok.encode(r["text"]), by_id[r["id"]], tok)
        if len(found) == 6:
            kept.append(dict(id=r["id"], text=r["text"]))
        else:
            rejected.append(dict(id=r["id"], missing=[a for a in ATTRIBUTES if a not in found], text=r["text"]))
    bare = sorted(set(by_id) - {r["id"] for r in kept})
    if bare:
        raise UserError(f"{len(bare)} people (first: id {bare[0]}) have no text that mentions all six of their "
                        f"values ({len(rejected)} of the {len(rows)} texts miss a value); rewrite those texts or add "
                        "more")
    meta = dict(data["meta"], bios_from=os.path.basename(bios_file), entries_per_person=None, bioknow=VERSION)

    def write(tmp):
        for name in ("people.jsonl", "qa.jsonl"):
            shutil.copyfile(os.path.join(data_dir, name), os.path.join(tmp, name))
        rewrite_jsonl(f"{tmp}/bios.jsonl", kept)
        rewrite_jsonl(f"{tmp}/rejected.jsonl", rejected)
        write_json(f"{tmp}/meta.json", meta)
        write_json(f"{tmp}/vocab.json", vocab)

    write_data_dir(out, write)
    if rejected:  # a report, not progress: --quiet keeps it
        print(f"{len(rejected)} of {len(rows)} texts left out: they miss a value (first: id {rejected[0]['id']}, "
              f"{', '.join(rejected[0]['missing'])}); all listed in {out}/rejected.jsonl", file=sys.stderr)
    return dict(meta, texts=len(kept), rejected=len(rejected), new_words=len(vocab) - len(data["vocab"]))


def read_json(path):
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError:
            raise UserError(f"{path}: corrupt JSON") from None


def read_jsonl(path):
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path}:{n}: corrupt line (not JSON)") from None
    return rows


def load_data(data_dir):
    """Read a data directory into a dict; missing pieces are a user error, not a traceback."""
    if not os.path.isdir(data_dir):
        raise UserError(f"data directory {data_dir} does not exist (run `bioknow.py generate --out {data_dir}`)")
    if not os.listdir(data_dir):
        raise UserError(f"data directory {data_dir} is empty (run `bioknow.py generate --out {data_dir} --force`)")
    for name in ("people.jsonl", "bios.jsonl", "qa.jsonl", "meta.json", "vocab.json"):
        if not os.path.isfile(f"{data_dir}/{name}"):
            raise UserError(f"data directory {data_dir} lacks {name}")
    meta, vocab = read_json(f"{data_dir}/meta.json"), read_json(f"{data_dir}/vocab.json")
    people = read_jsonl(f"{data_dir}/people.jsonl")
    if not people:
        raise UserError(f"{data_dir}/people.jsonl is empty")
    return dict(meta=meta, vocab=vocab, people=people, bios=read_jsonl(f"{data_dir}/bios.jsonl"),
                qa=read_jsonl(f"{data_dir}/qa.jsonl"), dir=data_dir)


def check_data(data, full=True):
    """The invariants of a data directory, as a list of problems (empty: fine). The structural part is cheap and runs
    before every training run; full=True (`bioknow.py check DIR`) also reads every text: it must tokenize, mention
    each of its person's six values, carry the full name as the augmentation says, and keep the fixed order unless
    permuted."""
    problems = []
    meta, people = data["meta"], data["people"]
    missing = [k for k in ("people", "aug", "entries_per_person", "n_train", "n_test") if k not in meta]
    if missing:
        return [f"meta.json lacks {', '.join(missing)}"]
    try:
        spec = parse_aug(meta["aug"])
        celebrity_spec = parse_aug(meta.get("celebrity_aug", meta["aug"]))
    except UserError as e:
        return [f"meta.json: {e}"]
    if not data["vocab"] or data["vocab"][0] != EOS or len(set(data["vocab"])) != len(data["vocab"]):
        problems.append(f"vocab.json must list unique words with {EOS} first")
    if len(people) != meta["people"]:
        problems.append(f"people.jsonl has {len(people)} people, meta.json says {meta['people']}")
    fields = ("id", "name", "pronoun", "split") + ATTRIBUTES
    bad = [n for n, p in enumerate(people) if not isinstance(p, dict) or any(not p.get(k) and p.get(k) != 0
                                                                              for k in fields)]
    if bad:
        return problems + [f"people.jsonl line {bad[0] + 1}: missing one of {', '.join(fields)} "
                           f"({len(bad)} such people)"]
    if [p["id"] for p in people] != list(range(len(people))):
        problems.append("people.jsonl: ids are not 0, 1, 2, ... in order")
    if len({p["name"] for p in people}) != len(people):
        problems.append("people.jsonl: full names are not unique")
    splits = Counter(p["split"] for p in people)
    if (splits["train"], splits["test"]) != (meta["n_train"], meta["n_test"]):
        problems.append(f"people.jsonl: {splits['train']} train / {splits['test']} test people, meta.json says "
                        f"{meta['n_train']} / {meta['n_test']}")
    by_id = {p["id"]: p for p in people}
    entries = Counter(b.get("id") for b in data["bios"])
    if set(entries) - set(by_id):
        problems.append(f"bios.jsonl: {len(set(entries) - set(by_id))} ids that are not in people.jsonl")
    def expected(p):  # None: any number, at least one (the user's own texts, `generate --bios-from`)
        return meta.get("celebrity_entries_per_person") if p.get("celebrity") else meta["entries_per_person"]
    wrong = [i for i, p in by_id.items() if entries[i] != expected(p) and (expected(p) is not None or not entries[i])]
    if wrong:
        problems.append(f"bios.jsonl: {len(wrong)} people (first: id {wrong[0]}) do not have the "
                        f"{expected(by_id[wrong[0]]) or 'one or more'} entries meta.json says")
    celebrities = sum(bool(p.get("celebrity")) for p in people)
    if celebrities != meta.get("celebrities", 0):
        problems.append(f"people.jsonl: {celebrities} celebrities, meta.json says {meta.get('celebrities', 0)}")
    seen = Counter((r.get("id"), r.get("attribute")) for r in data["qa"])
    if len(data["qa"]) != 6 * len(people) or any(n != 1 for n in seen.values()) or set(seen) != {
            (i, a) for i in by_id for a in ATTRIBUTES}:
        problems.append("qa.jsonl: must hold exactly one question per person and attribute")
    bad_qa = [r for r in data["qa"] if r.get("id") in by_id and r.get("attribute") in ATTRIBUTES and (
        r.get("answer") != by_id[r["id"]][r["attribute"]] or r.get("split") != by_id[r["id"]]["split"]
        or by_id[r["id"]]["name"] not in r.get("question", ""))]
    if bad_qa:
        problems.append(f"qa.jsonl: {len(bad_qa)} questions whose name, answer or split disagree with people.jsonl "
                        f"(first: id {bad_qa[0]['id']} {bad_qa[0]['attribute']})")
    if full and not problems:
        problems += check_texts(data, spec, celebrity_spec, by_id)
    return problems


def load_checked_data(data_dir):
    """load_data plus the cheap part of check_data: what training runs before it starts."""
    data = load_data(data_dir)
    problems = check_data(data, full=False)
    if problems:
        raise UserError(f"{data_dir}: {problems[0]} (`bioknow.py check {data_dir}` lists every problem)")
    return data


def check_texts(data, minority_spec, celebrity_spec, by_id):
    """check_data's full part: every text (a celebrity's under its own augmentation), counted by kind of problem."""
    tok, counts, first = Tokenizer(data["vocab"]), Counter(), {}

    def problem(kind, id_):
        counts[kind] += 1
        first.setdefault(kind, id_)

    for b in data["bios"]:
        person, text = by_id[b["id"]], b.get("text", "")
        spec = celebrity_spec if person.get("celebrity") else minority_spec
        try:
            found = value_positions(tok.encode(text), person, tok)
        except UserError:
            problem("bios.jsonl: entries with words outside vocab.json", b["id"])
            continue
        if len(found) < 6:
            problem("bios.jsonl: entries that do not mention all six values", b["id"])
        if data["meta"].get("bios_from"):
            continue  # the user's own texts: no template order or name count to hold them to
        if len(found) == 6 and not spec["permute"] and sorted(ATTRIBUTES, key=found.get) != list(ATTRIBUTES):
            problem("bios.jsonl: entries not in the fixed attribute order", b["id"])
        if text.count(person["name"]) != (6 if spec["fullname"] else 1):
            where = "in every sentence" if spec["fullname"] else "once"
            problem(f"bios.jsonl: entries that do not name their person {where}", b["id"])
    for r in data["qa"]:
        try:
            tok.encode(r["question"] + " " + r["answer"])
        except UserError:
            problem("qa.jsonl: questions with words outside vocab.json", r["id"])
    return [f"{kind}: {n} (first: id {first[kind]})" for kind, n in counts.items()]


# ----------------------------------------------------------------------------------------------------------------------
# --- tokenizer
# Word-level over a closed vocabulary (PAPER.md §9): every name part, value word and template word is one token, so
# nothing is downloaded and the vocabulary is a few thousand tokens (cheap softmax on a CPU).

TOKEN_RE = re.compile(r"[A-Za-z0-9&'\-]+|[.,?:]|\n")
EOS = "<eos>"
MASK = "<mask>"  # GBERT's mask token (paper §8); last in the vocabulary, so every other id is as it was before it
NO_SPACE_BEFORE = {".", ",", "?", ":", "\n"}


def words(text):
    return TOKEN_RE.findall(text)


def detokenize(tokens):
    out = []
    for i, t in enumerate(tokens):
        if i and t not in NO_SPACE_BEFORE and tokens[i - 1] != "\n":
            out.append(" ")
        out.append(t)
    return "".join(out)


def build_vocab():
    """The closed vocabulary: <eos> first, then every word any generator output can contain, sorted, then <mask>."""
    strings = [FIRST_NAMES, MIDDLE_NAMES, LAST_NAMES, MONTHS, CITIES, UNIVERSITIES, MAJORS, COMPANIES,
               [str(d) for d in DAYS], [str(y) for y in YEARS], QUESTIONS.values(), ["\nAnswer: ,."],
               [v for a in VARIANTS.values() for p in a.values() for w in p.values() for v in w]]
    vocab = set()
    for group in strings:
        for s in group:
            vocab.update(words(s.replace("{N}", "").replace("{V}", "")))
    return [EOS] + sorted(vocab) + [MASK]


class Tokenizer:
    def __init__(self, vocab):
        self.vocab = list(vocab)
        self.stoi = {w: i for i, w in enumerate(self.vocab)}
        self.eos, self.mask = self.stoi[EOS], self.stoi.get(MASK)

    def encode(self, text):
        try:
            return [self.stoi[w] for w in words(text)]
        except KeyError as e:
            raise UserError(f"word {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids):
        return detokenize([self.vocab[i] for i in ids])


# ----------------------------------------------------------------------------------------------------------------------
# --- model (paper §4): GPT-2 with pre-LayerNorm and rotary position embeddings on 1/4 of each head (GPT-NeoX style)

def rotary_tables(head_dim, rotary_frac, base, length):
    """cos and sin of each position's angles for the first `rot` dims of a head; sin's first half carries the minus
    sign of the rotation, so applying it is two products and a sum (no negation to run forward and backward)."""
    rot = int(head_dim * rotary_frac) // 2 * 2
    inv_freq = 1.0 / (base ** (torch.arange(0, rot, 2).float() / max(rot, 1)))
    angles = torch.outer(torch.arange(length).float(), inv_freq)  # (T, rot / 2)
    return torch.cat([angles.cos(), angles.cos()], dim=-1), torch.cat([-angles.sin(), angles.sin()], dim=-1)


def apply_rotary(x, cos, sin):
    """Rotate the first `rot` dims of each head by position, as pairs (i, i + rot/2); the rest pass through
    (x: ..., head_dim, with cos / sin broadcasting to x[..., :rot])."""
    rot = cos.shape[-1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    swapped = torch.cat([x_rot[..., rot // 2:], x_rot[..., :rot // 2]], dim=-1)
    return torch.cat([x_rot * cos + swapped * sin, x_pass], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.causal = cfg.n_head, cfg.objective != "mlm"  # GBERT (paper §8) attends both ways
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)  # one fused projection
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x, cos, sin, cache=None, start=0):
        """cache: this layer's (2, B, H, max_len, head_dim) key/value buffer for decoding; `start` is the position of
        x's first token. A prompt (start 0) attends causally (unless GBERT); one new token attends to everything
        cached."""
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head)
        # q and k rotated in one go, in the (B, T, H, head_dim) layout the attention kernels read fastest (README)
        qk = apply_rotary(qkv[:, :, :2], cos[:, None, None], sin[:, None, None])
        q, k, v = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
        if cache is not None:
            assert start == 0 or T == 1, "decode one token at a time after the prompt"
            cache[0, :, :, start:start + T], cache[1, :, :, start:start + T] = k, v
            k, v = cache[0, :, :, :start + T], cache[1, :, :, :start + T]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal and start == 0)  # flash kernel on GPU
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))  # exact GELU: 2x faster than the tanh form on a CPU (measured)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.n_embd), Attention(cfg)
        self.ln2, self.mlp = nn.LayerNorm(cfg.n_embd), MLP(cfg)

    def forward(self, x, cos, sin, cache=None, start=0):
        x = x + self.attn(self.ln1(x), cos, sin, cache, start)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg, vocab_size):
        super().__init__()
        # The embedding has rows up to a multiple of 64 (as nanoGPT pads GPT-2's 50,257 to 50,304): the output
        # matmuls run 4-6% faster on a CPU (README, "Speed"); the extra rows are never a target and never decoded.
        self.vocab_size, rows = vocab_size, -(-vocab_size // 64) * 64
        self.causal = cfg.objective != "mlm"
        self.wte = nn.Embedding(rows, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, rows, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2
        cos, sin = rotary_tables(cfg.n_embd // cfg.n_head, cfg.rotary_frac, cfg.rope_base, cfg.block_size)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:  # GPT-2 init; residual projections scaled down by depth
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def hidden(self, idx, cache=None, start=0, wte=None):
        """Last-layer hidden states (after the final LayerNorm): what the probes read (paper §6). With a cache
        (new_cache), idx continues a sequence at position `start`; `wte` replaces the input embedding (probes)."""
        T = idx.shape[1]
        assert start + T <= self.cos.shape[0], f"sequence of {start + T} tokens exceeds block_size {self.cos.shape[0]}"
        cos, sin = self.cos[start:start + T], self.sin[start:start + T]
        x = self.wte(idx) if wte is None else F.embedding(idx, wte)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, None if cache is None else cache[i], start)
        return self.ln_f(x)

    def new_cache(self, batch, length, dtype):
        """Key/value buffers for decoding `batch` sequences of up to `length` tokens."""
        attn = self.blocks[0].attn
        head_dim = self.wte.embedding_dim // attn.n_head
        return [self.wte.weight.new_empty(2, batch, attn.n_head, length, head_dim, dtype=dtype) for _ in self.blocks]

    def forward(self, idx, targets=None, cache=None, start=0):
        logits = self.lm_head(self.hidden(idx, cache, start))
        if targets is None:
            return logits[..., :self.vocab_size], None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss


# ----------------------------------------------------------------------------------------------------------------------
# --- training (paper §4): entries shuffled across people and packed with EOS into windows; budget in passes;
# mixed training draws each window from the biographies or from P_train QA (QA with probability qa_ratio).

def pick_device(name):
    if os.environ.get("LOCAL_RANK") and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{os.environ['LOCAL_RANK']}"  # torchrun: one GPU per process
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps: MPS is not available")
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown --device {name!r} (auto, cpu, cuda, mps)")
    return name


def device_type(device):
    return str(device).split(":")[0]


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encode_entries(texts, tok):
    """Token arrays of entries, each prefixed with EOS (the separator packing puts between entries)."""
    return [np.array([tok.eos] + tok.encode(t), dtype=np.int64) for t in texts]


class PackedStream:
    """An endless stream of packed windows. Pass k is every entry once, in an order drawn from (key, k), concatenated;
    windows of T+1 tokens are cut with stride T, so no token is padding and an entry may run across two windows (as
    in the paper). The tokens live on the training device and each pass is assembled there by one gather, so a GPU
    is never fed by a Python loader. The whole state is `pos`, the tokens consumed: a checkpoint stores it, and
    seek(pos) rebuilds the same stream on resume."""

    def __init__(self, entries, block_size, key, device="cpu", pos=0):
        lengths = np.array([len(e) for e in entries], dtype=np.int64)
        self.flat = torch.from_numpy(np.concatenate(entries)).to(device)
        self.starts = torch.from_numpy(np.cumsum(lengths) - lengths).to(device)
        self.lengths = torch.from_numpy(lengths).to(device)
        self.T, self.key, self.pass_len = block_size, list(key), int(lengths.sum())
        self.seek(pos)

    def pass_tokens(self, k):
        order = torch.from_numpy(np.random.default_rng(self.key + [k]).permutation(len(self.lengths)))
        order = order.to(self.flat.device)
        lengths = self.lengths[order]
        # token j of the pass is token j - (where its entry begins in the pass) of that entry in `flat`
        shift = torch.repeat_interleave(self.starts[order] - (torch.cumsum(lengths, 0) - lengths), lengths,
                                        output_size=self.pass_len)
        return self.flat[torch.arange(self.pass_len, device=self.flat.device) + shift]

    def seek(self, pos):
        k = pos // self.pass_len
        self.pos, self.next_pass = pos, k + 1
        self.buf = self.pass_tokens(k)[pos - k * self.pass_len:]  # starts at pos, ends where pass k ends

    def windows(self, n):
        """(n, T+1) windows, consecutive ones overlapping by one token."""
        if n == 0:
            return self.buf.new_empty((0, self.T + 1))
        while len(self.buf) < n * self.T + 1:
            self.buf = torch.cat([self.buf, self.pass_tokens(self.next_pass)])
            self.next_pass += 1
        out = self.buf[:n * self.T + 1].unfold(0, self.T + 1, self.T)
        self.buf, self.pos = self.buf[n * self.T:], self.pos + n * self.T
        return out


# GBERT (paper §8) learns by filling in masked words: 15% of a window's words are chosen (never EOS); of those, 80%
# become <mask>, 10% a random word and 10% stay as they are; the loss is on the chosen ones. The tokenizer is
# word-level, so whole-word masking is token masking. The draw is a function of (seed, step): a resumed run masks
# as the original would have.
MLM_RATE, MLM_MASKED, MLM_RANDOM = 0.15, 0.8, 0.1


def mlm_inputs(x, tok, key):
    """(inputs, targets) for masked-word training on windows x; targets are -1 except on the chosen words."""
    rng = np.random.default_rng(key)
    chosen = torch.from_numpy(rng.random(x.shape) < MLM_RATE).to(x.device) & (x != tok.eos)
    r = torch.from_numpy(rng.random(x.shape)).to(x.device)
    word = rng.integers(1, len(tok.vocab) - 1, x.shape)  # any word but EOS (id 0) and <mask>
    word = torch.from_numpy(word + (word >= tok.mask)).to(x.device)
    inputs = torch.where(chosen & (r < MLM_MASKED), tok.mask, x)
    inputs = torch.where(chosen & (r >= MLM_MASKED) & (r < MLM_MASKED + MLM_RANDOM), word, inputs)
    return inputs, torch.where(chosen, x, -1)


def pretraining_steps(cfg, data, bio_tokens):
    """Steps for cfg.passes over bioS-single-sized data: augmented data gets the same compute (PAPER.md §9)."""
    if cfg.steps > 0:
        return cfg.steps
    single_tokens = bio_tokens / (len(data["bios"]) / len(data["people"]))  # tokens of one entry a person
    return max(1, math.ceil(cfg.passes * single_tokens / (cfg.batch_size * cfg.block_size)))


def lr_at(step, total, cfg):
    """Linear warmup, then cosine from lr down to lr * min_lr_frac (paper §4)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model, cfg, device):
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [dict(params=decay, weight_decay=cfg.weight_decay), dict(params=no_decay, weight_decay=0.0)]
    cuda = device_type(device) == "cuda"  # fused kernel on CUDA; on CPU one op per step for all tensors (foreach)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=cfg.adam_eps, fused=cuda or None,
                             foreach=None if cuda else True)


def autocast(device):
    """bf16 autocast on CUDA; float32 elsewhere (bf16 on a CPU measured 12-17x slower for tiny models)."""
    if device_type(device) == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def tune_for(device):
    """CUDA: TF32 for the float32 matmuls autocast leaves. CPU (Linux): keep freed tensors in the process. glibc
    hands every block over 128 KB back to the kernel on free, so each step page-faults its logits and activations in
    afresh; keeping them measured 12.5k -> 16k tokens/s for the cpu preset on 2 cores (README, "Speed")."""
    if device_type(device) == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif device_type(device) == "cpu" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks up to 32 MB come from the heap, not mmap
            libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GB of freed heap for the next step
        except (OSError, AttributeError):  # not glibc: nothing to tune
            pass


def compiles(cfg, device):
    """--compile auto: on for CUDA, where it pays (fused kernels); off on CPU and MPS, where it did not (README)."""
    return cfg.compile == "on" or (cfg.compile == "auto" and device_type(device) == "cuda")


def maybe_compile(model, cfg, device):
    return torch.compile(model) if compiles(cfg, device) else model


def training_step(fwd, model, opt, x, y, cfg, lr, device):
    """One optimiser step (forward, backward, clip, AdamW); returns the loss tensor without a device sync."""
    for g in opt.param_groups:
        g["lr"] = lr
    with autocast(device):
        _, loss = fwd(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss.detach()


# Multi-GPU (or multi-process CPU) data parallelism: `torchrun --nproc_per_node=K bioknow.py train ...` starts K
# processes; each builds the same global batch from the same stream and trains on its own slice of the rows;
# DistributedDataParallel averages the gradients, so the run follows the single-process run of the same global batch.

def world():
    """(rank, world size) under torchrun, (0, 1) otherwise; joins the process group on first use."""
    size = int(os.environ.get("WORLD_SIZE", 1))
    if size > 1 and not torch.distributed.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return (torch.distributed.get_rank(), size) if size > 1 else (0, 1)


def barrier():
    if world()[1] > 1:
        torch.distributed.barrier()


def mean_over_ranks(value):
    if world()[1] > 1:
        value = value.clone()
        torch.distributed.all_reduce(value)
        value /= world()[1]
    return value


def run_steps(model, opt, cfg, device, start, total, next_batch, desc, quiet=False, log=None, save=None):
    """The optimisation loop shared by pretraining and finetuning, from step `start` (0, or a checkpoint's) to
    `total`: next_batch(step) -> (x, y) with y = -1 ignored; save(step) writes a checkpoint every cfg.ckpt_every
    steps and at the end. A non-finite loss stops the run before anything after it is saved. Under torchrun each
    process trains on its slice of the batch's rows and only rank 0 logs and saves."""
    rank, size = world()
    model.train()
    fwd = maybe_compile(model, cfg, device)
    if size > 1:
        fwd = torch.nn.parallel.DistributedDataParallel(fwd, device_ids=[torch.device(device).index]
                                                        if device_type(device) == "cuda" else None)
    first_bad = torch.full((), -1, device=device)  # first step with a non-finite loss; kept on the device: no sync
    last_saved, losses, tokens, since = start, [], 0, (time.time(), 0)  # tokens/s is over the last log interval

    def stop_if_diverged(step):
        bad = int(first_bad)
        if bad >= 0 or not all(bool(p.isfinite().all()) for p in model.parameters()):
            kept = f"the last good checkpoint (step {last_saved}) is kept" if last_saved else "no checkpoint written"
            raise UserError(f"non-finite loss at step {bad if bad >= 0 else step}: training stopped, {kept}; "
                            f"lower --lr and train again")

    bar = tqdm(range(start, total), desc=desc, unit="step", disable=quiet or rank > 0, mininterval=1, initial=start,
               total=total)
    for step in bar:
        x, y = next_batch(step)
        if size > 1:
            x, y = x.chunk(size)[rank], y.chunk(size)[rank]
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = training_step(fwd, model, opt, x, y, cfg, lr_at(step, total, cfg), device)
        first_bad = torch.where((first_bad < 0) & ~loss.isfinite(), step, first_bad)
        tokens += x.numel() * size
        if step % cfg.log_every == 0 or step == total - 1:
            stop_if_diverged(step)
            loss_value = mean_over_ranks(loss).item()
            rate, since = (tokens - since[1]) / (time.time() - since[0]), (time.time(), tokens)
            losses.append(dict(step=step, loss=round(loss_value, 4), lr=opt.param_groups[0]["lr"],
                               tokens_per_sec=round(rate)))
            bar.set_postfix(loss=f"{losses[-1]['loss']:.3f}", tok_s=f"{rate:,.0f}")
            if log and rank == 0:
                log(losses[-1])
        if save and (step + 1 == total or cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0):
            stop_if_diverged(step)  # never overwrite a good checkpoint with diverged weights
            if rank == 0:
                save(step + 1)
            last_saved = step + 1
    model.eval()
    return losses


def new_run_dir(out, force, resume=False):
    """Make --out for a fresh run (refusing to overwrite a run unless --force), or check it holds one to resume."""
    if resume and force:
        raise UserError("--resume and --force exclude each other (--force starts the run again)")
    if resume and not os.path.isfile(os.path.join(out, "model.pt")):
        again = "again with --force" if os.path.isdir(out) and os.listdir(out) else "without --resume"
        raise UserError(f"--resume: no checkpoint in {out} to resume from (start the run {again})")
    if not resume and os.path.exists(out) and os.listdir(out) and not force:
        raise UserError(f"{out} exists and is not empty (use --resume to continue it, --force to overwrite)")
    barrier()  # under torchrun: every process has checked before the first one writes
    if world()[0] > 0:
        return
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out) if resume else ():  # what a kill during a write left behind
        if ".tmp" in name:
            os.remove(os.path.join(out, name))


def rng_state():
    return dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, model, cfg, vocab, kind, step, total, opt=None, **extra):
    """RUN/model.pt: the weights and everything needed to continue: config, vocabulary, step and schedule length,
    optimiser moments, every RNG, and (in `extra`) the data streams' positions and the data's identity."""
    ckpt = dict(model=merged_state(model), config=dataclasses.asdict(cfg), vocab=vocab, kind=kind, step=step,
                total_steps=total, optimizer=opt.state_dict() if opt else None, rng=rng_state(), bioknow=VERSION,
                torch=torch.__version__, **extra)
    write_atomic(path, lambda tmp: torch.save(ckpt, tmp))


SHAPE = ("n_layer", "n_head", "n_embd", "block_size", "rotary_frac", "rope_base", "objective")


def read_checkpoint(run, vocab=None):
    """RUN/model.pt as a dict and its Config; refuses a missing or corrupt file and a data vocabulary the checkpoint
    does not know."""
    path = os.path.join(run, "model.pt")
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        cfg = Config(**ckpt["config"])
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"corrupt checkpoint {path}: {type(e).__name__}") from None
    if vocab is not None and list(vocab) != list(ckpt["vocab"]):
        raise UserError(f"checkpoint {path} was trained on another vocabulary ({len(ckpt['vocab'])} tokens) than "
                        f"this data ({len(vocab)} tokens)")
    return ckpt, cfg


def load_checkpoint(run, device="cpu", vocab=None, shape=None):
    """Load RUN/model.pt into a GPT (read_checkpoint's checks), refusing a model shape (`shape`: the fields a user
    asked for) other than the checkpoint's."""
    ckpt, cfg = read_checkpoint(run, vocab)
    path = os.path.join(run, "model.pt")
    for field, value in (shape or {}).items():
        if getattr(cfg, field) != value:
            raise UserError(f"checkpoint {path} is another model shape: {field} {getattr(cfg, field)}, asked for "
                            f"{value}")
    model = GPT(cfg, len(ckpt["vocab"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise UserError(f"checkpoint {path}: weights of another model shape than its config "
                        f"({cfg.n_layer}x{cfg.n_embd}, {cfg.n_head} heads)") from None
    return model.to(device).eval(), cfg, ckpt


def resume_state(out, kind, model, opt, cfg, data):
    """Restore a run to its last checkpoint: weights, optimiser, RNGs; returns the checkpoint (step, streams).
    Refuses to continue with another configuration or other data than the run started with."""
    ckpt, saved_cfg = read_checkpoint(out, data["vocab"])
    if ckpt.get("kind") != kind or ckpt.get("optimizer") is None:
        raise UserError(f"--resume: {out}/model.pt is not a {kind} checkpoint with training state to continue")
    may_change = {"device", "compile", "ckpt_every", "log_every"}  # how it runs, not what it computes
    for field, value in dataclasses.asdict(cfg).items():
        if field not in may_change and getattr(saved_cfg, field) != value:
            raise UserError(f"--resume: {field} is {value!r} here but {getattr(saved_cfg, field)!r} in {out} "
                            f"(resume with the run's own flags)")
    if ckpt.get("data") != data_identity(data):
        raise UserError(f"--resume: {data['dir']} is not the data {out} was trained on")
    if ckpt.get("lora"):  # LoRA: the base is the pretrained run, as loaded; continue the adapters
        assert not model.load_state_dict(ckpt["lora"], strict=False).unexpected_keys
    else:
        model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    return ckpt


def data_identity(data):
    """What a checkpoint records of its data: generation parameters and size (not the path, which may move)."""
    meta = data["meta"]
    return dict(people=meta.get("people"), aug=meta.get("aug"), seed=meta.get("seed"), entries=len(data["bios"])) | (
        dict(bios_from=meta["bios_from"]) if meta.get("bios_from") else {})


def run_log(out, start=0):
    """RUN/log.jsonl, one row a logged step; on resume the rows from `start` on are dropped (they are redone)."""
    if world()[0] > 0:
        return None
    path = os.path.join(out, "log.jsonl")
    rows = []
    if start and os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by the kill
                    pass
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows if r["step"] < start))

    def log(row):
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    return log


def run_config(out, cfg, **extra):
    """RUN/config.json: every hyper-parameter, the preset and seed, and where the numbers came from."""
    if world()[0] == 0:
        write_json(os.path.join(out, "config.json"), dict(dataclasses.asdict(cfg), **extra, torch=torch.__version__,
                                                          bioknow=VERSION, commit=git_commit(), processes=world()[1]))


def train(cfg, data_dir, out, force=False, quiet=False, resume=False):
    """Pretrain from scratch on biographies (mode bio) or biographies + P_train QA (mode mixed); writes RUN/model.pt.
    With resume, continue RUN from its last checkpoint exactly as if it had never stopped."""
    if cfg.mode not in ("bio", "mixed"):
        raise UserError(f"unknown --mode {cfg.mode!r} (bio or mixed)")
    if not 0.0 <= cfg.qa_ratio <= 1.0:
        raise UserError(f"--qa-ratio must be in [0, 1], got {cfg.qa_ratio}")
    if cfg.objective not in ("clm", "mlm"):
        raise UserError(f"unknown --objective {cfg.objective!r} (clm or mlm)")
    data = load_checked_data(data_dir)
    if cfg.objective == "mlm" and MASK not in data["vocab"]:
        raise UserError(f"{data_dir}/vocab.json has no {MASK} token for --objective mlm (generate the data again)")
    device = pick_device(cfg.device)
    if cfg.batch_size % world()[1]:
        raise UserError(f"--batch-size {cfg.batch_size} does not split over {world()[1]} processes")
    new_run_dir(out, force, resume)
    tune_for(device)
    seed_everything(cfg.seed)
    tok = Tokenizer(data["vocab"])
    bios = encode_entries([b["text"] for b in data["bios"]], tok)
    total = pretraining_steps(cfg, data, sum(len(b) for b in bios))
    model = GPT(cfg, len(tok.vocab)).to(device)
    opt = make_optimizer(model, cfg, device)
    # The data order is a function of (seed, stream, pass) and the mixing draw one of (seed, step), so the two
    # stream positions are all a checkpoint needs to replay the same batches.
    streams = dict(bio=PackedStream(bios, cfg.block_size, key=(cfg.seed, 0), device=device))
    if cfg.mode == "mixed":
        qa = [qa_text(r["question"], r["answer"]) for r in data["qa"] if r["split"] == "train"]
        streams["qa"] = PackedStream(encode_entries(qa, tok), cfg.block_size, key=(cfg.seed, 1), device=device)
    start = 0
    if resume:
        ckpt = resume_state(out, "pretrain", model, opt, cfg, data)
        start = ckpt["step"]
        for name, pos in ckpt["streams"].items():
            streams[name].seek(pos)
    else:
        run_config(out, cfg, data=os.path.abspath(data_dir), steps_resolved=total)

    def next_batch(step):
        n_qa = int(np.random.default_rng([cfg.seed, 2, step]).binomial(cfg.batch_size, cfg.qa_ratio)) \
            if "qa" in streams else 0
        w = torch.cat([streams["bio"].windows(cfg.batch_size - n_qa)] + ([streams["qa"].windows(n_qa)] if n_qa else []))
        return mlm_inputs(w[:, :-1], tok, [cfg.seed, 4, step]) if cfg.objective == "mlm" else (w[:, :-1], w[:, 1:])

    def save(step):
        save_checkpoint(os.path.join(out, "model.pt"), model, cfg, tok.vocab, "pretrain", step, total, opt,
                        streams={k: s.pos for k, s in streams.items()}, data=data_identity(data))

    t0 = time.time()
    losses = run_steps(model, opt, cfg, device, start, total, next_batch, f"train {cfg.mode}", quiet,
                       run_log(out, start), save)
    return model, dict(steps=total, resumed_from=start, final_loss=final_loss(out, losses),
                       minutes=(time.time() - t0) / 60)


def final_loss(out, losses):
    """The last logged loss (from the log when a resumed run had nothing left to do)."""
    if losses:
        return losses[-1]["loss"]
    rows = read_jsonl(os.path.join(out, "log.jsonl"))
    return rows[-1]["loss"] if rows else None


# ----------------------------------------------------------------------------------------------------------------------
# --- QA finetuning and evaluation (paper §3-4): loss on the answer tokens only; greedy decoding, exact match of the
# whole value. Finetuning uses P_train questions only; P_test is only ever evaluated.

def qa_prompt(tok, question):
    """EOS question \\n Answer: -- what the model sees before an answer, in finetuning and in evaluation."""
    return [tok.eos] + tok.encode(question + "\nAnswer:")


def qa_example(tok, row):
    """(tokens, targets) for one QA pair: EOS question \\n Answer: value . EOS, targets -1 except on the answer."""
    prompt = qa_prompt(tok, row["question"])
    answer = tok.encode(f" {row['answer']}.") + [tok.eos]
    tokens = prompt + answer
    targets = answer_only_targets(tokens, len(prompt))
    return tokens[:-1], targets


def mlm_qa_example(tok, row):
    """GBERT's QA pair (paper §8): EOS question \\n Answer: then one <mask> per answer token, '.' EOS; the targets
    are the answer's tokens on the masks, -1 elsewhere."""
    prompt = qa_prompt(tok, row["question"])
    answer = tok.encode(" " + row["answer"])
    return prompt + [tok.mask] * len(answer) + tok.encode(".") + [tok.eos], [-1] * len(prompt) + answer + [-1, -1]


def answer_only_targets(tokens, prompt_len):
    """Next-token targets with every position that predicts a prompt token masked to -1."""
    targets = list(tokens[1:])
    for i in range(prompt_len - 1):
        targets[i] = -1
    return targets


def pad_batch(rows, pad):
    T = max(len(x) for x, _ in rows)
    x = torch.full((len(rows), T), pad, dtype=torch.long)
    y = torch.full((len(rows), T), -1, dtype=torch.long)
    for i, (xs, ys) in enumerate(rows):
        x[i, :len(xs)], y[i, :len(ys)] = torch.tensor(xs), torch.tensor(ys)
    return x, y


def split_holdout(people, fraction, seed):
    """P_train ids for finetuning, and the held-out P_train ids used to choose the recipe (never P_test)."""
    train_ids = sorted(p["id"] for p in people if p["split"] == "train")
    rng = random.Random(seed)
    held = set(rng.sample(train_ids, int(len(train_ids) * fraction))) if fraction > 0 else set()
    return set(train_ids) - held, held


class LowRankUpdate(nn.Module):
    """W -> W + B @ A on chosen row blocks of W: a LoRA adapter (paper §4; Hu et al. 2021) written as a
    parametrization, so the model's code is unchanged and the merged weight is simply `module.weight`. B starts at
    zero, so finetuning starts from the pretrained model; only A and B train."""

    def __init__(self, shape, rank, blocks=1, active=(0,)):
        super().__init__()
        rows, cols = shape
        self.blocks, self.active = blocks, active
        self.A = nn.ParameterList(nn.Parameter(torch.randn(rank, cols) * cols ** -0.5) for _ in active)
        self.B = nn.ParameterList(nn.Parameter(torch.zeros(rows // blocks, rank)) for _ in active)

    def forward(self, W):
        parts = list(W.chunk(self.blocks))
        for i, a, b in zip(self.active, self.A, self.B):
            parts[i] = parts[i] + b @ a
        return torch.cat(parts)


def add_lora(model, rank_qv, rank_emb):
    """Freeze the model and add LoRA: rank_qv on each layer's query and value (blocks 0 and 2 of the fused qkv
    projection), rank_emb on the embedding. The embedding is tied to the output layer, so one update serves both
    and merging stays exact."""
    model.requires_grad_(False)
    if rank_qv:
        for block in model.blocks:
            qkv = block.attn.qkv
            parametrize.register_parametrization(qkv, "weight", LowRankUpdate(qkv.weight.shape, rank_qv, 3, (0, 2)))
    if rank_emb:
        update = LowRankUpdate(model.wte.weight.shape, rank_emb)
        for module in (model.wte, model.lm_head):
            parametrize.register_parametrization(module, "weight", update)
    return model


def lora_state(model):
    """The adapters' tensors by name: what a LoRA checkpoint needs besides the base run to continue."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if "parametrizations" in k and
            ".original" not in k}


def merged_state(model):
    """The weights with every LoRA update folded in: a plain GPT state dict that eval and probe load as is."""
    state = {k: v for k, v in model.state_dict().items() if ".parametrizations." not in k}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            state[f"{name}.weight"] = module.weight.detach().clone()  # W + B @ A
    return state


def finetune(cfg, run, data_dir, out, force=False, quiet=False, resume=False, shape=None):
    """QA finetuning of a pretrained run on P_train questions (paper §4): full, or LoRA (cfg.lora_qv, cfg.lora_emb)
    with the base frozen and the adapters merged into the saved weights. The model's shape comes from the
    pretrained checkpoint; `shape` holds the shape flags a user gave, which must agree with it."""
    if world()[1] > 1:
        raise UserError("finetune runs in one process (QA finetuning takes minutes); use torchrun for train")
    if cfg.lora_qv < 0 or cfg.lora_emb < 0:
        raise UserError(f"LoRA ranks must be >= 0 (got --lora-qv {cfg.lora_qv}, --lora-emb {cfg.lora_emb})")
    data = load_checked_data(data_dir)
    device = pick_device(cfg.device)
    model, base_cfg, _ = load_checkpoint(run, device, data["vocab"], shape)
    for field in SHAPE:
        setattr(cfg, field, getattr(base_cfg, field))
    new_run_dir(out, force, resume)
    seed_everything(cfg.seed)
    if cfg.lora_qv or cfg.lora_emb:
        add_lora(model, cfg.lora_qv, cfg.lora_emb)  # after seeding: the adapters' start is part of the run
    tok = Tokenizer(data["vocab"])
    train_ids, held = split_holdout(data["people"], cfg.holdout, cfg.seed)
    example = mlm_qa_example if cfg.objective == "mlm" else qa_example
    examples = [example(tok, r) for r in data["qa"] if r["id"] in train_ids]
    per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = cfg.steps if cfg.steps > 0 else max(1, math.ceil(cfg.passes * per_epoch))
    opt = make_optimizer(model, cfg, device)
    start = resume_state(out, "finetune", model, opt, cfg, data)["step"] if resume else 0
    if not resume:
        run_config(out, cfg, base=os.path.abspath(run), data=os.path.abspath(data_dir), steps_resolved=total,
                   holdout_ids=sorted(held))
    x_all, y_all = (t.to(device) for t in pad_batch(examples, tok.eos))  # every example, resident on the device
    lengths, orders = np.array([len(x) for x, _ in examples]), {}

    def next_batch(step):
        """Epoch e visits the examples in an order drawn from (seed, e): a function of the step, so resumable. A
        batch is cut to its longest example."""
        epoch, i = divmod(step, per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = np.random.default_rng([cfg.seed, 3, epoch]).permutation(len(examples))
        rows = orders[epoch][i * cfg.batch_size:(i + 1) * cfg.batch_size]
        idx, T = torch.from_numpy(rows).to(device), int(lengths[rows].max())
        return x_all[idx, :T], y_all[idx, :T]

    def save(step):
        save_checkpoint(os.path.join(out, "model.pt"), model, cfg, tok.vocab, "finetune", step, total, opt,
                        data=data_identity(data), holdout_ids=sorted(held), lora=lora_state(model))

    t0 = time.time()
    losses = run_steps(model, opt, cfg, device, start, total, next_batch, "finetune", quiet, run_log(out, start), save)
    return model, dict(steps=total, resumed_from=start, final_loss=final_loss(out, losses),
                       minutes=(time.time() - t0) / 60, holdout_ids=held)


@torch.no_grad()
def greedy_answers(model, prompts, max_new, eos, device):
    """Greedy decoding for same-length prompts (B, P), the whole batch at once with a key/value cache: one forward
    over the prompts, then one token per step. Returns (B, max_new) generated token ids."""
    x = prompts.to(device)
    B, P = x.shape
    cache = model.new_cache(B, P + max_new, torch.bfloat16 if device_type(device) == "cuda" else torch.float32)
    out, start = [], 0
    for _ in range(max_new):
        with autocast(device):
            logits, _ = model(x, cache=cache, start=start)
        start += x.shape[1]
        x = logits[:, -1].argmax(-1, keepdim=True)
        out.append(x)
    return torch.cat(out, dim=1).cpu()


def exact_match(generated, answer_ids, eos):
    """True when the generated tokens up to the first EOS are exactly the answer's tokens (value and final '.')."""
    generated = list(generated)
    if eos in generated:
        generated = generated[:generated.index(eos)]
    return generated == list(answer_ids)


@torch.no_grad()
def qa_accuracies(model, tok, rows, device, batch_size=1024, quiet=True):
    """Exact-match and first-token accuracy (%) per attribute and mean, from one greedy decoding (first token: only
    the answer's first token must match, the paper's Figure 2 measure for P_train). Names are three tokens, so each
    attribute's questions have one length and batch without padding."""
    if not model.causal:
        return mlm_qa_accuracies(model, tok, rows, device, batch_size)
    correct, first = {a: [] for a in ATTRIBUTES}, {a: [] for a in ATTRIBUTES}
    groups = {}
    for r in rows:
        prompt = qa_prompt(tok, r["question"])
        groups.setdefault((r["attribute"], len(prompt)), []).append((prompt, tok.encode(f" {r['answer']}.")))
    for (attr, _), items in tqdm(groups.items(), desc="eval QA", disable=quiet):
        max_new = max(len(a) for _, a in items) + 1
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            gen = greedy_answers(model, torch.tensor([p for p, _ in chunk]), max_new, tok.eos, device)
            correct[attr] += [exact_match(g.tolist(), a, tok.eos) for g, (_, a) in zip(gen, chunk)]
            first[attr] += [g[0].item() == a[0] for g, (_, a) in zip(gen, chunk)]
    return percentages(correct), percentages(first)


@torch.no_grad()
def mlm_qa_accuracies(model, tok, rows, device, batch_size=1024):
    """GBERT's QA (paper §8): the question and one <mask> per answer token, all filled in by one forward pass;
    correct only when every mask is. Grouped by (attribute, length), so no padding."""
    correct, first, groups = {a: [] for a in ATTRIBUTES}, {a: [] for a in ATTRIBUTES}, {}
    for r in rows:
        tokens, targets = mlm_qa_example(tok, r)
        groups.setdefault((r["attribute"], len(tokens)), []).append((tokens, targets))
    for (attr, _), items in groups.items():
        for i in range(0, len(items), batch_size):
            tokens, targets = zip(*items[i:i + batch_size])
            pred, y = predicted_tokens(model, list(tokens), tok.eos, device), torch.tensor(targets)
            on_mask = y >= 0
            correct[attr] += ((pred == y) | ~on_mask).all(1).tolist()
            first[attr] += (pred == y)[on_mask.cumsum(1) * on_mask == 1].tolist()  # each row's first mask
    return percentages(correct), percentages(first)


def qa_accuracy(model, tok, rows, device, batch_size=1024, quiet=True):
    """Exact-match accuracy (%) per attribute and mean."""
    return qa_accuracies(model, tok, rows, device, batch_size, quiet)[0]


def percentages(correct):
    acc = {a: round(100.0 * sum(v) / len(v), 2) if v else None for a, v in correct.items()}
    present = [v for v in acc.values() if v is not None]
    acc["mean"] = round(sum(present) / len(present), 2) if present else None
    return acc


def value_positions(tokens, person, tok):
    """Index of each attribute's first value token in an entry, found by value match (so it works for any sentence
    order); longer values are placed first so a city inside nothing else is never taken twice."""
    taken, found = set(), {}
    for attr in sorted(ATTRIBUTES, key=lambda a: -len(person[a])):
        value = tok.encode(person[attr])
        for i in range(len(tokens) - len(value) + 1):
            if tokens[i:i + len(value)] == value and not taken & set(range(i, i + len(value))):
                found[attr] = i
                taken |= set(range(i, i + len(value)))
                break
    return found


def first_entries(data):
    """Each person's first biography entry, by id."""
    first = {}
    for b in data["bios"]:
        first.setdefault(b["id"], b["text"])
    return first


@torch.no_grad()
def predicted_tokens(model, seqs, pad, device):
    """The model's argmax token at every position of each sequence, the batch padded at the end with `pad`."""
    T = max(len(s) for s in seqs)
    x = torch.tensor([s + [pad] * (T - len(s)) for s in seqs])
    with autocast(device):
        return model(x.to(device))[0].argmax(-1).cpu()


@torch.no_grad()
def bio_memorization(model, tok, data, device, max_people=4000, batch_size=256):
    """First-token accuracy (%) of every attribute inside a person's first biography entry: the model, fed the
    entry, predicts the attribute's first token at the position just before it (paper §4 "> 99%")."""
    by_id = {p["id"]: p for p in data["people"]}
    first_entry = first_entries(data)
    ids = sorted(first_entry)[:max_people]
    correct = {a: [] for a in ATTRIBUTES}
    if not model.causal:
        return mlm_bio_memorization(model, tok, by_id, first_entry, ids, device, batch_size)
    for i in range(0, len(ids), batch_size):
        seqs = [([tok.eos] + tok.encode(first_entry[j]))[:model.cos.shape[0]] for j in ids[i:i + batch_size]]
        pred = predicted_tokens(model, seqs, tok.eos, device)
        for s, p, j in zip(seqs, pred, ids[i:i + batch_size]):
            for attr, pos in value_positions(s, by_id[j], tok).items():
                correct[attr].append(bool(p[pos - 1] == s[pos]))
    return percentages(correct)


@torch.no_grad()
def mlm_bio_memorization(model, tok, by_id, first_entry, ids, device, batch_size):
    """GBERT's memorisation: each attribute's whole value masked in turn (one copy of the entry per attribute),
    first-token accuracy of the filled-in value."""
    correct = {a: [] for a in ATTRIBUTES}
    for i in range(0, len(ids), batch_size):
        seqs, where = [], []
        for j in ids[i:i + batch_size]:
            s = ([tok.eos] + tok.encode(first_entry[j]))[:model.cos.shape[0]]
            for attr, pos in value_positions(s, by_id[j], tok).items():
                n = len(tok.encode(by_id[j][attr]))
                seqs.append(s[:pos] + [tok.mask] * n + s[pos + n:])
                where.append((attr, pos, s[pos]))
        pred = predicted_tokens(model, seqs, tok.eos, device)
        for p, (attr, pos, want) in zip(pred, where):
            correct[attr].append(bool(p[pos] == want))
    return percentages(correct)


def evaluate(model, data, device, quiet=True):
    """One reproduce row's numbers: memorisation of the biographies, QA on P_train and on P_test."""
    tok = Tokenizer(data["vocab"])
    mem = bio_memorization(model, tok, data, device)
    qa_train = qa_accuracy(model, tok, [r for r in data["qa"] if r["split"] == "train"], device, quiet=quiet)
    qa_test = qa_accuracy(model, tok, [r for r in data["qa"] if r["split"] == "test"], device, quiet=quiet)
    return dict(bio_memorization=mem["mean"], bio_memorization_min=min(mem[a] for a in ATTRIBUTES),
                bio_memorization_per_attribute=mem, qa_train=qa_train, qa_test=qa_test)


# ----------------------------------------------------------------------------------------------------------------------
# --- probing (paper §6, Figures 5-7): where does the frozen pretrained model keep each fact?
# A linear read-out of the last layer at one position: if it recovers an attribute for people it was not trained on,
# the attribute is (nearly) linearly stored there. P-probing reads a biography just before each attribute; Q-probing
# reads the bare full name. Trainable: per target attribute a low-rank update of the input embedding (rank 2 for P,
# 16 for Q, as the paper), a normalisation and linear classifiers. The model's weights never change.

PROBE_KINDS = {"first_token": ATTRIBUTES, "whole": ATTRIBUTES[1:]}  # first token (birth date: the month), whole value
# Phase 1 of every probe (fit_probe): full-batch steps and learning rate fitting the read-outs on the frozen features.
# 300 steps at 3e-3 match 1,000 at the paper's 1e-3 to within 1.2 points on every cell of the cpu-preset grids (README).
PROBE_HEAD_STEPS, PROBE_HEAD_LR = 300, 3e-3


def probe_labels(people, tok):
    """Class ids, person by person, for every (kind, attribute): numbered over all people so train and test share."""
    labels = {}
    for kind, attrs in PROBE_KINDS.items():
        for attr in attrs:
            keys = [tok.encode(p[attr])[0] if kind == "first_token" else p[attr] for p in people]
            index = {k: i for i, k in enumerate(sorted(set(keys), key=str))}
            labels[kind, attr] = torch.tensor([index[k] for k in keys])
    return labels


def p_probe_positions(tokens, person, tok):
    """The six read positions of an entry, in sentence order: the token just before each attribute's first token."""
    return sorted(i - 1 for i in value_positions(tokens, person, tok).values())


def p_probe_inputs(data, tok):
    """Each person's first biography entry (EOS first, as in training) and its six read positions."""
    first = first_entries(data)
    seqs, positions = [], []
    for p in data["people"]:
        tokens = [tok.eos] + tok.encode(first[p["id"]])
        seqs.append(tokens)
        positions.append(p_probe_positions(tokens, p, tok))
    return seqs, positions


def q_probe_inputs(data, tok, read="name"):
    """The bare full name after a start token (EOS). read="name": read at the name's last token; read="end": an end
    token (EOS) follows the name and is read, as the paper describes. README, "Probing", says why "name" is ours."""
    seqs = [[tok.eos] + tok.encode(p["name"]) + ([tok.eos] if read == "end" else []) for p in data["people"]]
    return seqs, [[len(s) - 1] for s in seqs]


class ProbeHeads(nn.Module):
    """One read-out per position, stacked on a leading position axis so all positions train in one matmul:
    a normalisation (LayerNorm for P-probing, BatchNorm for Q-probing, paper §6) and a linear classifier."""

    def __init__(self, n_pos, dim, classes, norm):
        super().__init__()
        self.norm = norm
        self.gamma, self.beta = nn.Parameter(torch.ones(n_pos, dim)), nn.Parameter(torch.zeros(n_pos, dim))
        self.weight = nn.Parameter(torch.empty(n_pos, dim, classes).uniform_(-dim ** -0.5, dim ** -0.5))
        self.bias = nn.Parameter(torch.zeros(n_pos, classes))
        if norm == "batch":
            self.register_buffer("running_mean", torch.zeros(n_pos, dim))
            self.register_buffer("running_var", torch.ones(n_pos, dim))

    def forward(self, f):  # f: (batch, positions, dim) -> logits (batch, positions, classes)
        if self.norm == "layer":
            f = F.layer_norm(f, f.shape[-1:])
        else:
            if self.training:
                mean, var = f.mean(0), f.var(0, unbiased=False)
                with torch.no_grad():
                    self.running_mean.lerp_(mean, 0.1)
                    self.running_var.lerp_(var, 0.1)
            else:
                mean, var = self.running_mean, self.running_var
            f = (f - mean) * torch.rsqrt(var + 1e-5)
        return torch.einsum("bpd,pdc->bpc", f * self.gamma + self.beta, self.weight) + self.bias


def new_probes(wte, rank, norm, n_pos, labels, device):
    """Per target attribute: a rank-`rank` update A @ B of the input embedding (B = 0 at first, so the probe starts
    from the model as trained) and, per kind (first token, whole value), read-outs at every position."""
    probes = {}
    for attr in ATTRIBUTES:
        a = (torch.randn(wte.shape[0], rank, device=device) * 0.02).requires_grad_()
        b = torch.zeros(rank, wte.shape[1], device=device, requires_grad=True)
        heads = nn.ModuleDict({kind: ProbeHeads(n_pos, wte.shape[1], int(labels[kind, attr].max()) + 1, norm)
                               for kind in PROBE_KINDS if attr in PROBE_KINDS[kind]})
        probes[attr] = (a, b, heads.to(device))
    return probes


def probe_loss(probes, feats, y_all, ids):
    """Cross-entropy summed over target attributes, kinds and read positions; feats(attr) -> (batch, positions, D)."""
    loss = 0.0
    for attr, (_, _, heads) in probes.items():
        f = feats(attr)
        for kind, head in heads.items():
            logits = head(f)
            y = y_all[kind, attr][ids]
            loss = loss + F.cross_entropy(logits.flatten(0, 1), y.repeat_interleave(logits.shape[1]),
                                          reduction="sum") / len(ids)
    return loss


def linear_decay(opt, lr, step, steps):
    for g in opt.param_groups:
        g["lr"] = lr * (1 - step / steps)  # paper §6


def fit_probe(model, seqs, positions, labels, train_ids, test_ids, rank, norm, steps, batch_size, device, seed=0,
              lr=1e-3, weight_decay=0.3, dropout=0.1, head_steps=None, quiet=True):
    """Train one probe per target attribute on train_ids, score test_ids: accuracy (%) per (kind, attribute) and
    read position, plus the majority-guess baseline. The model is frozen; gradients reach only the probe.
    Two phases, one probe: (1) with the embedding update still zero the model's features are fixed, so they are
    computed once and the read-outs train on them full-batch for `head_steps` steps (seconds); (2) update and
    read-outs then train together on mini-batches for `steps` steps (each needs a forward and backward pass of the
    model per attribute: the costly part, which the paper runs for 30k steps)."""
    torch.manual_seed(seed)
    head_steps = PROBE_HEAD_STEPS if head_steps is None else head_steps
    model.requires_grad_(False)
    wte = model.wte.weight
    T = max(len(s) for s in seqs)
    x_all = torch.tensor([s + [s[-1]] * (T - len(s)) for s in seqs], device=device)  # causal: padding after is inert
    pos_all, n_pos = torch.tensor(positions, device=device), len(positions[0])
    probes = new_probes(wte, rank, norm, n_pos, labels, device)
    heads = [p for _, _, h in probes.values() for p in h.parameters()]
    y_all = {k: v.to(device) for k, v in labels.items()}
    train_ids, rng = torch.tensor(sorted(train_ids), device=device), np.random.default_rng(seed)

    def features(attr, ids, chunk=512):
        """Last layer at the read positions, the input embedding updated by attr's A @ B (attr None: unchanged)."""
        w = wte if attr is None else wte + probes[attr][0] @ probes[attr][1]
        h = [model.hidden(x_all[ids[i:i + chunk]], wte=w) for i in range(0, len(ids), chunk)]
        return torch.cat(h)[torch.arange(len(ids), device=device)[:, None], pos_all[ids]]  # (B, positions, D)

    with torch.no_grad():
        frozen = features(None, train_ids)
    opt = torch.optim.AdamW(heads, lr=PROBE_HEAD_LR, weight_decay=weight_decay)
    for step in tqdm(range(head_steps), desc="probe read-outs", disable=quiet, mininterval=1):
        linear_decay(opt, PROBE_HEAD_LR, step, head_steps)
        dropped = F.dropout(frozen, dropout)  # one mask a step for all read-outs: masks cost more than the matmuls
        loss = probe_loss(probes, lambda attr: dropped, y_all, train_ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    opt = torch.optim.AdamW([p for a, b, _ in probes.values() for p in (a, b)] + heads, lr=lr,
                            weight_decay=weight_decay)
    for step in tqdm(range(steps), desc="probe + embedding update", disable=quiet, mininterval=1):
        linear_decay(opt, lr, step, steps)
        picked = rng.choice(len(train_ids), min(batch_size, len(train_ids)), replace=False)
        ids = train_ids[torch.from_numpy(picked).to(device)]
        loss = probe_loss(probes, lambda attr: F.dropout(features(attr, ids), dropout), y_all, ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return score_probe(probes, features, y_all, train_ids, torch.tensor(sorted(test_ids), device=device))


@torch.no_grad()
def score_probe(probes, features, y_all, train_ids, test_ids):
    result = {kind: {} for kind in PROBE_KINDS} | {"baseline": {kind: {} for kind in PROBE_KINDS}}
    for attr, (_, _, heads) in probes.items():
        heads.eval()
        f = features(attr, test_ids)
        for kind, head in heads.items():
            y = y_all[kind, attr][test_ids]
            result[kind][attr] = [round(v, 2) for v in (100.0 * (head(f).argmax(-1) == y[:, None]).float().mean(0))
                                  .tolist()]
            majority = torch.bincount(y_all[kind, attr][train_ids]).argmax()
            result["baseline"][kind][attr] = round(100.0 * (y == majority).float().mean().item(), 2)
    return result


def probe(run, data_dir, kinds=("p", "q"), steps=None, device="auto", seed=0, quiet=False, lr=1e-3,
          head_steps=None, q_read="name"):
    """P- and/or Q-probe a pretrained run on P_train people, scored on P_test people (PAPER.md §9). Accuracies in %:
    p_probe[kind] is a grid, one row per attribute of p_probe["attributes"][kind], one column per read position
    (sentence order; Figure 5); q_probe[kind] maps attribute -> accuracy (Figure 7); "baseline" is the majority
    guess per kind and attribute."""
    data = load_checked_data(data_dir)
    device = pick_device(device)
    model, cfg, _ = load_checkpoint(run, device, data["vocab"])
    tok = Tokenizer(data["vocab"])
    labels = probe_labels(data["people"], tok)
    train_ids = [p["id"] for p in data["people"] if p["split"] == "train"]
    test_ids = [p["id"] for p in data["people"] if p["split"] == "test"]
    steps = cfg.probe_steps if steps is None else steps  # the run's own (its preset's unless overridden)
    result = {}
    if "p" in kinds:
        seqs, positions = p_probe_inputs(data, tok)
        grid = fit_probe(model, seqs, positions, labels, train_ids, test_ids, 2, "layer", steps, 50, device, seed,
                         lr=lr, head_steps=head_steps, quiet=quiet)
        result["p_probe"] = {kind: [grid[kind][a] for a in attrs] for kind, attrs in PROBE_KINDS.items()} | {
            "attributes": {kind: list(attrs) for kind, attrs in PROBE_KINDS.items()}, "baseline": grid["baseline"]}
    if "q" in kinds:
        seqs, positions = q_probe_inputs(data, tok, q_read)
        q = fit_probe(model, seqs, positions, labels, train_ids, test_ids, 16, "batch", steps, 200, device, seed,
                      lr=lr, head_steps=head_steps, quiet=quiet)
        result["q_probe"] = {kind: {a: v[0] for a, v in accs.items()} for kind, accs in q.items() if kind in
                             PROBE_KINDS} | {"baseline": q["baseline"]}
    return result


# ----------------------------------------------------------------------------------------------------------------------
# --- experiments: the paper's headline comparison (PAPER.md §5), our numbers beside the paper's

REPRODUCE_ROWS = (("single", "qa_finetune"), ("multi5+permute+fullname", "qa_finetune"), ("single", "mixed"))
# What the default preset must show (issue 2): memorised yet not extractable; augmentation and mixing fix it.
THRESHOLDS = {
    ("single", "qa_finetune"): "bio memorisation >= 95% on every attribute, P_test mean <= 20%",
    ("multi5+permute+fullname", "qa_finetune"): "P_test mean >= 70%",
    ("single", "mixed"): "P_test mean >= 60%",
}


# Probes run on each row's pretrained model: P-probing on the biography-pretrained ones (Figure 5 compares single
# with the augmented setting), Q-probing on all, to set Q-probe accuracy beside QA accuracy row by row (Result 5).
REPRODUCE_PROBES = {"qa_finetune": ("p", "q"), "mixed": ("q",)}


# The mixed-training sweep of REPORT.md (`reproduce --table mixed-sweep`): bioS single, mixed training, each line a
# set of overrides of the cpu preset. Passes and width are the levers; hours on a CPU, minutes on a GPU.
MIXED_SWEEP = [dict(people=n, passes=p, **kw) for n, p, kw in [
    (500, 200, {}), (500, 400, {}), (1000, 100, {}), (1000, 200, {}), (1000, 400, {}), (2000, 200, {}),
    (4000, 200, {}), (8000, 100, {}), (1000, 100, dict(n_layer=1)), (1000, 200, dict(n_layer=4)),
    (2000, 200, dict(n_layer=4)), (1000, 100, dict(n_embd=192)), (1000, 100, dict(n_embd=256, lr=2e-3)),
    (2000, 200, dict(n_embd=256, lr=2e-3)), (1000, 100, dict(n_head=2)), (1000, 100, dict(n_head=8)),
    (1000, 100, dict(rotary_frac=1.0)), (1000, 100, dict(lr=6e-3)), (1000, 100, dict(lr=1e-2, warmup_steps=100)),
    (2000, 200, dict(lr=1e-3)), (1000, 100, dict(weight_decay=0.0)), (1000, 100, dict(weight_decay=0.5)),
    (1000, 100, dict(batch_size=4, lr=2e-3)), (1000, 100, dict(qa_ratio=0.5))]]


# `reproduce --table qa-ratio` (paper Figure 10): mixed training on bioS single at each QA ratio, at the preset.
QA_RATIO_SWEEP = [dict(qa_ratio=r) for r in (0.1, 0.2, 0.4, 0.6, 0.8)]
PAPER_QA_RATIO = {0.1: 24.5, 0.2: 53.6, 0.4: 77.5, 0.6: 87.1, 0.8: 85.7}  # PAPER.md §5, P_test mean


def mixed_sweep(preset, seed, out, device, quiet=False, sweep=None, name="mixed_sweep.jsonl", append=True):
    """Run a list of mixed-training overrides (MIXED_SWEEP by default), one JSON line a run in OUT/NAME (the rows
    REPORT.md tabulates): appended to what is there, or (append=False) a file of this run's lines only."""
    os.makedirs(out, exist_ok=True)
    path, hardware = os.path.join(out, name), hardware_name(pick_device(device))
    kept = read_jsonl(path) if append and os.path.isfile(path) else []
    for overrides in tqdm(MIXED_SWEEP if sweep is None else sweep, desc="mixed sweep", disable=quiet):
        cfg = resolve_config(preset, seed=seed, device=device, **overrides)
        row = reproduce_row("single", "mixed", preset, seed, device, os.path.join(out, "work"), True, overrides)
        line = dict({k: getattr(cfg, k) for k in ("people", "n_layer", "n_head", "n_embd", "passes", "lr",
                                                  "batch_size", "block_size", "weight_decay", "qa_ratio",
                                                  "rotary_frac")},
                    steps=row["pretrain_steps"], bio_memorization=row["bio_memorization"], qa_train=row["qa_train"],
                    qa_test=row["qa_test"], minutes=row["minutes"], hardware=hardware, bioknow=VERSION,
                    commit=git_commit())
        kept.append(line)
        rewrite_jsonl(path, kept)
        print(f"mixed {json.dumps(overrides)}: P_test {row['qa_test']['mean']:.1f} ({row['minutes']:.1f} min)",
              flush=True)


# `reproduce --table finetune-grid` (paper Figure 2): bioS single pretrained once, then QA-finetuned with each recipe.
# The paper: P_train reaches ~99% (first token) with every recipe, P_test stays near 10% with every one.
FINETUNE_GRID = [dict(), dict(lora_qv=8), dict(lora_qv=16), dict(lora_qv=8, lora_emb=128),
                 dict(lora_qv=16, lora_emb=128)]


def recipe_name(overrides):
    if not overrides.get("lora_qv") and not overrides.get("lora_emb"):
        return "full finetuning"
    return f"LoRA q/v rank {overrides.get('lora_qv', 0)}" + (f" + embedding rank {overrides['lora_emb']}"
                                                             if overrides.get("lora_emb") else "")


def finetune_grid(preset, seed, out, device, quiet=False):
    """FINETUNE_GRID on bioS single -> OUT/finetune_grid.jsonl: P_train first-token and exact-match accuracy and
    P_test exact match per recipe. Reuses reproduce's pretrained single model when it is there."""
    work, path = os.path.join(out, "work"), os.path.join(out, "finetune_grid.jsonl")
    data_dir, data, run, _, _ = pretrained_run("single", "qa_finetune", preset, seed, device, work, quiet, reuse=True)
    dev, tok, lines = pick_device(device), Tokenizer(data["vocab"]), []
    split = {s: [r for r in data["qa"] if r["split"] == s] for s in ("train", "test")}
    for overrides in tqdm(FINETUNE_GRID, desc="finetune grid", disable=quiet):
        t0 = time.time()
        cfg = resolve_config(preset, "finetune", seed=seed, device=device, **overrides)
        model, _ = finetune(cfg, run, data_dir, os.path.join(work, "single-grid"), force=True, quiet=True)
        qa_train, qa_train_first_token = qa_accuracies(model, tok, split["train"], dev)
        line = dict(recipe=recipe_name(overrides), lora_qv=cfg.lora_qv, lora_emb=cfg.lora_emb, lr=cfg.lr,
                    passes=cfg.passes, qa_train_first_token=qa_train_first_token, qa_train=qa_train,
                    qa_test=qa_accuracy(model, tok, split["test"], dev), minutes=round((time.time() - t0) / 60, 2),
                    hardware=hardware_name(dev), bioknow=VERSION, commit=git_commit())
        lines.append(line)
        rewrite_jsonl(path, lines)
        print(f"{line['recipe']:>40}: P_train first token {line['qa_train_first_token']['mean']:.1f}, exact "
              f"{line['qa_train']['mean']:.1f}; P_test {line['qa_test']['mean']:.1f}", flush=True)


def finetune_grid_markdown(path):
    rows = read_jsonl(path)
    lines = ["## QA finetuning recipes on bioS single (paper Figure 2)", "",
             f"From `{os.path.basename(path)}`; `python bioknow.py reproduce --table finetune-grid`. One pretrained "
             "bioS single model, QA-finetuned on P_train with each recipe: the preset's optimiser and epochs for all "
             "(lr 3e-4 was best for LoRA too on held-out P_train people: README); LoRA freezes the base and merges "
             "the adapters on save. Accuracy in %, mean of the six "
             "attributes. The paper: P_train ~99% (first token) whatever the recipe, P_test near 10% whatever the "
             "recipe. " + provenance(rows), "",
             "| recipe | lr | P_train first token | P_train exact | **P_test exact** | minutes |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['lr']:g} | {r['qa_train_first_token']['mean']:.1f} | "
                     f"{r['qa_train']['mean']:.1f} | **{r['qa_test']['mean']:.1f}** | {r['minutes']:.1f} |")
    test, first = ([r[k]["mean"] for r in rows] for k in ("qa_test", "qa_train_first_token"))
    lines += ["", f"P_test stays at {min(test):.1f}-{max(test):.1f}% whatever the recipe, as in the paper; P_train "
                  f"first-token accuracy is {min(first):.1f}-{max(first):.1f}% here against the paper's ~99% (its "
                  "50,000 finetuning steps memorise the P_train answers; the preset's 10 epochs do not)."]
    return "\n".join(lines) + "\n"


# `reproduce --table full` (PAPER.md §5): all 16 bioS settings, each with QA finetuning after bio pretraining and with
# mixed training, every pretrained model Q-probed (Result 5). 32 pretraining runs: the `table` preset (the cpu preset
# at a smaller N) keeps them within 90 minutes on 2 cores.
FULL_SETTINGS = ("single", "single+fullname", "single+permute1", "single+permute2", "single+permute5",
                 "single+permute1+fullname", "single+permute2+fullname", "single+permute5+fullname",
                 "multi2", "multi2+fullname", "multi2+permute", "multi2+permute+fullname",
                 "multi5", "multi5+fullname", "multi5+permute", "multi5+permute+fullname")
FULL_METHODS = ("qa_finetune", "mixed")


def table_line(row, preset, seed, device, **extra):
    """A table's JSON line: the row's numbers and what produced them (preset, seed, N, hardware, version, commit)."""
    return dict(row, **extra, preset=preset, seed=seed, people=resolve_config(preset).people,
                hardware=hardware_name(pick_device(device)), bioknow=VERSION, commit=git_commit())


def full_table(preset, seed, out, device, quiet=False):
    """Every setting x method, Q-probed -> OUT/full_table.jsonl, a line a row as it finishes. Rows already there for
    this preset and seed are kept, so a killed run continues where it stopped (delete the file to start over)."""
    os.makedirs(out, exist_ok=True)
    path, work = os.path.join(out, "full_table.jsonl"), os.path.join(out, "work", "full")
    lines = read_jsonl(path) if os.path.isfile(path) else []
    kept = [r for r in lines if (r.get("preset"), r.get("seed")) == (preset, seed)]
    if kept:
        print(f"keeping the {len(kept)} finished rows of {path} (delete it to rerun them)", flush=True)
    done = {(r["setting"], r["method"]) for r in kept}
    todo = [(s, m) for s in FULL_SETTINGS for m in FULL_METHODS if (s, m) not in done]
    for setting, method in tqdm(todo, desc="full table", disable=quiet):
        row = reproduce_row(setting, method, preset, seed, device, work, True, probes=("q",))
        kept.append(table_line(row, preset, seed, device))
        rewrite_jsonl(path, kept)
        print(f"{setting:>26} {method:<12} memorised {row['bio_memorization']:5.1f}  P_test "
              f"{row['qa_test']['mean']:5.1f}  Q-probe {whole_means(row)[0]:5.1f}  ({row['minutes']:.1f} min)",
              flush=True)


def ordering_checks(qa, mixed):
    """The orderings the paper reports across the settings (PAPER.md §5), checked on {setting: P_test mean} of QA
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
    lines = ["## All 16 bioS settings (PAPER.md §5)", "",
             f"From `{os.path.basename(path)}`; `python bioknow.py reproduce --table full` (`make reproduce-full`). "
             f"Preset `{any_row['preset']}` (N = {any_row['people']}), seed {any_row['seed']}. "
             + provenance(list(rows.values())) + " One recipe for every row, nothing selected on P_test: QA = bio "
             "pretraining then full QA finetuning on P_train (the preset's optimiser and epochs); mixed = biographies "
             "and P_train QA in one run (QAr 0.8). P_test exact match in %; memorised = first-token accuracy on the "
             "biographies after bio pretraining; Q-probe = whole-value mean (five attributes) of a Q-probe on each "
             "pretrained model. Paper: GPT-2 124M, N = 100,000; it gives mixed training per attribute for single "
             "only.", "",
             "| setting | | QA mean | " + " | ".join(ATTRIBUTES) + " | memorised | mixed mean | "
             + " | ".join(ATTRIBUTES) + " | Q-probe (QA / mixed model) |", "|---|---|" + "---|" * 16]
    for s in settings:
        qa, mix = rows.get((s, "qa_finetune")), rows.get((s, "mixed"))
        cells = lambda r: [f"**{fmt(r['qa_test']['mean'])}**"] + [fmt(r["qa_test"][a]) for a in ATTRIBUTES] \
            if r else ["–"] * 7
        probes = " / ".join(fmt(whole_means(r)[0]) if r else "–" for r in (qa, mix))
        lines.append(f"| {s} | bioknow | " + " | ".join(cells(qa)) + f" | {fmt(qa and qa['bio_memorization'])} | "
                     + " | ".join(cells(mix)) + f" | {probes} |")
        paper_qa, paper_mix = PAPER_TABLE[s]
        paper_q = PAPER_Q_PROBE.get(s)
        lines.append("| | paper | " + " | ".join(fmt(v) for v in paper_qa) + " | | "
                     + " | ".join(fmt(v) for v in paper_mix + [None] * (7 - len(paper_mix))) + " | "
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
                  f"({sum(theirs[1] for _, theirs in checks)} on the paper's own numbers). QA P_test within 5 points of "
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


# `reproduce --table celebrity` (paper §7, Figure 17): N people with one biography each, alone (P_train half of them)
# or beside N celebrities with multi5+permute biographies (P_train: the celebrities, P_test: all N). QA finetuning
# on P_train only, so the minority's QA is never seen: does the celebrities' augmentation teach the model to store
# the minority's facts extractably? Alone rows reuse the full table's pretrained models when they are there.
CELEBRITY_ROWS = (("single+permute1", False), ("single+permute1", True), ("single", False), ("single", True))
PAPER_CELEBRITY = {"single+permute1": (4.4, 86.8), "single": (9.7, 63.2)}  # P_test mean: alone, with celebrities


def celebrity_table(preset, seed, out, device, quiet=False):
    """CELEBRITY_ROWS -> OUT/celebrity.jsonl (rewritten whole): the minority's P_test QA with and without
    celebrities."""
    work, path, lines = os.path.join(out, "work", "full"), os.path.join(out, "celebrity.jsonl"), []
    people = resolve_config(preset).people
    for setting, with_celebrities in tqdm(CELEBRITY_ROWS, desc="celebrity table", disable=quiet):
        celebrities = people if with_celebrities else 0
        row = reproduce_row(setting, "qa_finetune", preset, seed, device, work, True, reuse=True,
                            celebrities=celebrities)
        lines.append(table_line(row, preset, seed, device, celebrities=celebrities,
                                celebrity_aug="multi5+permute" if celebrities else None))
        rewrite_jsonl(path, lines)
        print(f"{setting:>16} {'with' if celebrities else 'without'} celebrities: memorised "
              f"{row['bio_memorization']:5.1f}  P_train {row['qa_train']['mean']:5.1f}  minority P_test "
              f"{row['qa_test']['mean']:5.1f}  ({row['minutes']:.1f} min)", flush=True)


def celebrity_markdown(path):
    rows = read_jsonl(path)
    lines = ["## Celebrity helps minority (paper §7, Figure 17)", "",
             f"From `{os.path.basename(path)}`; `python bioknow.py reproduce --table celebrity`. Preset "
             f"`{rows[0]['preset']}`: N = {rows[0]['people']} minority people with one biography under the setting; "
             "alone, QA finetuning on half of them (P_train) and P_test the other half; with celebrities, N more "
             "people with multi5+permute biographies in the same pretraining, QA finetuning on the celebrities only "
             "and P_test all N minority people. P_test exact match in %; memorised: first-token accuracy on every "
             "person's first biography, celebrities included. An alone row that reused the full table's pretrained "
             "model counts only its finetuning and evaluation minutes. " + provenance(rows), "",
             "| minority setting | celebrities | memorised | P_train | **minority P_test** | " + " | ".join(ATTRIBUTES)
             + " | paper P_test | minutes |", "|---|---|---|---|---|" + "---|" * 8]
    for r in rows:
        paper = PAPER_CELEBRITY.get(r["setting"], (None, None))[bool(r["celebrities"])]
        lines.append(f"| {r['setting']} | {r['celebrities'] or 'none'} | {r['bio_memorization']:.1f} | "
                     f"{r['qa_train']['mean']:.1f} | **{r['qa_test']['mean']:.1f}** | "
                     + " | ".join(fmt(r["qa_test"][a]) for a in ATTRIBUTES) + f" | {fmt(paper)} | {r['minutes']:.1f} |")
    lifts = []
    for setting, (alone, with_) in PAPER_CELEBRITY.items():
        ours = {bool(r["celebrities"]): r["qa_test"]["mean"] for r in rows if r["setting"] == setting}
        if len(ours) == 2:
            lifts.append((setting, ours[True] - ours[False], with_ - alone))
    if lifts:
        shown = all(ours >= 20 for _, ours, _ in lifts)
        lines += ["", "Celebrities lift the minority by tens of points (20+ for each setting): "
                  f"{'yes' if shown else 'NO'}; " + "; ".join(f"{s} {ours:+.1f} points (paper {paper:+.1f})"
                                                            for s, ours, paper in lifts) + "."]
    return "\n".join(lines) + "\n"


# `reproduce --table gbert` (paper §8, Figure 9): the same transformer with full attention, pretrained by filling in
# masked words (--objective mlm), then QA-finetuned or mixed-trained, beside the GPT rows of the full table.
GBERT_ROWS = tuple((s, m) for s in ("single", "multi5+permute", "multi5+permute+fullname") for m in FULL_METHODS)
PAPER_GBERT = {("single", "qa_finetune"): 3.7, ("single", "mixed"): 30.1}  # P_test mean; best 39.7 (QA), 43.6 (mixed)


def gbert_table(preset, seed, out, device, quiet=False):
    """GBERT_ROWS -> OUT/gbert.jsonl (rewritten whole), one line a row."""
    work, path, lines = os.path.join(out, "work", "gbert"), os.path.join(out, "gbert.jsonl"), []
    for setting, method in tqdm(GBERT_ROWS, desc="gbert table", disable=quiet):
        row = reproduce_row(setting, method, preset, seed, device, work, True, dict(objective="mlm"))
        lines.append(table_line(row, preset, seed, device, objective="mlm"))
        rewrite_jsonl(path, lines)
        print(f"GBERT {setting:>24} {method:<12} memorised {row['bio_memorization']:5.1f}  P_test "
              f"{row['qa_test']['mean']:5.1f}  ({row['minutes']:.1f} min)", flush=True)


def gbert_markdown(path):
    rows = read_jsonl(path)
    full_path = os.path.join(os.path.dirname(path), "full_table.jsonl")
    gpt = {(r["setting"], r["method"]): r for r in (read_jsonl(full_path) if os.path.isfile(full_path) else [])
           if (r["preset"], r["seed"]) == (rows[0]["preset"], rows[0]["seed"])}
    lines = ["## GBERT: the bidirectional model (paper §8, Figure 9)", "",
             f"From `{os.path.basename(path)}`; `python bioknow.py reproduce --table gbert`. Preset "
             f"`{rows[0]['preset']}` (N = {rows[0]['people']}); the same transformer with full attention, pretrained "
             "by filling in masked words (`--objective mlm`: 15% of words; 80% <mask>, 10% random, 10% kept), then "
             "QA-finetuned (the question and one <mask> per answer token, correct only when all are filled in) or "
             "mixed-trained. The GPT rows are the full table's (same preset and seed). P_test exact match in %. Paper: "
             "only birth date and major are learned; single 3.7 (QA) and 30.1 (mixed); best 39.7 (QA), 43.6 "
             "(mixed). " + provenance(rows),
             "", "| setting | method | model | memorised | **P_test mean** | " + " | ".join(ATTRIBUTES) + " | paper |",
             "|---|---|---|---|---|" + "---|" * 7]
    for r in rows:
        key = (r["setting"], r["method"])
        for name, row in (("GBERT", r), ("GPT", gpt.get(key))):
            if row:
                lines.append(f"| {r['setting']} | {r['method']} | {name} | {row['bio_memorization']:.1f} | "
                             f"**{row['qa_test']['mean']:.1f}** | "
                             + " | ".join(fmt(row["qa_test"][a]) for a in ATTRIBUTES)
                             + f" | {fmt(PAPER_GBERT.get(key)) if name == 'GBERT' else ''} |")
    by_attr = {a: float(np.mean([r["qa_test"][a] for r in rows])) for a in ATTRIBUTES}
    best = sorted(ATTRIBUTES, key=by_attr.get, reverse=True)[:2]
    lines += ["", f"GBERT's P_test by attribute, mean of its {len(rows)} rows: "
              + ", ".join(f"{a} {by_attr[a]:.1f}" for a in ATTRIBUTES) + f". Its two best: {' and '.join(best)} "
              f"(the paper: birth date and major): {'yes' if set(best) == {'birth_date', 'major'} else 'NO'}."]
    others = [a for a in ATTRIBUTES if a not in ("birth_date", "major")]
    pairs = [(r, gpt[(r["setting"], r["method"])]) for r in rows if (r["setting"], r["method"]) in gpt
             and "permute" in r["setting"] and r["method"] == "qa_finetune"]
    if pairs:
        ahead = all(g["qa_test"][a] > r["qa_test"][a] for r, g in pairs for a in others)
        lines += ["", "On multi5+permute(+fullname) after QA finetuning, the GPT is above GBERT on each of the other "
                      f"four attributes: {'yes' if ahead else 'NO'}."]
    return "\n".join(lines) + "\n"


def meets_threshold(row):
    key = (row["setting"], row["method"])
    if key == ("single", "qa_finetune"):
        return row["bio_memorization_min"] >= 95 and row["qa_test"]["mean"] <= 20
    if key == ("multi5+permute+fullname", "qa_finetune"):
        return row["qa_test"]["mean"] >= 70
    if key == ("single", "mixed"):
        return row["qa_test"]["mean"] >= 60
    return None


def pretrained_run(setting, method, preset, seed, device, work, quiet=False, train_overrides=None, reuse=False,
                   celebrities=0):
    """WORK/data-SETTING (generated unless there) and WORK/SETTING-METHOD pretrained on it, bio or mixed. reuse: keep
    a finished run whose configuration is the one asked for (the finetuning grid reuses reproduce's). celebrities:
    that many more people with multi5+permute biographies, who are P_train (paper §7)."""
    base = resolve_config(preset, "train", seed=seed, device=device, **(train_overrides or {}))
    name = setting + ("+celebrities" if celebrities else "")
    data_dir = os.path.join(work, f"data-{name}")
    meta_path = os.path.join(data_dir, "meta.json")
    wanted = dict(people=base.people + celebrities, aug=setting, seed=seed, celebrities=celebrities)
    if not os.path.isfile(meta_path) or any(read_json(meta_path).get(k, 0) != v for k, v in wanted.items()):
        generate(data_dir, base.people, setting, seed, force=True, quiet=quiet, celebrities=celebrities)
    data = load_data(data_dir)
    run = os.path.join(work, f"{name}-{method}")
    tcfg = dataclasses.replace(base, mode="bio" if method == "qa_finetune" else "mixed")
    if reuse and os.path.isfile(os.path.join(run, "model.pt")):
        ckpt, cfg = read_checkpoint(run, data["vocab"])
        finished = ckpt["kind"] == "pretrain" and ckpt["step"] == ckpt["total_steps"]
        if finished and ckpt.get("data") == data_identity(data) and dataclasses.replace(cfg, device=device) == tcfg:
            model, _, _ = load_checkpoint(run, pick_device(device), data["vocab"])
            return data_dir, data, run, model, dict(steps=ckpt["step"], final_loss=final_loss(run, []))
    model, info = train(tcfg, data_dir, run, force=True, quiet=quiet)
    return data_dir, data, run, model, info


def reproduce_row(setting, method, preset, seed, device, work, quiet=False, train_overrides=None,
                  finetune_overrides=None, probes=(), reuse=False, celebrities=0):
    """Generate -> pretrain (bio or mixed) -> probe (kinds in `probes`) -> [QA finetune] -> evaluate: one row."""
    t0 = time.time()
    data_dir, data, run, model, info = pretrained_run(setting, method, preset, seed, device, work, quiet,
                                                      train_overrides, reuse, celebrities)
    dev = pick_device(device)
    mem = bio_memorization(model, Tokenizer(data["vocab"]), data, dev)  # of the pretrained model
    probes = probe(run, data_dir, probes, device=device, seed=seed, quiet=quiet) if probes else {}
    if method == "qa_finetune":
        fcfg = resolve_config(preset, "finetune", seed=seed, device=device, **(finetune_overrides or {}))
        model, _ = finetune(fcfg, run, data_dir, run + "-qa", force=True, quiet=quiet)
    result = evaluate(model, data, dev)
    result.update(bio_memorization=mem["mean"], bio_memorization_min=min(mem[a] for a in ATTRIBUTES),
                  bio_memorization_per_attribute=mem)
    return dict(setting=setting, method=method, **result, **probes, pretrain_steps=info["steps"],
                pretrain_loss=info["final_loss"], minutes=round((time.time() - t0) / 60, 2))


def fmt(v):
    return "–" if v is None else f"{v:.1f}"


def report_markdown(result):
    cols = ("mean",) + ATTRIBUTES
    lines = [f"# bioknow: headline reproduction (preset `{result['preset']}`)", "",
             f"Hardware: {result['hardware']}. Total wall time: {result['minutes']:.1f} minutes. "
             f"Seed {result['seed']}. Command: `{result['command']}`.", "",
             "Accuracy in %, exact match of the whole answer, greedy decoding. P_train: people whose QA was trained on; "
             "P_test: the other half, whose QA was never seen. Paper: GPT-2 124M, N = 100,000 (PAPER.md §5).", "",
             "| setting | method | memorised (bio first-token, min) | split | " + " | ".join(cols) + " |",
             "|---|---|---|---|" + "---|" * len(cols)]
    for row in result["rows"]:
        key = (row["setting"], row["method"])
        paper = PAPER_QA.get(key)
        mem = f"{row['bio_memorization']:.1f} ({row['bio_memorization_min']:.1f})"
        lines.append(f"| {row['setting']} | {row['method']} | {mem} | P_train | "
                     + " | ".join(fmt(row["qa_train"][c]) for c in cols) + " |")
        lines.append(f"| | | | **P_test** | " + " | ".join(f"**{fmt(row['qa_test'][c])}**" for c in cols) + " |")
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
                          f"{THRESHOLDS[(row['setting'], row['method'])]}; it shows P_test {row['qa_test']['mean']:.1f} "
                          f"with the biographies {row['bio_memorization']:.1f}% memorised (min "
                          f"{row['bio_memorization_min']:.1f}). The README's errata say what was tried."]
    return "\n".join(lines) + "\n"


def pearson(xs, ys):
    """Pearson correlation, or None where it is undefined (fewer than 3 points, or a constant)."""
    if len(xs) < 3 or np.std(xs) == 0 or np.std(ys) == 0:
        return None
    return round(float(np.corrcoef(xs, ys)[0, 1]), 3)


def whole_means(row):
    """A row's Q-probe whole-value accuracy and its QA P_test accuracy, each the mean of the same five attributes."""
    return (float(np.mean([row["q_probe"]["whole"][a] for a in ATTRIBUTES[1:]])),
            float(np.mean([row["qa_test"][a] for a in ATTRIBUTES[1:]])))


def q_probe_vs_qa(rows):
    """Q-probe whole-value accuracy against QA P_test accuracy on the same five attributes (paper Result 5): the
    correlation across rows (of the means) and across (row, attribute) pairs."""
    rows = [r for r in rows if "q_probe" in r]
    means = [whole_means(r) for r in rows]
    pairs = [(r["q_probe"]["whole"][a], r["qa_test"][a]) for r in rows for a in ATTRIBUTES[1:]]
    return dict(rows=pearson(*zip(*means)) if means else None, row_attributes=pearson(*zip(*pairs)) if pairs else None)


def probe_checks(rows):
    """What the default preset must show about the probes (issue 5), each as (claim, shown: bool)."""
    by = {(r["setting"], r["method"]): r for r in rows if "p_probe" in r or "q_probe" in r}
    single, augmented = by.get(("single", "qa_finetune")), by.get(("multi5+permute+fullname", "qa_finetune"))
    checks = []
    if single and augmented:
        i = ATTRIBUTES.index("company")
        company, base = single["p_probe"]["first_token"][i], single["p_probe"]["baseline"]["first_token"]["company"]
        checks.append(("single: company P-probe (first token) within 10 points of its baseline at positions 0-3 and "
                       ">= 80% at position 4", all(v <= base + 10 for v in company[:4]) and company[4] >= 80))
        at_name = [row[0] for row in augmented["p_probe"]["first_token"]]
        checks.append(("multi5+permute+fullname: P-probe (first token) >= 80% at position 0 for every attribute",
                       min(at_name) >= 80))
        q = [whole_means(r)[0] for r in (single, augmented)]
        checks.append(("Q-probe whole-value mean: multi5+permute+fullname at least 10 points above single",
                       bool(q[1] >= q[0] + 10)))
    corr = q_probe_vs_qa(rows)["rows"]
    if corr is not None:
        checks.append(("Q-probe tracks QA: correlation across rows >= 0.8", corr >= 0.8))
    return checks


def probe_markdown(result):
    """The probes laid out like the paper's Figure 5 (P-probing: attribute x read position) and Figure 7 (Q-probing:
    one line per setting), the paper's numbers beside ours."""
    rows = [r for r in result["rows"] if "p_probe" in r or "q_probe" in r]
    if not rows:
        return ""
    lines = ["## Probing: where the pretrained model keeps each fact (paper §6)", "",
             "Frozen pretrained models (before QA finetuning), probes trained on P_train people and scored on P_test "
             "people, accuracy in %; `base` is the majority guess. Recipe (README, \"Probing\"): read-outs fitted on "
             "the frozen features, then trained with the rank-2 (P) / rank-16 (Q) embedding update; AdamW lr 1e-3, "
             "wd 0.3, linear decay."]
    for row in rows:
        if "p_probe" not in row:
            continue
        p = row["p_probe"]
        lines += ["", f"### P-probing, {row['setting']} (Figure 5)", "",
                  "Read at the token just before each attribute, positions 0-5 in sentence order"
                  + (" (fixed order: position k precedes attribute k)." if "permute" not in row["setting"] else
                     " (permuted: the attribute at each position varies).")
                  + " Whole value for five attributes (birth date: first token only). Paper: PAPER.md §6"
                  + (" (its augmented row is multi5+permute)." if row["setting"] != "single" else "."), "",
                  "| target | kind | base | " + " | ".join(f"pos {i}" for i in range(6)) + " | paper (first token) |",
                  "|---|---|---|" + "---|" * 7]
        for kind, attrs in p["attributes"].items():
            for attr, accs in zip(attrs, p[kind]):
                paper = PAPER_P_PROBE.get(row["setting"], {}).get(attr) if kind == "first_token" else None
                lines.append(f"| {attr} | {kind.replace('_', ' ')} | {fmt(p['baseline'][kind][attr])} | "
                             + " | ".join(fmt(v) for v in accs) + f" | {' '.join(fmt(v) for v in paper or [])} |")
    lines += ["", "### Q-probing (Figure 7)", "",
              "Only the full name after a start token, read at the name's last token. Paper rows as in PAPER.md §6 "
              "(its Q-probe reads an end token after the name). QA P_test: the row's QA accuracy (mean of the same "
              "five attributes as the whole-value columns).", "",
              "| setting | method | " + " | ".join(f"first {a}" for a in ATTRIBUTES) + " | "
              + " | ".join(f"whole {a}" for a in ATTRIBUTES[1:]) + " | whole mean | QA P_test |",
              "|---|---|" + "---|" * (len(ATTRIBUTES) * 2 + 1)]
    base = rows[0]["q_probe"]["baseline"]
    lines.append("| majority guess | | " + " | ".join(fmt(base["first_token"][a]) for a in ATTRIBUTES) + " | "
                 + " | ".join(fmt(base["whole"][a]) for a in ATTRIBUTES[1:]) + " | | |")
    lines.append("| paper: majority guess | | " + " | ".join(fmt(v) for v in PAPER_Q_PROBE["majority"]) + " | | |")
    for row in rows:
        q, (q_mean, qa_mean) = row["q_probe"], whole_means(row)
        lines.append(f"| {row['setting']} | {row['method']} | "
                     + " | ".join(fmt(q["first_token"][a]) for a in ATTRIBUTES) + " | "
                     + " | ".join(fmt(q["whole"][a]) for a in ATTRIBUTES[1:]) + f" | **{fmt(q_mean)}** | "
                     f"{fmt(qa_mean)} |")
        paper = PAPER_Q_PROBE.get(row["setting"]) if row["method"] == "qa_finetune" else None
        if paper:
            lines.append(f"| paper: {row['setting']} | | " + " | ".join(fmt(v) for v in paper) + " | "
                         f"{fmt(float(np.mean(paper[6:])))} | |")
    corr = q_probe_vs_qa(result["rows"])
    lines += ["", f"Correlation of Q-probe whole-value accuracy with QA P_test accuracy: across rows (means) "
                  f"{corr['rows'] if corr['rows'] is not None else '–'}, across (row, attribute) pairs "
                  f"{corr['row_attributes'] if corr['row_attributes'] is not None else '–'}.", "",
              "| what the probes must show | shown |", "|---|---|"]
    lines += [f"| {claim} | {'yes' if ok else 'NO'} |" for claim, ok in probe_checks(result["rows"])]
    return "\n".join(lines) + "\n"


def mixed_sweep_markdown(path):
    """A table of mixed-training runs (one JSON object a line, as `reproduce_row` returns plus the run's shape)."""
    rows = read_jsonl(path)
    lines = ["## Mixed training at larger budgets", "",
             f"From `{os.path.basename(path)}` (raw numbers, one run a line). bioS single, mixed training from scratch; "
             "P_test QA mean in %. Regenerate with `python bioknow.py reproduce --table mixed-sweep` (the `MIXED_SWEEP` "
             "list: overrides of the `cpu` preset), then `reproduce --report-only`. Hardware and minutes as recorded "
             "in the file; lines without a `bioknow` version ran on 0.1.0 (another data order, the tanh GELU, an "
             "unpadded embedding): comparable in trend, not to the digit.", "",
             "| people | layers x width | heads | rotary | passes | steps | lr | wd | QAr | batch | memorised | "
             "P_train | P_test | minutes | hardware |", "|" + "---|" * 15]
    for r in rows:
        lines.append(f"| {r['people']} | {r['n_layer']}x{r['n_embd']} | {r['n_head']} | {r['rotary_frac']:g} | "
                     f"{r['passes']:g} | {r['steps']} | "
                     f"{r['lr']:g} | {r['weight_decay']:g} | {r['qa_ratio']:g} | {r['batch_size']} | "
                     f"{r['bio_memorization']:.1f} | {r['qa_train']['mean']:.1f} | **{r['qa_test']['mean']:.1f}** | "
                     f"{r['minutes']:.1f} | {r['hardware']} |")
    best = max(rows, key=lambda r: r["qa_test"]["mean"])
    lines += ["", f"Best P_test {best['qa_test']['mean']:.1f}% (N = {best['people']}, {best['passes']:g} passes, "
                  f"{best['n_layer']}x{best['n_embd']}), against the paper's 86.6% for mixed training on bioS single: "
                  "P_test rises with passes and width, but no run here reaches the paper's level."]
    return "\n".join(lines) + "\n"


def qa_ratio_markdown(path):
    rows = read_jsonl(path)
    lines = ["## Mixed training and the QA ratio (paper Figure 10)", "",
             f"From `{os.path.basename(path)}`; `python bioknow.py reproduce --table qa-ratio`. bioS single, mixed "
             "training from scratch at the preset, QAr = the probability that a window is QA; accuracy in %. "
             + provenance(rows), "",
             "| QAr | steps | memorised | P_train | **P_test** | paper P_test | minutes |", "|" + "---|" * 7]
    for r in rows:
        lines.append(f"| {r['qa_ratio']:g} | {r['steps']} | {r['bio_memorization']:.1f} | "
                     f"{r['qa_train']['mean']:.1f} | **{r['qa_test']['mean']:.1f}** | "
                     f"{fmt(PAPER_QA_RATIO.get(r['qa_ratio']))} | {r['minutes']:.1f} |")
    best = max(rows, key=lambda r: r["qa_test"]["mean"])
    verdict = "the paper's rise is not reproduced at this preset (README: mixed training needs more budget)" if \
        best["qa_test"]["mean"] < 20 else "compare the rise with the paper's column"
    lines += ["", f"Best P_test {best['qa_test']['mean']:.1f}% at QAr {best['qa_ratio']:g}; the paper rises from "
                  f"24.5% at 0.1 to 85-87% at 0.6-0.8: {verdict}."]
    return "\n".join(lines) + "\n"


def provenance(rows):
    """The sentence a table's caption ends with: where its runs ran, and for how long."""
    hardware = sorted({r["hardware"] for r in rows if r.get("hardware")})
    return (f"Ran on {' and '.join(hardware) or 'unrecorded hardware'}: {sum(r['minutes'] for r in rows):.1f} "
            f"minutes for the {len(rows)} runs.")


def hardware_name(device):
    if device_type(device) == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"


def write_report(result, out):
    """REPORT.md from a reproduce result and its probes, plus each table whose OUT/*.jsonl is there (the finetuning
    grid, the QA-ratio sweep, and the mixed-training sweep: the scale at which mixed training starts to work)."""
    markdown = report_markdown(result) + "\n" + probe_markdown(result)
    for name, table in (("full_table.jsonl", full_table_markdown), ("celebrity.jsonl", celebrity_markdown),
                        ("gbert.jsonl", gbert_markdown),
                        ("finetune_grid.jsonl", finetune_grid_markdown), ("qa_ratio.jsonl", qa_ratio_markdown),
                        ("mixed_sweep.jsonl", mixed_sweep_markdown)):
        if os.path.isfile(os.path.join(out, name)):
            markdown += "\n" + table(os.path.join(out, name))
    write_text(os.path.join(out, "REPORT.md"), markdown)
    print(markdown)


def reproduce(preset=DEFAULT_PRESET, seed=0, out="results", device="auto", quiet=False, rows=REPRODUCE_ROWS,
              probing=True):
    t0 = time.time()
    os.makedirs(out, exist_ok=True)
    work = os.path.join(out, "work")
    dev = pick_device(device)
    result = dict(preset=preset, seed=seed, hardware=hardware_name(dev), config=dataclasses.asdict(
        resolve_config(preset, seed=seed, device=device)), command=" ".join(["python bioknow.py"] + sys.argv[1:]),
        rows=[])
    for setting, method in rows:
        row = reproduce_row(setting, method, preset, seed, device, work, quiet,
                            probes=REPRODUCE_PROBES[method] if probing else ())
        result["rows"].append(row)
        print(f"{setting:>26} {method:<12} memorised {row['bio_memorization']:5.1f}  "
              f"P_train {row['qa_train']['mean']:5.1f}  P_test {row['qa_test']['mean']:5.1f}  "
              f"({row['minutes']:.1f} min)", flush=True)
    result["minutes"] = round((time.time() - t0) / 60, 2)
    write_json(os.path.join(out, "reproduce.json"), result)
    write_report(result, out)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# --- benchmark: full training steps (forward, backward, optimiser) timed after warm-up and compilation

PEAK_BF16_TFLOPS = {"H200": 989, "H100": 989, "GH200": 989, "B200": 2250, "A100": 312, "L40S": 362, "L40": 181,
                    "L4": 121, "A10": 125, "4090": 165, "3090": 71}  # dense, by device name; MFU is against these


def peak_flops(device):
    if device_type(device) != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)


def flops_per_token(model, cfg):
    """Training FLOPs a token: 6 per parameter (forward and backward) plus attention's 12 * layers * width * context
    (the PaLM paper's appendix B count, as nanoGPT's estimate_mfu)."""
    return 6 * sum(p.numel() for p in model.parameters()) + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def synchronize(device):
    if device_type(device) == "cuda":
        torch.cuda.synchronize(device)
    elif device_type(device) == "mps":
        torch.mps.synchronize()


def seconds_per_call(fn, steps, warmup, device):
    """Mean wall time of fn() over `steps` calls after `warmup` calls (which also trigger compilation)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize(device)
    return (time.perf_counter() - t0) / steps


BENCH_SHAPE = ("n_layer", "n_head", "n_embd", "block_size", "batch_size")  # what `bench` may override


def bench_step(cfg, vocab_size, device):
    """bioknow's own training step (training_step, the one `train` runs) at cfg's shape on one batch of random
    tokens, as a function; and the model it trains."""
    seed_everything(cfg.seed)
    model = GPT(cfg, vocab_size).to(device)
    opt, fwd = make_optimizer(model, cfg, device), maybe_compile(model, cfg, device)
    w = torch.randint(vocab_size, (cfg.batch_size, cfg.block_size + 1), device=device)
    return (lambda: training_step(fwd, model, opt, w[:, :-1], w[:, 1:], cfg, cfg.lr, device)), model


def bench(cfg, vocab_size=None, steps=10, warmup=3):
    """Time bench_step after warm-up: one JSON-ready dict of speed, MFU and the projected pretraining time."""
    device = pick_device(cfg.device)
    tune_for(device)
    vocab_size = vocab_size or len(VOCAB)
    step, model = bench_step(cfg, vocab_size, device)
    sec = seconds_per_call(step, steps, warmup, device)
    tokens_per_sec = cfg.batch_size * cfg.block_size / sec
    peak = peak_flops(device)
    return dict(tokens_per_sec=round(tokens_per_sec), ms_per_step=round(1000 * sec, 2),
                params=sum(p.numel() for p in model.parameters()), device=hardware_name(device),
                dtype="bfloat16" if device_type(device) == "cuda" else "float32", compiled=compiles(cfg, device),
                mfu=round(flops_per_token(model, cfg) * tokens_per_sec / peak, 4) if peak else None,
                shape=dict({k: getattr(cfg, k) for k in BENCH_SHAPE}, vocab_size=vocab_size, preset=cfg.preset),
                **projection(cfg, tokens_per_sec), threads=torch.get_num_threads())


def projection(cfg, tokens_per_sec):
    """Hours for the preset's whole pretraining (its steps at its own batch) at the measured speed."""
    preset = resolve_config(cfg.preset)
    if not preset.steps:
        return dict(projected_hours=None, projected_for=None)
    tokens = preset.steps * preset.batch_size * preset.block_size
    return dict(projected_hours=round(tokens / tokens_per_sec / 3600, 2),
                projected_for=f"{preset.steps} steps x {preset.batch_size} x {preset.block_size} tokens")


# ----------------------------------------------------------------------------------------------------------------------
# --- command line

def git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


CONFIG_HELP = {"passes": "training budget in passes over bioS-single-sized data (finetune: epochs over P_train QA)",
               "steps": "optimizer steps (overrides --passes)", "mode": "bio or mixed",
               "qa_ratio": "mixed training: probability that a window is QA", "compile": "auto, on or off",
               "holdout": "finetune: fraction of P_train people held out (to choose a recipe without P_test)",
               "lora_qv": "finetune: LoRA rank on each layer's query and value (0: full finetuning; paper: 8 or 16)",
               "lora_emb": "finetune: LoRA rank of the embedding update (paper: 128)",
               "objective": "clm (the causal GPT) or mlm (GBERT: full attention, whole-word masking; paper §8)"}
TRAIN_FIELDS = [f for f in dataclasses.fields(Config) if f.name not in ("people", "aug", "preset")]


def add_config_flags(p):
    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of {', '.join(PRESETS)} (default %(default)s)")
    for f in TRAIN_FIELDS:
        p.add_argument("--" + f.name.replace("_", "-"), type=f.type if callable(f.type) else eval(f.type),
                       default=None, help=CONFIG_HELP.get(f.name, f"default from the preset (Config: {f.default})"))


def config_overrides(args):
    return {f.name: getattr(args, f.name) for f in TRAIN_FIELDS}


def cmd_generate(args):
    if args.bios_from or args.data:
        if not (args.bios_from and args.data):
            raise UserError("--bios-from FILE and --data DIR go together: the texts, and the people they are about")
        return print(json.dumps(bios_from(args.data, args.bios_from, args.out, args.force, args.quiet)))
    cfg = resolve_config(args.preset)
    people = cfg.people if args.people is None else args.people
    meta = generate(args.out, people, args.aug, args.seed, args.force, args.quiet, args.celebrities,
                    args.celebrity_aug)
    print(json.dumps(meta))


def cmd_check(args):
    data = load_data(args.dir)
    problems = check_data(data)
    for p in problems:
        print(f"{args.dir}: {p}")
    if problems:
        sys.exit(1)
    print(f"{args.dir}: ok ({len(data['people'])} people, {len(data['bios'])} biography entries, "
          f"{len(data['qa'])} questions, aug {data['meta']['aug']}"
          + (f"; {meta['celebrities']} celebrities, aug {meta['celebrity_aug']})" if (meta := data["meta"]).get(
              "celebrities") else ")"))


def cmd_train(args):
    cfg = resolve_config(args.preset, "train", **config_overrides(args))
    _, info = train(cfg, args.data, args.out, args.force, args.quiet, args.resume)
    if world()[0] == 0:
        print(json.dumps(dict(run=args.out, **info)))


def cmd_finetune(args):
    overrides = config_overrides(args)
    cfg = resolve_config(args.preset, "finetune", **overrides)
    shape = {k: v for k, v in overrides.items() if k in SHAPE and v is not None}
    _, info = finetune(cfg, args.run, args.data, args.out, args.force, args.quiet, args.resume, shape)
    info["holdout_ids"] = len(info["holdout_ids"])
    print(json.dumps(dict(run=args.out, **info)))


def cmd_eval(args):
    data = load_data(args.data)
    device = pick_device(args.device)
    model, _, ckpt = load_checkpoint(args.run, device, data["vocab"])
    held = set(ckpt.get("holdout_ids", []))
    if held:  # score held-out P_train people separately: the number a recipe is chosen on
        data_ft = dict(data, qa=[r for r in data["qa"] if r["id"] not in held])
        result = evaluate(model, data_ft, device, args.quiet)
        result["qa_holdout"] = qa_accuracy(model, Tokenizer(data["vocab"]),
                                           [r for r in data["qa"] if r["id"] in held], device)
    else:
        result = evaluate(model, data, device, args.quiet)
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result))


def cmd_probe(args):
    kinds = ("p", "q") if args.kind == "both" else (args.kind,)
    result = probe(args.run, args.data, kinds, args.steps, args.device, args.seed, args.quiet, args.lr,
                   args.head_steps, args.q_read)
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result))


def cmd_bench(args):
    shape = {k: getattr(args, k) for k in BENCH_SHAPE}
    cfg = resolve_config(args.preset, device=args.device, compile=args.compile, **shape)
    print(json.dumps(bench(cfg, args.vocab_size, args.steps, args.warmup)))


def cmd_reproduce(args):
    args.preset = args.preset or ("table" if args.table in ("full", "celebrity", "gbert") else DEFAULT_PRESET)
    if args.table == "mixed-sweep":
        return mixed_sweep(args.preset, args.seed, args.out, args.device, args.quiet)
    if args.table == "qa-ratio":
        return mixed_sweep(args.preset, args.seed, args.out, args.device, args.quiet, QA_RATIO_SWEEP, "qa_ratio.jsonl",
                           append=False)
    if args.table == "full":
        return full_table(args.preset, args.seed, args.out, args.device, args.quiet)
    if args.table == "celebrity":
        return celebrity_table(args.preset, args.seed, args.out, args.device, args.quiet)
    if args.table == "gbert":
        return gbert_table(args.preset, args.seed, args.out, args.device, args.quiet)
    if args.table == "finetune-grid":
        return finetune_grid(args.preset, args.seed, args.out, args.device, args.quiet)
    if args.report_only:
        path = os.path.join(args.out, "reproduce.json")
        if not os.path.isfile(path):
            raise UserError(f"--report-only: no {path} (run reproduce first)")
        return write_report(read_json(path), args.out)
    reproduce(args.preset, args.seed, args.out, args.device, args.quiet, probing=not args.no_probe)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="bioknow.py", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="write a bioS data directory")
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--people", type=int, default=None, help="number of people N (default: the preset's)")
    p.add_argument("--aug", default="single", help="single[+permuteP][+fullname] or multiM[+permute][+fullname]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default=DEFAULT_PRESET, help="takes --people from this preset")
    p.add_argument("--celebrities", type=int, default=0,
                   help="add this many celebrities (paper §7): P_train, biographies under --celebrity-aug; the N "
                        "people keep --aug and are all P_test")
    p.add_argument("--celebrity-aug", default="multi5+permute", help="the celebrities' augmentation (default "
                                                                     "%(default)s)")
    p.add_argument("--bios-from", metavar="FILE", help="your own biographies ({\"id\", \"text\"} lines, e.g. "
                                                       "written by an LLM) for the people of --data -> --out")
    p.add_argument("--data", metavar="DIR", help="with --bios-from: the data directory the texts' people are from")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("check", help="re-verify a data directory's invariants; lists every problem (exit 1 if any)")
    p.add_argument("dir", help="data directory from `generate`")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("train", help="pretrain on biographies (--mode bio) or biographies + P_train QA (mixed)")
    p.add_argument("--data", required=True, help="data directory from `generate`")
    p.add_argument("--out", required=True, help="run directory to write")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="QA finetuning on P_train questions (full finetuning)")
    p.add_argument("--run", required=True, help="pretrained run directory")
    p.add_argument("--data", required=True, help="data directory the run was trained on")
    p.add_argument("--out", required=True, help="run directory to write")
    add_config_flags(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("eval", help="QA exact match on P_train / P_test, and memorisation")
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", default=None, help="write the result as one JSON object here")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("probe", help="P-/Q-probe a frozen pretrained run: where is each attribute stored? (JSON)")
    p.add_argument("--run", required=True, help="pretrained run directory")
    p.add_argument("--data", required=True, help="data directory the run was trained on")
    p.add_argument("--kind", choices=("p", "q", "both"), default="both")
    p.add_argument("--out", default=None, help="write the result as one JSON object here")
    p.add_argument("--steps", type=int, default=None,
                   help="steps training the embedding update with the read-outs (default: the run's --probe-steps)")
    p.add_argument("--head-steps", type=int, default=PROBE_HEAD_STEPS,
                   help="full-batch steps fitting the read-outs on the frozen features first")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="AdamW learning rate of the joint phase, decayed linearly to 0 (paper: 1e-3)")
    p.add_argument("--q-read", choices=("name", "end"), default="name",
                   help="Q-probe read position: the name's last token (default) or an end token after it (paper)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("bench", help="time full training steps; prints one JSON line (tokens/s, ms/step, MFU)")
    p.add_argument("--preset", default=DEFAULT_PRESET, help="the shape to time (default %(default)s)")
    for name in BENCH_SHAPE:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None, help="override the preset's")
    p.add_argument("--vocab-size", type=int, default=None, help=f"default: bioknow's vocabulary ({len(VOCAB)})")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--steps", type=int, default=10, help="timed steps (default %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first, compilation included")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("reproduce", help="the headline table -> OUT/REPORT.md and OUT/reproduce.json")
    p.add_argument("--preset", help=f"default: {DEFAULT_PRESET} (--table full / celebrity / gbert: table, the cpu "
                                    "preset at N = 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results")
    p.add_argument("--device", default="auto")
    p.add_argument("--report-only", action="store_true", help="rewrite OUT/REPORT.md from OUT/reproduce.json")
    p.add_argument("--no-probe", action="store_true", help="skip P-/Q-probing of the pretrained models")
    p.add_argument("--table", choices=("headline", "full", "celebrity", "gbert", "finetune-grid", "qa-ratio",
                                       "mixed-sweep"),
                   default="headline",
                   help="headline: the three rows (default); full: all 16 bioS settings, QA and mixed, Q-probed -> "
                        "OUT/full_table.jsonl (preset table by default; resumes a killed run); celebrity: the "
                        "minority's QA with and without celebrities -> OUT/celebrity.jsonl (Figure 17); gbert: "
                        "the bidirectional model, masked-word pretraining -> OUT/gbert.jsonl (Figure 9); "
                        "finetune-grid: LoRA ranks and full finetuning on bioS single -> OUT/finetune_grid.jsonl "
                        "(Figure 2); qa-ratio: mixed training at QAr 0.1-0.8 -> OUT/qa_ratio.jsonl (Figure 10); "
                        "mixed-sweep: MIXED_SWEEP runs -> OUT/mixed_sweep.jsonl (hours on a CPU); then rerun with "
                        "--report-only")
    p.set_defaults(func=cmd_reproduce)

    for p in sub.choices.values():
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if p.prog.split()[-1] in ("generate", "train", "finetune"):
            p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
        if p.prog.split()[-1] in ("train", "finetune"):
            p.add_argument("--resume", action="store_true",
                           help="continue --out from its last checkpoint (rerun the same command with --resume)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"bioknow: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bioknow: interrupted", file=sys.stderr)
        sys.exit(130)


# ----------------------------------------------------------------------------------------------------------------------
# --- word lists and templates (data: bioknow's own, sized as in paper §2)
# Name pools are built from syllable parts so the sizes (400 / 400 / 1,000) hold exactly and every name is one token.

FIRST_NAMES = [a + b for a in ("Al", "Bel", "Cal", "Dar", "El", "Fen", "Gal", "Hal", "Ir", "Jor",
                               "Kel", "Lor", "Mar", "Nor", "Or", "Per", "Ros", "Sil", "Tam", "Vin")
               for b in ("a", "an", "ina", "ric", "on", "ette", "ias", "ene", "o", "ia",
                         "ley", "den", "wyn", "isa", "us", "elle", "ando", "ora", "ith", "ey")]
MIDDLE_NAMES = [a + b for a in ("Ab", "Bra", "Cor", "Dun", "Em", "Flo", "Gre", "Hun", "Ive", "Jas",
                                "Kir", "Lin", "Mor", "Nel", "Ot", "Pres", "Quin", "Ren", "Sto", "Wil")
                for b in ("bert", "dy", "ley", "ton", "na", "ric", "ford", "ie", "mond", "sey",
                          "ler", "van", "dell", "rose", "ven", "ham", "by", "lin", "ette", "more")]
LAST_NAMES = [a + b for a in ("Ash", "Black", "Brook", "Clay", "Cold", "Corn", "Cross", "Dale", "East", "Fair",
                              "Fern", "Frost", "Glen", "Gold", "Gray", "Green", "Hale", "Hart", "Hawk", "Hill",
                              "Holt", "Kings", "Lake", "Lang", "Marsh", "Mill", "Moor", "North", "Oak", "Pen",
                              "Red", "Rock", "Rose", "Shaw", "Stan", "Stone", "Thorn", "West", "White", "Wind")
              for b in ("ford", "wood", "field", "ley", "ton", "well", "brook", "by", "croft", "dale",
                        "worth", "wick", "ham", "more", "stead", "ridge", "shaw", "land", "cott", "bury",
                        "hurst", "mont", "stock", "wright", "gate")]

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
YEARS = range(1900, 2100)  # 200 years x 12 months x 28 days, paper §2
DAYS = range(1, 29)

CITIES = """New York, NY|Los Angeles, CA|Chicago, IL|Houston, TX|Phoenix, AZ|Philadelphia, PA|San Antonio, TX|San Diego, CA|
Dallas, TX|San Jose, CA|Austin, TX|Jacksonville, FL|Fort Worth, TX|Columbus, OH|Charlotte, NC|San Francisco, CA|
Indianapolis, IN|Seattle, WA|Denver, CO|Boston, MA|El Paso, TX|Nashville, TN|Detroit, MI|Oklahoma City, OK|Portland, OR|
Las Vegas, NV|Memphis, TN|Louisville, KY|Baltimore, MD|Milwaukee, WI|Albuquerque, NM|Tucson, AZ|Fresno, CA|Mesa, AZ|
Sacramento, CA|Atlanta, GA|Kansas City, MO|Colorado Springs, CO|Omaha, NE|Raleigh, NC|Miami, FL|Long Beach, CA|
Virginia Beach, VA|Oakland, CA|Minneapolis, MN|Tulsa, OK|Tampa, FL|Arlington, TX|New Orleans, LA|Wichita, KS|
Cleveland, OH|Bakersfield, CA|Aurora, CO|Anaheim, CA|Honolulu, HI|Santa Ana, CA|Riverside, CA|Corpus Christi, TX|
Lexington, KY|Stockton, CA|Henderson, NV|Saint Paul, MN|Cincinnati, OH|Pittsburgh, PA|Greensboro, NC|Anchorage, AK|
Plano, TX|Lincoln, NE|Orlando, FL|Irvine, CA|Newark, NJ|Toledo, OH|Durham, NC|Chula Vista, CA|Fort Wayne, IN|
Jersey City, NJ|Saint Petersburg, FL|Laredo, TX|Madison, WI|Chandler, AZ|Buffalo, NY|Lubbock, TX|Scottsdale, AZ|Reno, NV|
Glendale, AZ|Gilbert, AZ|Norfolk, VA|Chesapeake, VA|Garland, TX|Irving, TX|Hialeah, FL|Fremont, CA|Boise, ID|
Richmond, VA|Baton Rouge, LA|Spokane, WA|Des Moines, IA|Tacoma, WA|San Bernardino, CA|Modesto, CA|Fontana, CA|
Santa Clarita, CA|Birmingham, AL|Oxnard, CA|Fayetteville, NC|Moreno Valley, CA|Rochester, NY|Huntington Beach, CA|
Salt Lake City, UT|Grand Rapids, MI|Amarillo, TX|Yonkers, NY|Montgomery, AL|Akron, OH|Little Rock, AR|Huntsville, AL|
Augusta, GA|Columbus, GA|Grand Prairie, TX|Shreveport, LA|Overland Park, KS|Tallahassee, FL|Mobile, AL|Knoxville, TN|
Worcester, MA|Providence, RI|Fort Lauderdale, FL|Chattanooga, TN|Tempe, AZ|Brownsville, TX|Cape Coral, FL|Eugene, OR|
Salem, OR|Sioux Falls, SD|Springfield, MO|Peoria, IL|Pasadena, CA|Savannah, GA|Syracuse, NY|Hartford, CT|Dayton, OH|
Alexandria, VA|Lakewood, CO|Fort Collins, CO|Naperville, IL|Rockford, IL|Joliet, IL|Paterson, NJ|Bridgeport, CT|
Springfield, IL|Kansas City, KS|Topeka, KS|Cedar Rapids, IA|Waco, TX|Charleston, SC|Columbia, SC|Athens, GA|Ann Arbor, MI|
Berkeley, CA|Boulder, CO|Princeton, NJ|Cambridge, MA|New Haven, CT|Ithaca, NY|Burlington, VT|Portland, ME|Manchester, NH|
Wilmington, DE|Charleston, WV|Billings, MT|Fargo, ND|Cheyenne, WY|Santa Fe, NM|Juneau, AK|Bismarck, ND|Helena, MT|
Olympia, WA|Concord, NH|Montpelier, VT|Annapolis, MD|Dover, DE|Trenton, NJ|Albany, NY|Harrisburg, PA|Lansing, MI|
Jackson, MS|Frankfort, KY|Pierre, SD|Carson City, NV|Duluth, MN|Green Bay, WI|Erie, PA|Allentown, PA|Scranton, PA|
Lancaster, PA|Flint, MI|Kalamazoo, MI|Evansville, IN|South Bend, IN|Bloomington, IN""".replace("\n", "").split("|")

# 300 institutions from 60 stems x 5 patterns; many share the prefix "University of" (paper §2).
UNIVERSITY_STEMS = ("Alabama Arizona Arkansas California Colorado Connecticut Delaware Florida Georgia Idaho Illinois "
                    "Indiana Iowa Kansas Kentucky Louisiana Maine Maryland Massachusetts Michigan Minnesota Mississippi "
                    "Missouri Montana Nebraska Nevada Ohio Oklahoma Oregon Pennsylvania Tennessee Texas Utah Vermont "
                    "Virginia Washington Wisconsin Wyoming Alder Birchwood Cedarbrook Dunmore Elmhurst Fairhaven "
                    "Glenwood Harborview Ironwood Juniper Kingsbridge Lakeshore Maplewood Northgate Oakridge Pinecrest "
                    "Quarry Riverside Silverlake Timberline Valleyview Westbrook").split()
UNIVERSITIES = [p.format(s) for p in ("University of {}", "{} State University", "{} College",
                                      "{} Institute of Technology", "{} University") for s in UNIVERSITY_STEMS]

MAJORS = """Accounting|Aerospace Engineering|African Studies|Agricultural Science|Animal Science|Anthropology|Applied
Mathematics|Archaeology|Architecture|Art History|Astronomy|Astrophysics|Biochemistry|Bioengineering|Bioinformatics|
Biology|Biomedical Engineering|Botany|Business Administration|Chemical Engineering|Chemistry|Chinese Literature|Civil
Engineering|Classics|Cognitive Science|Communications|Comparative Literature|Computer Engineering|Computer Science|
Construction Management|Creative Writing|Criminology|Dance|Data Science|Dentistry|Earth Science|Ecology|Economics|
Education|Electrical Engineering|English Literature|Environmental Science|Epidemiology|Ethnic Studies|Film Studies|
Finance|Fine Arts|Food Science|Forensic Science|Forestry|French|Game Design|Genetics|Geography|Geology|German|Graphic
Design|Health Sciences|History|Hospitality Management|Industrial Design|Industrial Engineering|Information Systems|
International Relations|Journalism|Kinesiology|Linguistics|Management|Marine Biology|Marketing|Materials Science|
Mathematics|Mechanical Engineering|Media Studies|Microbiology|Music|Neuroscience|Nuclear Engineering|
Nursing|Nutrition|Oceanography|Petroleum Engineering|Pharmacology|Philosophy|Photography|Physics|Political Science|
Psychology|Public Health|Public Policy|Religious Studies|Robotics|Social Work|Sociology|Software Engineering|Spanish|
Statistics|Theater|Urban Planning|Zoology""".replace("\n", " ").split("|")
MAJORS = [m.strip() for m in MAJORS]

# 263 employers from 27 stems x 10 kinds (the first 263); each sits in one headquarters city. 36 of them (13.7%) share
# one city, which is the majority-guess baseline for "company city" in paper §5.
COMPANY_STEMS = ("Apex Bluewave Cobalt Driftwood Ember Falcon Granite Helix Indigo Jetstream Keystone Lumen Meridian "
                 "Nimbus Orchid Pinnacle Quartz Redwood Summit Tidal Umbra Vertex Willow Xenon Yardley Zephyr Aurora").split()
COMPANY_KINDS = ("Systems", "Labs", "Holdings", "Energy", "Foods", "Motors", "Health", "Media", "Logistics", "Capital")
COMPANIES = [f"{s} {k}" for k in COMPANY_KINDS for s in COMPANY_STEMS][:263]
MAJORITY_CITY_COMPANIES = 36


def company_cities():
    """Fixed company -> headquarters city table (independent of the user's seed)."""
    rng = random.Random(263)
    hub = CITIES[0]
    others = [c for c in CITIES if c != hub]
    order = list(range(len(COMPANIES)))
    rng.shuffle(order)
    table = {}
    for rank, i in enumerate(order):
        table[COMPANIES[i]] = hub if rank < MAJORITY_CITY_COMPANIES else rng.choice(others)
    return table


# Sentence templates. {S}: the subject (the full name, or the pronoun); {V}: the value; {P}: possessive pronoun;
# {was} {is} {has}: verbs that agree with the subject ("they were"). bioknow's own wording, 42+ per attribute.
TEMPLATES = {
    "birth_date": """{S} {was} born on {V}.|{S} came into the world on {V}.|{S} {was} born on the date {V}.|
{S} celebrates {P} birthday on {V}.|{S} entered this world on {V}.|{S} first saw daylight on {V}.|
{S} {has} a birth date of {V}.|{S} {was} delivered into a loving family on {V}.|{S} arrived on {V}.|
{S} marks {P} birthday each year on the anniversary of {V}.|{S} took {P} first breath on {V}.|
{S} {was} welcomed into the world on {V}.|{S} {has} records showing a birth on {V}.|{S} began life on {V}.|
{S} {was} born, according to records, on {V}.|{S} {has} always celebrated {V} as the day of birth.|
{S} {was} a newborn on {V}.|{S} joined {P} family on {V}.|{S} made an entrance into the world on {V}.|
{S} {was} brought into the world on {V}.|{S} {has} a birthday falling on {V}.|{S} {was} born early on {V}.|
{S} counts {V} as {P} birthday.|{S} {was} born late in the day on {V}.|{S} first opened {P} eyes on {V}.|
{S} {has} a birth certificate dated {V}.|{S} {was} born in the morning of {V}.|{S} started {P} journey on {V}.|
{S} {was} born into a quiet household on {V}.|{S} {is} someone whose birthday is {V}.|
{S} lists {V} as {P} date of birth.|{S} {was} born during the night of {V}.|{S} entered the world on {V}.|
{S} {was} given life on {V}.|{S} {has} {V} as {P} birthday.|{S} {was} born on a cold {V}.|
{S} {was} born on a sunny {V}.|{S} {has} celebrated a birthday every {V} since then.|
{S} {was} born healthy on {V}.|{S} began {P} story on {V}.|{S} {was} born at home on {V}.|
{S} {was} born in a small hospital on {V}.""",
    "birth_city": """{S} {was} born in {V}.|{S} spent {P} early years in {V}.|{S} grew up in {V}.|
{S} {has} roots in {V}.|{S} calls {V} {P} hometown.|{S} {was} raised in {V}.|{S} hails from {V}.|
{S} spent {P} childhood in {V}.|{S} came from {V}.|{S} {was} a native of {V}.|{S} {is} originally from {V}.|
{S} began life in {V}.|{S} took {P} first steps in {V}.|{S} {was} brought up in {V}.|{S} lived as a child in {V}.|
{S} first called {V} home.|{S} {was} born and raised in {V}.|{S} {has} fond memories of {V}, {P} birthplace.|
{S} {is} a proud native of {V}.|{S} owes {P} accent to {V}.|{S} {was} welcomed to the world in {V}.|
{S} {was} delivered in a hospital in {V}.|{S} {has} a birthplace of {V}.|{S} first saw the sky over {V}.|
{S} {was} born in the city of {V}.|{S} spent {P} youth in {V}.|{S} {was} a child of {V}.|
{S} learned to walk in {V}.|{S} {has} family ties to {V}, where the birth took place.|
{S} {was} born in a neighborhood of {V}.|{S} grew up on the streets of {V}.|{S} claims {V} as {P} birthplace.|
{S} {has} {V} listed as {P} place of birth.|{S} {was} born to a family in {V}.|{S} started out in {V}.|
{S} {was} born near downtown {V}.|{S} {has} always loved {V}, the city of {P} birth.|{S} spent {P} first years in {V}.|
{S} {was} born and spent {P} early youth in {V}.|{S} comes from the town of {V}.|
{S} {was} raised by {P} parents in {V}.|{S} remembers a childhood in {V}.""",
    "university": """{S} studied at {V}.|{S} graduated from {V}.|{S} attended {V}.|{S} {was} a student at {V}.|
{S} received an education at {V}.|{S} enrolled at {V}.|{S} earned a degree from {V}.|{S} {is} an alumnus of {V}.|
{S} completed {P} studies at {V}.|{S} spent {P} college years at {V}.|{S} pursued higher education at {V}.|
{S} {was} admitted to {V}.|{S} took classes at {V}.|{S} {has} a diploma from {V}.|{S} went to college at {V}.|
{S} {was} educated at {V}.|{S} {was} trained at {V}.|{S} chose {V} for {P} studies.|{S} spent four years at {V}.|
{S} {has} fond memories of studying at {V}.|{S} {was} a proud member of the class at {V}.|
{S} finished {P} education at {V}.|{S} {was} accepted into {V}.|{S} received academic training at {V}.|
{S} {is} a graduate of {V}.|{S} studied hard at {V}.|{S} {was} a scholar at {V}.|{S} went on to attend {V}.|
{S} sharpened {P} mind at {V}.|{S} earned {P} diploma at {V}.|{S} {was} a dedicated student at {V}.|
{S} spent {P} student days at {V}.|{S} continued {P} education at {V}.|{S} completed a degree program at {V}.|
{S} joined the student body of {V}.|{S} {has} an education from {V}.|{S} {was} enrolled in courses at {V}.|
{S} lived on campus at {V}.|{S} did {P} undergraduate work at {V}.|{S} {was} schooled at {V}.|
{S} received a scholarship to {V}.|{S} gained knowledge at {V}.""",
    "major": """{S} majored in {V}.|{S} focused on {V}.|{S} studied {V}.|{S} specialized in {V}.|
{S} earned a degree in {V}.|{S} chose to study {V}.|{S} concentrated on {V}.|{S} pursued a degree in {V}.|
{S} {was} passionate about {V}.|{S} completed coursework in {V}.|{S} {has} a background in {V}.|
{S} devoted {P} studies to {V}.|{S} {was} trained in {V}.|{S} dedicated {P} time to {V}.|{S} explored {V}.|
{S} {was} a student of {V}.|{S} picked {V} as {P} field.|{S} received a diploma in {V}.|{S} took up {V}.|
{S} {has} expertise in {V}.|{S} developed a deep interest in {V}.|{S} wrote a thesis in {V}.|
{S} {was} an undergraduate in {V}.|{S} learned the foundations of {V}.|{S} graduated with a focus on {V}.|
{S} spent years studying {V}.|{S} {was} drawn to {V}.|{S} {has} an academic background in {V}.|
{S} declared a major in {V}.|{S} built {P} career foundations in {V}.|{S} {was} fascinated by {V}.|
{S} obtained a degree in {V}.|{S} did coursework focused on {V}.|{S} {is} well versed in {V}.|
{S} followed {P} interest in {V}.|{S} enrolled in the program for {V}.|{S} {was} educated in {V}.|
{S} mastered {V}.|{S} excelled in {V}.|{S} dove into {V}.|{S} earned honors in {V}.|{S} {has} a passion for {V}.""",
    "company": """{S} worked for {V}.|{S} {was} employed by {V}.|{S} accepted a position at {V}.|
{S} joined {V}.|{S} {has} a job at {V}.|{S} built a career at {V}.|{S} {was} hired by {V}.|{S} took a role at {V}.|
{S} {was} on the staff of {V}.|{S} spent {P} career at {V}.|{S} worked as an employee of {V}.|
{S} {was} a member of the team at {V}.|{S} contributed to {V}.|{S} found work at {V}.|{S} served at {V}.|
{S} {was} recruited by {V}.|{S} signed on with {V}.|{S} {has} been with {V} for years.|{S} earned a living at {V}.|
{S} {was} an employee at {V}.|{S} held a position at {V}.|{S} landed a job with {V}.|{S} went to work for {V}.|
{S} {was} part of {V}.|{S} {has} worked hard at {V}.|{S} started working at {V}.|{S} began a career with {V}.|
{S} {was} on the payroll of {V}.|{S} worked full time at {V}.|{S} took a job at {V}.|{S} {was} a staff member at {V}.|
{S} devoted {P} working life to {V}.|{S} secured employment with {V}.|{S} {was} a valued worker at {V}.|
{S} spent long hours at {V}.|{S} {has} a career at {V}.|{S} earned promotions at {V}.|{S} {was} employed at {V}.|
{S} collaborated with colleagues at {V}.|{S} {was} offered a role at {V}.|{S} worked at {V}.|
{S} made a career with {V}.""",
    "company_city": """{S} worked in {V}.|{S} {was} employed in {V}.|{S} moved to {V} for work.|
{S} took a job in {V}.|{S} commuted to an office in {V}.|{S} {has} a workplace in {V}.|{S} relocated to {V}.|
{S} settled in {V} for {P} career.|{S} spent {P} working years in {V}.|{S} {was} based in {V}.|
{S} built {P} career in {V}.|{S} found work in {V}.|{S} {was} stationed in {V}.|{S} worked at an office in {V}.|
{S} pursued {P} profession in {V}.|{S} {has} an office in {V}.|{S} reported to headquarters in {V}.|
{S} {was} posted to {V}.|{S} earned a living in {V}.|{S} {was} working in {V}.|{S} spent weekdays in {V}.|
{S} {has} worked for years in {V}.|{S} took up employment in {V}.|{S} {was} assigned to {V}.|
{S} moved to {V} for a job.|{S} {was} a worker in {V}.|{S} spent {P} career in {V}.|{S} {has} a desk in {V}.|
{S} went to work in {V}.|{S} {was} transferred to {V}.|{S} traveled daily to {V} for work.|
{S} worked out of {V}.|{S} {was} employed at the headquarters in {V}.|{S} {has} made a career in {V}.|
{S} started a job in {V}.|{S} {was} hired to work in {V}.|{S} kept an office in {V}.|{S} made a living in {V}.|
{S} {was} a professional in {V}.|{S} worked long hours in {V}.|{S} spent {P} days working in {V}.|
{S} {was} employed full time in {V}.""",
}
TEMPLATES = {k: [t.strip() for t in v.replace("\n", "").split("|")] for k, v in TEMPLATES.items()}

# QA prompts, paper §3 (the question, then a new line and "Answer: VALUE.").
QUESTIONS = {
    "birth_date": "What is the birth date of {N}?",
    "birth_city": "What is the birth city of {N}?",
    "university": "Which university did {N} study?",
    "major": "What major did {N} study?",
    "company": "Which company did {N} work for?",
    "company_city": "Where did {N} work?",
}

# The paper's numbers (PAPER.md §5), for the report: P_test accuracy, mean then the six attributes. Per setting:
# QA finetuning after bio pretraining, and mixed training (the paper gives its per-attribute numbers for single only).
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

# PAPER.md §6. P-probing, first token, by read position (bioS single: up to the attribute's own position, the
# fixed order; multi5+permute, the paper's augmented P-probe row, set beside our multi5+permute+fullname).
PAPER_P_PROBE = {
    "single": {"birth_date": [100], "birth_city": [5.9, 100], "university": [38.0, 37.1, 99.2],
               "major": [4.7, 4.6, 5.4, 99.9], "company": [1.5, 1.2, 1.3, 2.4, 99.5],
               "company_city": [15.4, 15.4, 14.9, 13.0, 69.1, 100]},
    "multi5+permute+fullname": dict({a: [100] * 6 for a in ATTRIBUTES}, company=[99.9, 99.9, 99.9, 100, 100, 100],
                                    company_city=[99.8, 99.8, 99.9, 100, 100, 100]),
}
# PAPER.md §6, Q-probing: first token (6 attributes) then whole value (5 attributes).
PAPER_Q_PROBE = {
    "majority": [8.3, 2.5, 37.0, 4.0, 1.5, 14.8, 0.5, 0.3, 1.0, 0.4, 13.7],
    "single": [63.4, 1.9, 37.5, 3.1, 0.2, 13.1, 1.1, 0.3, 1.4, 0.1, 11.6],
    "single+fullname": [78.8, 47.5, 65.4, 51.0, 47.4, 28.9, 43.9, 31.2, 40.8, 44.4, 28.9],
    "single+permute5": [95.3, 49.7, 66.6, 68.6, 96.5, 99.1, 47.7, 40.7, 63.0, 96.2, 98.9],
    "multi5": [100, 39.8, 40.3, 40.1, 3.2, 13.2, 38.1, 9.7, 36.1, 2.3, 11.9],
    "multi5+permute": [100, 100, 99.9, 100, 99.9, 99.8, 96.1, 72.6, 94.9, 99.6, 99.7],
    "multi5+permute+fullname": [100, 100, 99.8, 100, 100, 99.8, 95.4, 68.1, 92.0, 99.9, 99.8],
}

VERSION = "0.2.0"  # 0.2: resumable checkpoints (optimizer, RNGs, stream positions), padded embedding
VARIANTS = _variants()
VOCAB = build_vocab()

if __name__ == "__main__":
    main()
