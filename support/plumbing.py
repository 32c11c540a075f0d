"""
What bioknow.py's method stands on, and a reader of the paper may skip: devices, files written atomically, data
directories loaded and checked, your own biographies, checkpoints and bitwise resume, data parallelism under torchrun,
the tables' runs side by side, and bench timing. bioknow.py imports the names it uses from here.
"""
import ctypes
import dataclasses
import json
import multiprocessing
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import torch
from tqdm import tqdm


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit status 2, no traceback."""


# Devices: auto picks CUDA, then MPS, then the CPU.

def pick_device(name):
    mps = getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    if os.environ.get("LOCAL_RANK") and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{os.environ['LOCAL_RANK']}"  # torchrun: one GPU per process
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available")
    if name == "mps" and not mps:
        raise UserError("--device mps: MPS is not available")
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown --device {name!r} (auto, cpu, cuda, mps)")
    return name


def device_type(device):
    return str(device).split(":")[0]


def hardware_name(device):
    """The card's name, or the CPU's model with its cores and threads: a seed repeats a run bitwise on one CPU model,
    not across models (float rounding differs), so every result line names the processor that ran it."""
    if device_type(device) == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"{device} ({cpu_model()}), {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:  # Linux
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return (names[0] if names else platform.processor() or platform.machine() or "unknown").replace(",", "")


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device):
    """bf16 autocast on CUDA; float32 elsewhere (bf16 on a CPU measured 12-17x slower for tiny models)."""
    if device_type(device) == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def compiles(cfg, device):
    """--compile auto: on for CUDA, where it pays (fused kernels); off on CPU and MPS, where it did not."""
    return cfg.compile == "on" or (cfg.compile == "auto" and device_type(device) == "cuda")


def maybe_compile(model, cfg, device):
    return torch.compile(model) if compiles(cfg, device) else model


def synchronize(device):
    if device_type(device) == "cuda":
        torch.cuda.synchronize(device)
    elif device_type(device) == "mps":
        torch.mps.synchronize()


def tune_for(device):
    """CUDA: TF32 for the float32 matmuls autocast leaves. CPU (Linux): keep freed tensors in the process. glibc
    hands every block over 128 KB back to the kernel on free, so each step page-faults its logits and activations in
    afresh; keeping them measured 12.5k -> 16k tokens/s for the cpu preset on 2 cores."""
    if device_type(device) == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    elif device_type(device) == "cpu" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks up to 32 MB come from the heap, not mmap
            libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GB of freed heap for the next step
        except (OSError, AttributeError):  # not glibc: nothing to tune
            pass


def git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# Files: each is written to a temporary name and renamed into place, so a kill leaves the old file or the new one.

def write_atomic(path, write):
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    write_atomic(path, write)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")


def rewrite_jsonl(path, rows):
    """PATH as these rows, one JSON object a line, rewritten whole: a kill never leaves half a line."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


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


# Data directories: loaded, and checked before anything trains on them (`bioknow.py check DIR` reads every text).

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


def load_checked_data(data_dir):
    """load_data plus the cheap part of check_data: what training runs before it starts."""
    data = load_data(data_dir)
    problems = check_data(data, full=False)
    if problems:
        raise UserError(f"{data_dir}: {problems[0]} (`bioknow.py check {data_dir}` lists every problem)")
    return data


def check_data(data, full=True):
    """The invariants of a data directory, as a list of problems (empty: fine): the structural ones, and with
    full=True every text (check_texts)."""
    problems, meta, people = [], data["meta"], data["people"]
    missing = [k for k in ("people", "aug", "entries_per_person", "n_train", "n_test") if k not in meta]
    if missing:
        return [f"meta.json lacks {', '.join(missing)}"]
    try:
        spec, celebrity_spec = bk.parse_aug(meta["aug"]), bk.parse_aug(meta.get("celebrity_aug", meta["aug"]))
    except UserError as e:
        return [f"meta.json: {e}"]
    if not data["vocab"] or data["vocab"][0] != bk.EOS or len(set(data["vocab"])) != len(data["vocab"]):
        problems.append(f"vocab.json must list unique words with {bk.EOS} first")
    if len(people) != meta["people"]:
        problems.append(f"people.jsonl has {len(people)} people, meta.json says {meta['people']}")
    fields = ("id", "name", "pronoun", "split") + bk.ATTRIBUTES
    bad = [n for n, p in enumerate(people)
           if not isinstance(p, dict) or any(not p.get(k) and p.get(k) != 0 for k in fields)]
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
    by_id, entries = {p["id"]: p for p in people}, Counter(b.get("id") for b in data["bios"])
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
            (i, a) for i in by_id for a in bk.ATTRIBUTES}:
        problems.append("qa.jsonl: must hold exactly one question per person and attribute")
    bad_qa = [r for r in data["qa"] if r.get("id") in by_id and r.get("attribute") in bk.ATTRIBUTES and (
        r.get("answer") != by_id[r["id"]][r["attribute"]] or r.get("split") != by_id[r["id"]]["split"]
        or by_id[r["id"]]["name"] not in r.get("question", ""))]
    if bad_qa:
        problems.append(f"qa.jsonl: {len(bad_qa)} questions whose name, answer or split disagree with people.jsonl "
                        f"(first: id {bad_qa[0]['id']} {bad_qa[0]['attribute']})")
    return problems + (check_texts(data, spec, celebrity_spec, by_id) if full and not problems else [])


def check_texts(data, minority_spec, celebrity_spec, by_id):
    """Every text must tokenize, mention each of its person's six values, carry the full name as its augmentation
    says, and keep the fixed order unless permuted: the problems counted by kind."""
    tok, counts, first = bk.Tokenizer(data["vocab"]), Counter(), {}

    def problem(kind, id_):
        counts[kind] += 1
        first.setdefault(kind, id_)

    for b in data["bios"]:
        person, text = by_id[b["id"]], b.get("text", "")
        spec = celebrity_spec if person.get("celebrity") else minority_spec
        try:
            found = bk.value_positions(tok.encode(text), person, tok)
        except UserError:
            problem("bios.jsonl: entries with words outside vocab.json", b["id"])
            continue
        if len(found) < 6:
            problem("bios.jsonl: entries that do not mention all six values", b["id"])
        if data["meta"].get("bios_from"):
            continue  # the user's own texts: no template order or name count to hold them to
        if len(found) == 6 and not spec["permute"] and sorted(bk.ATTRIBUTES, key=found.get) != list(bk.ATTRIBUTES):
            problem("bios.jsonl: entries not in the fixed attribute order", b["id"])
        if text.count(person["name"]) != (6 if spec["fullname"] else 1):
            problem(f"bios.jsonl: entries that do not name their person "
                    f"{'in every sentence' if spec['fullname'] else 'once'}", b["id"])
    for r in data["qa"]:
        try:
            tok.encode(r["question"] + " " + r["answer"])
        except UserError:
            problem("qa.jsonl: questions with words outside vocab.json", r["id"])
    return [f"{kind}: {n} (first: id {first[kind]})" for kind, n in counts.items()]


def bios_from(data_dir, bios_file, out, force=False):
    """A data directory whose biographies are the user's own texts (like the paper's bioR, written by an LLM): the
    people and questions of DATA_DIR, the texts of BIOS_FILE ({"id", "text"} lines, any number a person). A text that
    does not mention all six of its person's values verbatim is left out and listed in OUT/rejected.jsonl; every
    person must keep at least one. Words new to the vocabulary are appended to it."""
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
    vocab += sorted({w for r in rows for w in bk.words(r["text"])} - set(vocab))  # appended: the base ids stay
    tok, kept, rejected = bk.Tokenizer(vocab), [], []
    for r in rows:
        found = bk.value_positions(tok.encode(r["text"]), by_id[r["id"]], tok)
        if len(found) == 6:
            kept.append(dict(id=r["id"], text=r["text"]))
        else:
            rejected.append(dict(id=r["id"], missing=[a for a in bk.ATTRIBUTES if a not in found], text=r["text"]))
    bare = sorted(set(by_id) - {r["id"] for r in kept})
    if bare:
        raise UserError(f"{len(bare)} people (first: id {bare[0]}) have no text that mentions all six of their "
                        f"values ({len(rejected)} of the {len(rows)} texts miss a value); rewrite those texts or add "
                        "more")
    meta = dict(data["meta"], bios_from=os.path.basename(bios_file), entries_per_person=None, bioknow=bk.VERSION)

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


# Options a later step would not catch: one line each, before anything is written.

def check_options(cfg, stage="train"):
    """train's or finetune's one-line errors for options no later step would catch."""
    if not 0 <= cfg.holdout < 1 or (stage, cfg.mode, cfg.holdout > 0) == ("train", "bio", True):
        raise UserError(f"--holdout must be in [0, 1), and is for finetune or --mode mixed, got {cfg.holdout}")
    if stage == "finetune":
        if world()[1] > 1:
            raise UserError("finetune runs in one process (QA finetuning takes minutes); use torchrun for train")
        if cfg.lora_qv < 0 or cfg.lora_emb < 0:
            raise UserError(f"LoRA ranks must be >= 0 (got --lora-qv {cfg.lora_qv}, --lora-emb {cfg.lora_emb})")
        return
    if cfg.mode not in ("bio", "mixed"):
        raise UserError(f"unknown --mode {cfg.mode!r} (bio or mixed)")
    if cfg.packing not in ("stream", "entries"):
        raise UserError(f"unknown --packing {cfg.packing!r} (stream or entries)")
    if cfg.budget not in ("bio", "all"):
        raise UserError(f"unknown --budget {cfg.budget!r} (bio or all)")
    if not 0.0 <= cfg.qa_ratio <= 1.0 or (cfg.mode, cfg.budget, cfg.qa_ratio) == ("mixed", "bio", 1.0):
        raise UserError(f"--qa-ratio must be in [0, 1] (below 1 for mixed training with --budget bio), got "
                        f"{cfg.qa_ratio}")
    if cfg.objective not in ("clm", "mlm"):
        raise UserError(f"unknown --objective {cfg.objective!r} (clm or mlm)")
    if cfg.batch_size % world()[1]:
        raise UserError(f"--batch-size {cfg.batch_size} does not split over {world()[1]} processes")


# Checkpoints and resume: RUN/model.pt holds the weights and everything the next step depends on (optimiser moments,
# every RNG, the data streams' positions), so a resumed run is the run that never stopped (bitwise on a CPU).

SHAPE = ("n_layer", "n_head", "n_embd", "block_size", "rotary_frac", "rope_base", "objective")


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
    if world()[0] == 0:
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(out) if resume else ():  # what a kill during a write left behind
            if ".tmp" in name:
                os.remove(os.path.join(out, name))


def save_checkpoint(out, model, cfg, vocab, stage, step, total, opt, data, **extra):
    """OUT/model.pt: the weights (LoRA merged in), config, vocabulary, stage (pretrain or finetune), step and schedule
    length, optimiser moments, every RNG, the data's identity, and `extra` (stream positions, LoRA adapters)."""
    rng = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(),
               cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    ckpt = dict(model=bk.merged_state(model), config=dataclasses.asdict(cfg), vocab=vocab, kind=stage, step=step,
                total_steps=total, optimizer=opt.state_dict(), rng=rng, bioknow=bk.VERSION, torch=torch.__version__,
                data=data_identity(data), **extra)
    write_atomic(os.path.join(out, "model.pt"), lambda tmp: torch.save(ckpt, tmp))


def read_checkpoint(run, vocab=None):
    """RUN/model.pt as a dict and its Config; refuses a missing or corrupt file and a data vocabulary the checkpoint
    does not know."""
    path = os.path.join(run, "model.pt")
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        known = {f.name for f in dataclasses.fields(bk.Config)}  # older runs recorded fields since dropped
        cfg = bk.Config(**{k: v for k, v in ckpt["config"].items() if k in known})
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
    model = bk.GPT(cfg, len(ckpt["vocab"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise UserError(f"checkpoint {path}: weights of another model shape than its config "
                        f"({cfg.n_layer}x{cfg.n_embd}, {cfg.n_head} heads)") from None
    return model.to(device).eval(), cfg, ckpt


def resume_state(out, stage, model, opt, cfg, data, streams=None):
    """Restore a run to its last checkpoint (weights, optimiser, RNGs, stream positions) and return its step. Refuses
    another configuration or other data than the run started with."""
    ckpt, saved_cfg = read_checkpoint(out, data["vocab"])
    if ckpt.get("kind") != stage or ckpt.get("optimizer") is None:
        raise UserError(f"--resume: {out}/model.pt is not a {stage} checkpoint with training state to continue")
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
    rng = ckpt["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    for name, pos in ckpt.get("streams", {}).items():
        streams[name].seek(pos)
    return ckpt["step"]


def data_identity(data):
    """What a checkpoint records of its data: generation parameters and size (not the path, which may move)."""
    meta = data["meta"]
    return dict(people=meta.get("people"), aug=meta.get("aug"), seed=meta.get("seed"), entries=len(data["bios"])) | (
        dict(bios_from=meta["bios_from"]) if meta.get("bios_from") else {})


def run_config(out, cfg, **extra):
    """RUN/config.json: every hyper-parameter, the preset and seed, and where the numbers came from."""
    if world()[0] == 0:
        write_json(os.path.join(out, "config.json"), dict(dataclasses.asdict(cfg), **extra, torch=torch.__version__,
                                                          bioknow=bk.VERSION, commit=git_commit(),
                                                          processes=world()[1]))


def run_log(out, start=0):
    """A function appending a row to RUN/log.jsonl (rank 0; None elsewhere). On resume the rows from `start` on are
    dropped: they are redone."""
    if world()[0] > 0:
        return None
    path, rows = os.path.join(out, "log.jsonl"), []
    if start and os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by the kill
                    pass
    rewrite_jsonl(path, [r for r in rows if r["step"] < start])

    def log(row):
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    return log


def final_loss(out, losses):
    """The last logged loss (from the log when a resumed run had nothing left to do)."""
    rows = losses or read_jsonl(os.path.join(out, "log.jsonl"))
    return rows[-1]["loss"] if rows else None


def stop_if_diverged(model, first_bad, step, last_saved):
    """A non-finite loss (first_bad: its step, or -1) or weights: a one-line error that keeps the last checkpoint."""
    bad = int(first_bad)
    if bad >= 0 or not all(bool(p.isfinite().all()) for p in model.parameters()):
        kept = f"the last good checkpoint (step {last_saved}) is kept" if last_saved else "no checkpoint written"
        raise UserError(f"non-finite loss at step {bad if bad >= 0 else step}: training stopped, {kept}; "
                        f"lower --lr and train again")


# Data parallelism: `torchrun --nproc_per_node=K bioknow.py train ...` starts K processes; each builds the same global
# batch from the same stream and trains on its own slice of the rows; DistributedDataParallel averages the gradients,
# so the run follows the single-process run of the same global batch.

def world():
    """(rank, world size) under torchrun, (0, 1) otherwise; under torchrun (one process too) joins the process group
    (NCCL on GPUs, gloo on CPUs) on first use."""
    if "LOCAL_RANK" in os.environ and not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank(), torch.distributed.get_world_size()) if torch.distributed.is_initialized() \
        else (0, 1)


def barrier():
    if world()[1] > 1:
        torch.distributed.barrier()


def data_parallel(model, device):
    """The model wrapped in DistributedDataParallel under torchrun (one process a GPU); as it is otherwise."""
    if not torch.distributed.is_initialized():
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[torch.device(device).index] if device_type(device) == "cuda" else None)


def mean_over_ranks(value):
    if world()[1] > 1:
        value = value.clone()
        torch.distributed.all_reduce(value)
        value /= world()[1]
    return value


# The tables' runs: data and pretrained models made once and reused by every row that asks for the same.

def setting_data(setting, people, seed, work, celebrities=0, quiet=False):
    """WORK/data-SETTING[+celebrities], generated unless it is there as asked; celebrities: that many more people
    with multi5+permute biographies, who are P_train."""
    data_dir = os.path.join(work, f"data-{setting}" + ("+celebrities" if celebrities else ""))
    meta_path = os.path.join(data_dir, "meta.json")
    wanted = dict(people=people + celebrities, aug=setting, seed=seed, celebrities=celebrities)
    if not os.path.isfile(meta_path) or any(read_json(meta_path).get(k, 0) != v for k, v in wanted.items()):
        bk.generate(data_dir, people, setting, seed, force=True, quiet=quiet, celebrities=celebrities)
    return data_dir


def finished_pretraining(run, data, cfg, device):
    """(model, info) of RUN when it is a finished pretraining of `cfg` on `data`, to reuse; None otherwise."""
    if not os.path.isfile(os.path.join(run, "model.pt")):
        return None
    model, saved, ckpt = load_checkpoint(run, pick_device(device), data["vocab"])
    if (ckpt["kind"], ckpt["step"], ckpt.get("data")) != ("pretrain", ckpt["total_steps"], data_identity(data)) \
            or dataclasses.replace(saved, device=device) != cfg:
        return None
    return model, dict(steps=ckpt["step"], final_loss=final_loss(run, []), holdout_ids=set(ckpt.get("holdout_ids", [])))


# Rows side by side: the tables and `reproduce --jobs K` run K rows at once, a process each.

def run_rows(tasks, preset, seed, device, work, jobs=1, quiet=False, desc=""):
    """Run each task (reproduce_row's setting, method and options; a task may set its own seed and work
    directory) and yield (task, row) as rows finish. jobs > 1 runs that many rows side by side, each in a process of
    its own on one thread: a small model barely uses a second core, and a GPU has room for many. The data
    directories are made first, so no two processes write one; rows run side by side need work directories of their
    own unless they share their data only."""
    calls = [dict(preset=preset, seed=seed, device=device, work=work, quiet=True) | task for task in tasks]
    for c in calls:
        people = bk.resolve_config(preset, **c.get("train_overrides") or {}).people
        setting_data(c["setting"], people, c["seed"], c["work"], c.get("celebrities", 0), quiet=True)
    bar = tqdm(total=len(calls), desc=desc, disable=quiet)
    if jobs <= 1:
        for task, c in zip(tasks, calls):
            yield task, bk.reproduce_row(**c)
            bar.update()
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=one_thread) as pool:
        futures = {pool.submit(reproduce_row_of, c): task for task, c in zip(tasks, calls)}
        for future in as_completed(futures):
            bar.update()
            yield futures[future], future.result()


def one_thread():
    torch.set_num_threads(1)


def reproduce_row_of(kwargs):
    return bk.reproduce_row(**kwargs)


# Timing for `bench`: MFU is against the card's dense bf16 peak.

PEAK_BF16_TFLOPS = {"H200": 989, "H100": 989, "GH200": 989, "B200": 2250, "A100": 312, "L40S": 362, "L40": 181,
                    "L4": 121, "A10": 125, "4090": 165, "3090": 71}  # dense, by device name; MFU is against these


def peak_flops(device):
    """The dense bf16 peak of a CUDA card bioknow knows, in FLOP/s; None elsewhere (no MFU on a CPU)."""
    name = torch.cuda.get_device_name(device) if device_type(device) == "cuda" else ""
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)


def bench_step(cfg, vocab_size, device):
    """bioknow's own training step (training_step, the one `train` runs) at cfg's shape on one batch of random
    tokens, as a function; and the model it trains."""
    seed_everything(cfg.seed)
    model = bk.GPT(cfg, vocab_size).to(device)
    opt, fwd = bk.make_optimizer(model, cfg, device), maybe_compile(model, cfg, device)
    w = torch.randint(vocab_size, (cfg.batch_size, cfg.block_size + 1), device=device)
    return (lambda: bk.training_step(fwd, model, opt, w[:, :-1], w[:, 1:], cfg, cfg.lr, device)), model


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


# Last, so that every name above exists when bioknow.py, importing this module, asks for it: the method's pieces
# (Config, GPT, Tokenizer, ...) are looked up as bk.NAME when a function here runs.
import bioknow as bk  # noqa: E402
