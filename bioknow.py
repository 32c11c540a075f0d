"""
bioknow: one readable file that reproduces "Physics of Language Models: Part 3.1, Knowledge
Storage and Extraction" (Allen-Zhu & Li, 2023, arXiv 2309.14316) end to end.

Synthetic people get short template biographies (bioS). A GPT pretrained on all of them memorises
every fact, yet after QA finetuning on half the people (P_train) it answers questions about the
other half (P_test) only if the pretraining data was augmented (several rephrasings, shuffled
sentences, full names) or mixed with QA from the start.

Subcommands (each has --help): generate a bioS data directory, check it, train (pretrain on the
biographies, or mixed with P_train QA), finetune (QA finetuning, full or LoRA), eval (QA exact match
and memorisation), probe (where each attribute is stored), reproduce (the headline comparison ->
results/reproduce.json), bench (training-step speed).

The file reads like the paper: config, data, tokenizer, model, training, QA finetuning, evaluation,
probing, GBERT, reproduce; then the plumbing a reader may skip, the command line and the word
lists. It imports only the standard library, torch, numpy and tqdm: copied alone, it runs.

Example:
    python bioknow.py generate --out data/single --people 2000 --aug single
    python bioknow.py train --data data/single --out runs/single
    python bioknow.py finetune --run runs/single --data data/single --out runs/single-qa
    python bioknow.py eval --run runs/single-qa --data data/single --out runs/single-qa/eval.json
"""
import argparse
import ctypes
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from tqdm import tqdm

# The six attributes of a person, in bioS single's sentence order (Appendix A).
ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "company", "company_city")


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit status 2, no traceback."""


# --------------------------------------------------------------------------------------------------
# --- config
# Every field is a command-line flag (--n-layer, --qa-ratio, ...). A preset is a dict of overrides;
# its "finetune" entry overrides the same fields again for QA finetuning, so --lr means "this
# stage's learning rate" everywhere.

@dataclass
class Config:
    people: int = 1000           # N (the paper: 100,000)
    # model (Appendix B: GPT-2 with rotary on 1/4 of each head)
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    rotary_frac: float = 0.25
    rope_base: float = 10000.0
    objective: str = "clm"       # clm: the causal GPT | mlm: GBERT, full attention, masked words
    # optimisation (Appendix C: AdamW, warmup, cosine to lr/10)
    batch_size: int = 8
    lr: float = 3e-3
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1
    adam_eps: float = 1e-6
    grad_clip: float = 1.0
    warmup_steps: int = 50
    passes: float = 60.0         # pretraining: passes over bioS-single-sized biographies
    epochs: float = 10.0         # QA finetuning: passes over the P_train questions
    steps: int = 0               # if > 0, overrides passes (pretraining) or epochs (finetuning)
    mode: str = "bio"            # bio | mixed (Result 1: biographies and P_train QA in one run)
    qa_ratio: float = 0.8        # mixed: probability that a window is QA
    packing: str = "entries"     # entries: whole entries, padded | stream: windows cut anywhere
    holdout: float = 0.0         # finetune, mixed: share of P_train held out to choose a recipe
    lora_qv: int = 0             # finetune: LoRA rank on query/value (0: full; the paper: 8 or 16)
    lora_emb: int = 0            # finetune: LoRA rank of the embedding update (the paper: 128)
    # run
    preset: str = "cpu"          # the preset these values started from (recorded)
    seed: int = 0
    device: str = "auto"         # auto | cpu | cuda | mps
    compile: str = "auto"        # auto (on for CUDA) | on | off
    ckpt_every: int = 1000       # steps between checkpoints (0: only at the end), for --resume
    log_every: int = 50
    probe_steps: int = 50        # probe steps training the embedding update (Appendix E: 30,000)


PRESETS = {
    # the default: the headline comparison on a 2-core CPU within minutes
    "cpu": dict(
        people=1000, n_layer=2, n_head=4, n_embd=128, block_size=128, batch_size=8, lr=3e-3,
        warmup_steps=50, passes=60,
        finetune=dict(lr=3e-4, epochs=10, batch_size=32, weight_decay=0.01, warmup_steps=0)),
    # for unit tests: seconds
    "tiny": dict(
        people=200, n_layer=1, n_head=2, n_embd=32, block_size=128, batch_size=8, passes=4,
        warmup_steps=5, log_every=10, probe_steps=5,
        finetune=dict(lr=1e-3, epochs=1, batch_size=16, weight_decay=0.01, warmup_steps=0)),
    # the paper's: GPT-2 small, 80k steps of 96 x 512, then QA finetuning with its optimiser
    # (full finetuning; or LoRA with --lora-qv 8 --lora-emb 128)
    "paper": dict(
        people=100_000, n_layer=12, n_head=12, n_embd=768, block_size=512, batch_size=96,
        steps=80_000, lr=1e-3, weight_decay=0.1, adam_eps=1e-6, warmup_steps=1000,
        min_lr_frac=0.1, log_every=100, ckpt_every=5000, probe_steps=30_000,
        finetune=dict(lr=3e-4, weight_decay=0.01, batch_size=48, steps=50_000, warmup_steps=0)),
}
# the headline gap at toy scale: the end-to-end test
PRESETS["toy"] = dict(PRESETS["cpu"], people=300)
# the 16-setting table: 32 runs in ~90 minutes on 2 cores
PRESETS["table"] = dict(PRESETS["cpu"], people=500)
DEFAULT_PRESET = "cpu"


def resolve_config(preset=DEFAULT_PRESET, stage="train", **overrides):
    """Config defaults <- preset <- the preset's finetune overrides (stage 'finetune') <- explicit
    overrides (None: not given)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    values = {k: v for k, v in PRESETS[preset].items() if k != "finetune"}
    values["preset"] = preset
    if stage == "finetune":
        values.update(PRESETS[preset].get("finetune", {}))
    budget = "epochs" if stage == "finetune" else "passes"
    if overrides.get(budget) is not None and overrides.get("steps") is None:
        values["steps"] = 0  # an explicit --passes (--epochs) wins over a preset's steps
    given = {k: v for k, v in overrides.items() if v is not None}
    return Config(**values | given)


# --------------------------------------------------------------------------------------------------
# --- data (Appendix A): people, biographies, augmentations, questions
# Each person's six attributes are drawn independently and uniformly, and full names are unique.
# A bioS biography is one sentence per attribute, each from ~45 templates; the full name opens the
# first sentence, pronouns the rest:
#
#   Jorora Wilmond Thornwick arrived on May 17, 2024. He has always loved Oxnard, CA, the city of
#   his birth. He received an education at Washington College. He picked Industrial Engineering
#   as his field. He took a role at Aurora Media. He worked out of New York, NY.
#
# Knowledge augmentation (Result 3) rewrites it: multiM draws M entries with fresh templates,
# permute shuffles the sentences, fullname puts the name in every sentence. The six questions:
#
#   What is the birth date of Jorora Wilmond Thornwick?\nAnswer: May 17, 2024.
#   What is the birth city of Jorora Wilmond Thornwick?\nAnswer: Oxnard, CA.
#   Which university did Jorora Wilmond Thornwick study?\nAnswer: Washington College.
#   What major did Jorora Wilmond Thornwick study?\nAnswer: Industrial Engineering.
#   Which company did Jorora Wilmond Thornwick work for?\nAnswer: Aurora Media.
#   Where did Jorora Wilmond Thornwick work?\nAnswer: New York, NY.

def sample_people(n, seed):
    """n people with unique full names; the first half by id is P_train (ids follow random draws,
    so the split is random)."""
    capacity = len(FIRST_NAMES) * len(MIDDLE_NAMES) * len(LAST_NAMES)
    if n <= 0:
        raise UserError(f"--people must be positive, got {n}")
    if n > capacity:
        raise UserError(f"--people {n} exceeds the {capacity} unique full names "
                        f"the name pools allow")
    rng = random.Random(seed)
    headquarters = company_cities()
    seen = set()
    people = []
    while len(people) < n:
        first = rng.choice(FIRST_NAMES)
        middle = rng.choice(MIDDLE_NAMES)
        last = rng.choice(LAST_NAMES)
        if (first, middle, last) in seen:
            continue  # rejection sampling keeps full names unique
        seen.add((first, middle, last))
        company = rng.choice(COMPANIES)
        # the draws below happen in the order the keywords are written: keep it, or seeds change
        people.append(dict(
            id=len(people), name=f"{first} {middle} {last}",
            first_name=first, middle_name=middle, last_name=last,
            pronoun=rng.choice(("he", "she", "they")),
            birth_date=f"{rng.choice(MONTHS)} {rng.choice(DAYS)}, {rng.choice(YEARS)}",
            birth_city=rng.choice(CITIES),
            university=rng.choice(UNIVERSITIES),
            major=rng.choice(MAJORS),
            company=company,
            company_city=headquarters[company],
            split="train" if len(people) < n // 2 else "test"))
    return people


def parse_aug(spec, flag="--aug"):
    """'multi5+permute+fullname' -> {'multi': 5, 'single': False, 'permute': 1, 'fullname': True}.
    permute on single takes a count (single+permute2: two shuffled copies)."""
    parts = spec.split("+")
    base = re.fullmatch(r"single|multi([1-9]\d*)", parts[0])
    if not base:
        raise UserError(f"bad {flag} {spec!r}: must start with 'single' or 'multiM' (M >= 1), "
                        f"e.g. multi5+permute")
    aug = dict(multi=int(base.group(1) or 1), single=parts[0] == "single", permute=0,
               fullname=False)
    for part in parts[1:]:
        permute = re.fullmatch(r"permute([1-9]\d*)?", part)
        if permute and not aug["permute"] and not aug["fullname"]:
            count = permute.group(1)
            if aug["single"] and not count:
                raise UserError(f"bad {flag} {spec!r}: single takes permuteP with a count, "
                                f"e.g. single+permute2")
            if not aug["single"] and count:
                raise UserError(f"bad {flag} {spec!r}: multiM takes plain 'permute' "
                                f"(each entry is shuffled)")
            aug["permute"] = int(count or 1)
        elif part == "fullname" and not aug["fullname"]:
            aug["fullname"] = True
        else:
            raise UserError(f"bad {flag} {spec!r}: unexpected {part!r} (form: "
                            f"single[+permuteP][+fullname] or multiM[+permute][+fullname])")
    return aug


def entries_per_person(aug):
    if aug["single"] and aug["permute"]:
        return aug["permute"]
    return aug["multi"]


# each pronoun's words: subject, possessive, was, is, has
PRONOUNS = {"he": ("He", "his", "was", "is", "has"),
            "she": ("She", "her", "was", "is", "has"),
            "they": ("They", "their", "were", "are", "have")}


def template_variant(template, pronoun, with_name):
    """Fill a template's pronoun and verb slots; with_name leaves {N} for the full name, a
    singular subject."""
    if with_name:
        subject, possessive, was, is_, has = "{N}", PRONOUNS[pronoun][1], "was", "is", "has"
    else:
        subject, possessive, was, is_, has = PRONOUNS[pronoun]
    text = template.replace("{S}", subject).replace("{P}", possessive)
    return text.replace("{was}", was).replace("{is}", is_).replace("{has}", has)


def render_entry(person, order, templates, fullname):
    """One biography entry: sentences in `order`; the full name in the first sentence (or in all,
    with fullname). VARIANTS holds every template with its pronoun and verbs filled in, so rendering
    a sentence is two replacements."""
    sentences = []
    for k, attr in enumerate(order):
        with_name = fullname or k == 0
        variant = VARIANTS[attr][person["pronoun"]][with_name][templates[attr]]
        sentences.append(variant.replace("{N}", person["name"]).replace("{V}", person[attr]))
    return " ".join(sentences)


def biographies(person, aug, rng):
    """The entries of one person under an augmentation: multiM resamples templates per entry;
    permute shuffles the sentence order (single+permuteP: P shuffled copies of the same six
    sentences)."""
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
    return [render_entry(person, order(), draw_templates(), aug["fullname"])
            for _ in range(aug["multi"])]


def qa_pairs(person):
    """The six questions; the answer is the attribute's whole value."""
    return [dict(id=person["id"], attribute=a,
                 question=QUESTIONS[a].replace("{N}", person["name"]),
                 answer=person[a], split=person["split"])
            for a in ATTRIBUTES]


def qa_text(question, answer):
    return f"{question}\nAnswer: {answer}."


def generate(out, people=Config.people, aug="single", seed=0, force=False, quiet=False,
             celebrities=0, celebrity_aug="multi5+permute"):
    """Write a bioS data directory (people.jsonl, bios.jsonl, qa.jsonl, vocab.json, meta.json)
    atomically. With celebrities > 0 (Result 6), that many more people come first: celebrities,
    P_train, with biographies under celebrity_aug; the others are the minority, all P_test."""
    spec = parse_aug(aug)
    celebrity_spec = parse_aug(celebrity_aug, "--celebrity-aug")
    if os.path.exists(out) and os.listdir(out) and not force:
        raise UserError(f"{out} exists and is not empty (use --force to overwrite)")
    if celebrities < 0:
        raise UserError(f"--celebrities must be >= 0, got {celebrities}")
    t0 = time.time()
    persons = sample_people(people + celebrities, seed)
    if celebrities:
        for p in persons:
            p["celebrity"] = p["id"] < celebrities
            p["split"] = "train" if p["celebrity"] else "test"
    rng = random.Random(seed + 1)
    splits = Counter(p["split"] for p in persons)
    # no timings or paths in meta.json: the same seed gives byte-identical files
    meta = dict(people=len(persons), aug=aug, seed=seed,
                entries_per_person=entries_per_person(spec),
                n_train=splits["train"], n_test=splits["test"], bioknow=VERSION)
    if celebrities:
        meta.update(celebrities=celebrities, celebrity_aug=celebrity_aug,
                    celebrity_entries_per_person=entries_per_person(celebrity_spec))

    def write(tmp):
        with open(f"{tmp}/people.jsonl", "w") as f_people, \
                open(f"{tmp}/bios.jsonl", "w") as f_bios, \
                open(f"{tmp}/qa.jsonl", "w") as f_qa:
            progress = tqdm(persons, desc=f"generate {aug}", unit="people", disable=quiet,
                            mininterval=1)
            for p in progress:
                f_people.write(json.dumps(p) + "\n")
                texts = biographies(p, celebrity_spec if p.get("celebrity") else spec, rng)
                for text in texts:
                    f_bios.write(json.dumps(dict(id=p["id"], text=text)) + "\n")
                for row in qa_pairs(p):
                    f_qa.write(json.dumps(row) + "\n")
        write_json(f"{tmp}/meta.json", meta)
        write_json(f"{tmp}/vocab.json", VOCAB)

    write_data_dir(out, write)
    return dict(meta, seconds=round(time.time() - t0, 2))


# --------------------------------------------------------------------------------------------------
# --- tokenizer
# The paper uses GPT-2's tokenizer. bioknow's is word-level over a closed vocabulary: every name
# part, value word and template word is one token, so nothing is downloaded and the softmax is a
# few thousand tokens (cheap on a CPU).

TOKEN_RE = re.compile(r"[A-Za-z0-9&'\-]+|[.,?:]|\n")
EOS = "<eos>"
MASK = "<mask>"  # GBERT's; it comes last in the vocabulary, so no other word's id depends on it
NO_SPACE_BEFORE = {".", ",", "?", ":", "\n"}


def words(text):
    return TOKEN_RE.findall(text)


def build_vocab():
    """The closed vocabulary: <eos> first, then every word any generated text can contain, sorted,
    then <mask>."""
    filled_templates = [v for per_attr in VARIANTS.values() for per_pronoun in per_attr.values()
                        for variants in per_pronoun.values() for v in variants]
    strings = [FIRST_NAMES, MIDDLE_NAMES, LAST_NAMES, MONTHS, CITIES, UNIVERSITIES, MAJORS,
               COMPANIES, [str(d) for d in DAYS], [str(y) for y in YEARS], QUESTIONS.values(),
               ["\nAnswer: ,."], filled_templates]
    found = set()
    for group in strings:
        for s in group:
            found.update(words(s.replace("{N}", "").replace("{V}", "")))
    return [EOS] + sorted(found) + [MASK]


class Tokenizer:
    def __init__(self, vocab):
        self.vocab = list(vocab)
        self.stoi = {w: i for i, w in enumerate(self.vocab)}
        self.eos = self.stoi[EOS]
        self.mask = self.stoi.get(MASK)

    def encode(self, text):
        try:
            return [self.stoi[w] for w in words(text)]
        except KeyError as e:
            raise UserError(f"word {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids):
        tokens = [self.vocab[i] for i in ids]
        text = ""
        for i, t in enumerate(tokens):
            glued = i == 0 or t in NO_SPACE_BEFORE or tokens[i - 1] == "\n"
            text += t if glued else " " + t
        return text


# --------------------------------------------------------------------------------------------------
# --- model (Appendix B): GPT-2 with pre-LayerNorm, rotary position embeddings on 1/4 of each head
# (GPT-NeoX style) and tied input/output embeddings. GBERT (Result 7) is the same model with the
# causal mask off.

def rotary_tables(head_dim, rotary_frac, base, length):
    """cos and sin of each position's angles for the first `rot` dims of a head. sin's first half
    carries the minus sign of the rotation, so applying it is two products and a sum (no negation
    to run forward and backward)."""
    rot = int(head_dim * rotary_frac) // 2 * 2
    inv_freq = 1.0 / (base ** (torch.arange(0, rot, 2).float() / max(rot, 1)))
    angles = torch.outer(torch.arange(length).float(), inv_freq)  # (T, rot / 2)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1)
    sin = torch.cat([-angles.sin(), angles.sin()], dim=-1)
    return cos, sin


def apply_rotary(x, cos, sin):
    """Rotate the first `rot` dims of each head by position, as pairs (i, i + rot/2); the rest
    pass through."""
    rot = cos.shape[-1]
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    x_rot = x[..., :rot]
    x_pass = x[..., rot:]
    swapped = torch.cat([x_rot[..., rot // 2:], x_rot[..., :rot // 2]], dim=-1)
    return torch.cat([x_rot * cos + swapped * sin, x_pass], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.n_head
        self.causal = cfg.objective != "mlm"  # GBERT attends both ways
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)  # one fused projection
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x, cos, sin, cache=None, start=0, mask=None):
        """cache: this layer's (2, B, H, max_len, head_dim) key/value buffer for decoding; `start`
        is the position of x's first token. A prompt (start 0) attends causally (unless GBERT); one
        new token attends to everything cached. mask: (B, 1, T, T), True where a query may attend
        (the probing section's attention cut); it replaces the causal mask."""
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head)
        # q and k rotated in one go, in the (B, T, H, head_dim) layout the kernels read fastest
        qk = apply_rotary(qkv[:, :, :2], cos[:, None, None], sin[:, None, None])
        q = qk[:, :, 0].transpose(1, 2)
        k = qk[:, :, 1].transpose(1, 2)
        v = qkv[:, :, 2].transpose(1, 2)
        if cache is not None:
            assert start == 0 or T == 1, "decode one token at a time after the prompt"
            cache[0, :, :, start:start + T] = k
            cache[1, :, :, start:start + T] = v
            k = cache[0, :, :, :start + T]
            v = cache[1, :, :, :start + T]
        if mask is None:  # the flash kernel on a GPU
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal and start == 0)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        # exact GELU: twice as fast as the tanh form on a CPU (measured)
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cache=None, start=0, mask=None):
        x = x + self.attn(self.ln1(x), cos, sin, cache, start, mask)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        # The embedding has rows up to a multiple of 64 (as nanoGPT pads GPT-2's 50,257 to
        # 50,304): the output matmuls run 4-6% faster on a CPU; the extra rows are never a target
        # and never decoded.
        rows = -(-vocab_size // 64) * 64
        self.causal = cfg.objective != "mlm"
        self.wte = nn.Embedding(rows, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, rows, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2
        head_dim = cfg.n_embd // cfg.n_head
        cos, sin = rotary_tables(head_dim, cfg.rotary_frac, cfg.rope_base, cfg.block_size)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:  # GPT-2 init; residual projections scaled down by depth
                if name.endswith("proj.weight"):
                    std = 0.02 / math.sqrt(2 * cfg.n_layer)
                else:
                    std = 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def hidden(self, idx, cache=None, start=0, wte=None, layer=None):
        """Last-layer hidden states (after the final LayerNorm): what the probes read. With a cache
        (new_cache), idx continues a sequence at position `start`; `wte` replaces the input
        embedding (the probes' update); `layer` K < n_layer: the residual stream after block K
        instead (0: the embedding), the later blocks not run."""
        T = idx.shape[1]
        max_len = self.cos.shape[0]
        assert start + T <= max_len, f"sequence of {start + T} tokens exceeds block_size {max_len}"
        cos = self.cos[start:start + T]
        sin = self.sin[start:start + T]
        x = self.wte(idx) if wte is None else F.embedding(idx, wte)
        for i, block in enumerate(self.blocks):
            if i == layer:
                return x
            layer_cache = None if cache is None else cache[i]
            x = block(x, cos, sin, layer_cache, start)
        return self.ln_f(x)

    def new_cache(self, batch, length, dtype):
        """Key/value buffers for decoding `batch` sequences of up to `length` tokens."""
        n_head = self.blocks[0].attn.n_head
        shape = (2, batch, n_head, length, self.wte.embedding_dim // n_head)
        return [self.wte.weight.new_empty(shape, dtype=dtype) for _ in self.blocks]

    def forward(self, idx, targets=None, cache=None, start=0):
        logits = self.lm_head(self.hidden(idx, cache, start))
        if targets is None:
            return logits[..., :self.vocab_size], None
        flat_logits = logits.view(-1, logits.size(-1)).float()
        loss = F.cross_entropy(flat_logits, targets.reshape(-1), ignore_index=-1)
        return logits, loss


# --------------------------------------------------------------------------------------------------
# --- pretraining and mixed training (Appendix C; Result 1)
# Biography entries, shuffled across people, are concatenated with EOS between them into windows.
# bioknow packs whole entries only, so no attribute lands in another window than its person's name
# (the paper's 512-token windows rarely cut one; 128-token windows cut 44% of entries). The budget
# is counted in passes over bioS-single-sized data, so every augmentation gets the same compute.
# Mixed training (Result 1) draws each window from the biographies or from the P_train QA pairs (QA
# with probability qa_ratio), from scratch, giving the biographies the passes of bio pretraining.

# Every random draw of training is a function of (seed, stream id, step or pass), so a resumed run
# draws what the original drew. The stream ids:
RNG_BIO_STREAM = 0      # the order of biography entries in each pass
RNG_QA_STREAM = 1       # mixed training: the order of P_train QA pairs in each pass
RNG_QA_SHARE = 2        # mixed training: how many windows of a batch are QA
RNG_FINETUNE_ORDER = 3  # QA finetuning: the order of the questions in each epoch
RNG_MLM_MASK = 4        # GBERT: which words are masked


def encode_entries(texts, tok):
    """Token arrays of entries, each prefixed with EOS (the separator between packed entries)."""
    return [np.array([tok.eos] + tok.encode(t), dtype=np.int64) for t in texts]


class PackedStream:
    """An endless stream of packed windows. Pass k is every entry once, in an order drawn from
    (key, k), concatenated. packing "stream": windows of T+1 tokens are cut with stride T, so no
    token is padding and an entry may run across two windows. packing "entries": each window holds
    whole entries only and is padded with -1. The tokens live on the training device and each pass
    is assembled there by one gather, so a GPU is never fed by a Python loader. The whole state is
    `pos`, the tokens consumed: seek(pos) resumes the stream."""

    def __init__(self, entries, block_size, key, device="cpu", pos=0, packing="stream"):
        self.lengths_np = np.array([len(e) for e in entries], dtype=np.int64)
        self.flat = torch.from_numpy(np.concatenate(entries)).to(device)
        starts = np.cumsum(self.lengths_np) - self.lengths_np
        self.starts = torch.from_numpy(starts).to(device)
        self.lengths = torch.from_numpy(self.lengths_np).to(device)
        self.T = block_size
        self.key = list(key)
        self.pass_len = int(self.lengths_np.sum())
        self.packing = packing
        self.seek(pos)

    def order(self, k):
        return np.random.default_rng(self.key + [k]).permutation(len(self.lengths))

    def pass_tokens(self, k):
        order = torch.from_numpy(self.order(k)).to(self.flat.device)
        lengths = self.lengths[order]
        # token j of the pass is token j - (where its entry begins in the pass) of that entry in
        # `flat`
        begins_in_pass = torch.cumsum(lengths, 0) - lengths
        shift = torch.repeat_interleave(self.starts[order] - begins_in_pass, lengths,
                                        output_size=self.pass_len)
        return self.flat[torch.arange(self.pass_len, device=self.flat.device) + shift]

    def pass_windows(self, k):
        """packing "entries": pass k as (windows, T+1) rows of whole entries padded with -1, and
        each row's length. A window takes entries in pass order while they fit (an entry longer
        than a window is cut)."""
        bounds = np.concatenate([[0], np.cumsum(self.lengths_np[self.order(k)])])
        cuts = [0]
        start = 0
        while start < self.pass_len:
            last_fitting = np.searchsorted(bounds, start + self.T + 1, side="right") - 1
            end = int(bounds[last_fitting])
            start = end if end > start else min(start + self.T + 1, self.pass_len)
            cuts.append(start)
        cuts = np.array(cuts)
        lengths = np.diff(cuts)
        offsets = np.arange(self.T + 1)
        tokens = self.pass_tokens(k)
        index = np.minimum(cuts[:-1, None] + offsets, self.pass_len - 1)
        index = torch.from_numpy(index).to(tokens.device)
        pad = torch.from_numpy(offsets >= lengths[:, None]).to(tokens.device)
        return tokens[index].masked_fill(pad, -1), lengths

    def seek(self, pos):
        k = pos // self.pass_len
        self.pos = pos
        self.next_pass = k + 1
        if self.packing == "entries":  # pos is always where a window began
            rows, lengths = self.pass_windows(k)
            row_starts = np.cumsum(lengths) - lengths
            row = int(np.searchsorted(row_starts, pos - k * self.pass_len))
            self.buf = rows[row:]
            self.buf_lengths = lengths[row:]
        else:  # starts at pos, ends where pass k ends
            self.buf = self.pass_tokens(k)[pos - k * self.pass_len:]

    def windows(self, n):
        """(n, T+1) windows: consecutive ones overlap by one token (stream), or hold whole entries
        (entries)."""
        if self.packing == "entries":
            while len(self.buf) < n:
                rows, lengths = self.pass_windows(self.next_pass)
                self.buf = torch.cat([self.buf, rows])
                self.buf_lengths = np.concatenate([self.buf_lengths, lengths])
                self.next_pass += 1
            out = self.buf[:n]
            self.pos += int(self.buf_lengths[:n].sum())
            self.buf = self.buf[n:]
            self.buf_lengths = self.buf_lengths[n:]
            return out
        if n == 0:
            return self.buf.new_empty((0, self.T + 1))
        while len(self.buf) < n * self.T + 1:
            self.buf = torch.cat([self.buf, self.pass_tokens(self.next_pass)])
            self.next_pass += 1
        out = self.buf[:n * self.T + 1].unfold(0, self.T + 1, self.T)
        self.buf = self.buf[n * self.T:]
        self.pos += n * self.T
        return out


def pretraining_steps(cfg, data, bio_tokens, tokens_per_window=None):
    """Steps for cfg.passes over bioS-single-sized biographies: augmented data gets the same
    compute. Mixed training gives the biographies those passes too, so its steps are
    1 / (1 - qa_ratio) times as many: the paper's mixed runs memorise their biographies
    (Appendix C). tokens_per_window: the mean of whole-entry packing."""
    if cfg.steps > 0:
        return cfg.steps
    entries_per_person_mean = len(data["bios"]) / len(data["people"])
    single_tokens = bio_tokens / entries_per_person_mean  # tokens of one entry a person
    steps = cfg.passes * single_tokens / (cfg.batch_size * (tokens_per_window or cfg.block_size))
    if cfg.mode == "mixed":
        steps = steps / (1 - cfg.qa_ratio)
    return max(1, math.ceil(steps))


def training_batch(streams, cfg, step):
    """A batch of windows. In mixed training (Result 1) every window is all biography or all
    P_train QA, QA with probability qa_ratio (drawn from (seed, step), so a resumed run draws the
    same); bio pretraining has no QA stream."""
    n_qa = 0
    if "qa" in streams:
        draw = np.random.default_rng([cfg.seed, RNG_QA_SHARE, step])
        n_qa = int(draw.binomial(cfg.batch_size, cfg.qa_ratio))
    windows = [streams["bio"].windows(cfg.batch_size - n_qa)]
    if n_qa:
        windows.append(streams["qa"].windows(n_qa))
    return torch.cat(windows)


def lr_at(step, total, cfg):
    """Linear warmup, then cosine from lr down to lr * min_lr_frac."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    floor = cfg.min_lr_frac
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model, cfg, device):
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [dict(params=decay, weight_decay=cfg.weight_decay),
              dict(params=no_decay, weight_decay=0.0)]
    # a fused kernel on CUDA; on a CPU one op a step for all tensors (foreach)
    cuda = device_type(device) == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=cfg.adam_eps,
                             fused=cuda or None, foreach=None if cuda else True)


def train(cfg, data_dir, out, force=False, quiet=False, resume=False):
    """Pretrain from scratch on biographies (mode bio) or biographies + P_train QA (mode mixed);
    writes RUN/model.pt. With resume, continue RUN from its last checkpoint exactly as if it had
    never stopped."""
    check_options(cfg)
    data = load_checked_data(data_dir)
    if cfg.objective == "mlm" and MASK not in data["vocab"]:
        raise UserError(f"{data_dir}/vocab.json has no {MASK} token for --objective mlm "
                        f"(generate the data again)")
    device = pick_device(cfg.device)
    new_run_dir(out, force, resume)
    tune_for(device)
    seed_everything(cfg.seed)
    tok = Tokenizer(data["vocab"])
    bios = encode_entries([b["text"] for b in data["bios"]], tok)
    model = GPT(cfg, len(tok.vocab)).to(device)
    opt = make_optimizer(model, cfg, device)
    # The data order is a function of (seed, stream, pass), so the streams' positions are all a
    # checkpoint needs.
    streams = dict(bio=PackedStream(bios, cfg.block_size, key=(cfg.seed, RNG_BIO_STREAM),
                                    device=device, packing=cfg.packing))
    # held-out P_train people's QA never enters the stream: what a mixed recipe is chosen on
    qa_ids, held = split_holdout(data["people"], cfg.holdout, cfg.seed)
    if cfg.mode == "mixed":
        qa = [qa_text(r["question"], r["answer"]) for r in data["qa"] if r["id"] in qa_ids]
        streams["qa"] = PackedStream(encode_entries(qa, tok), cfg.block_size,
                                     key=(cfg.seed, RNG_QA_STREAM), device=device,
                                     packing=cfg.packing)
    bio_tokens = sum(len(b) for b in bios)
    tokens_per_window = None
    if cfg.packing == "entries":
        tokens_per_window = bio_tokens / len(streams["bio"].buf)
    total = pretraining_steps(cfg, data, bio_tokens, tokens_per_window)
    start = 0
    if resume:
        start = resume_state(out, "pretrain", model, opt, cfg, data, streams)
    else:
        run_config(out, cfg, data=os.path.abspath(data_dir), steps_resolved=total,
                   holdout_ids=sorted(held))

    def next_batch(step):
        w = training_batch(streams, cfg, step)
        x = w[:, :-1].clamp(min=0)  # whole-entry packing pads with -1: an EOS, never a target
        if cfg.objective == "mlm":
            return mlm_inputs(x, tok, [cfg.seed, RNG_MLM_MASK, step])
        return x, w[:, 1:]

    def save(step):
        positions = {name: stream.pos for name, stream in streams.items()}
        save_checkpoint(out, model, cfg, tok.vocab, "pretrain", step, total, opt, data,
                        streams=positions, holdout_ids=sorted(held))

    info = run_steps(model, opt, cfg, device, start, total, next_batch, f"train {cfg.mode}", out,
                     quiet, save)
    return model, dict(info, holdout_ids=held)


def training_step(fwd, model, opt, x, y, cfg, lr, device):
    """One optimiser step (forward, backward, clip, AdamW); returns the loss tensor without a
    device sync."""
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


def run_steps(model, opt, cfg, device, start, total, next_batch, desc, out, quiet, save):
    """The optimisation loop of pretraining and finetuning, from step `start` (0, or a
    checkpoint's) to `total`. next_batch(step) -> (x, y), y = -1 ignored; save(step) writes a
    checkpoint every cfg.ckpt_every steps and at the end; RUN/log.jsonl gets a line every
    cfg.log_every steps. A non-finite loss stops the run before anything after it is saved. Under
    torchrun each process trains on its slice of the batch and only rank 0 writes."""
    rank, size = world()
    model.train()
    # under torchrun: gradients averaged over the processes
    fwd = data_parallel(maybe_compile(model, cfg, device), device)
    log = run_log(out, start)
    t0 = time.time()
    # the first step with a non-finite loss, or -1; kept on the device so no step waits for it
    first_bad = torch.full((), -1, device=device)
    last_saved = start
    losses = []
    tokens = 0
    interval_start = time.time()  # tokens/s is over the last log interval
    interval_tokens = 0
    bar = tqdm(range(start, total), desc=desc, unit="step", disable=quiet or rank > 0,
               mininterval=1, initial=start, total=total)
    for step in bar:
        x, y = next_batch(step)
        if size > 1:
            x = x.chunk(size)[rank]
            y = y.chunk(size)[rank]
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        loss = training_step(fwd, model, opt, x, y, cfg, lr_at(step, total, cfg), device)
        first_bad = torch.where((first_bad < 0) & ~loss.isfinite(), step, first_bad)
        tokens += x.numel() * size
        if step % cfg.log_every == 0 or step == total - 1:
            stop_if_diverged(model, first_bad, step, last_saved)
            rate = (tokens - interval_tokens) / (time.time() - interval_start)
            interval_start = time.time()
            interval_tokens = tokens
            losses.append(dict(step=step, loss=round(mean_over_ranks(loss).item(), 4),
                               lr=opt.param_groups[0]["lr"], tokens_per_sec=round(rate)))
            bar.set_postfix(loss=f"{losses[-1]['loss']:.3f}", tok_s=f"{rate:,.0f}")
            if log:
                log(losses[-1])
        checkpoint_due = cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0
        if step + 1 == total or checkpoint_due:
            # never overwrite a good checkpoint with a diverged one
            stop_if_diverged(model, first_bad, step, last_saved)
            if rank == 0:
                save(step + 1)
            last_saved = step + 1
    model.eval()
    return dict(steps=total, resumed_from=start, final_loss=final_loss(out, losses),
                minutes=(time.time() - t0) / 60)

# --------------------------------------------------------------------------------------------------
# --- QA finetuning and LoRA (Results 2-3, Appendix D)
# The pretrained model is finetuned on the questions of P_train people only, the loss on the answer
# tokens; P_test questions are never trained on. The paper finetunes with LoRA (rank 8-16 on
# query/value, 128 on the embedding) or fully; without augmentation no recipe makes P_test
# extractable (Figure 2).

def qa_prompt(tok, question):
    """EOS question \\n Answer: -- what the model sees before an answer, in finetuning and in
    evaluation."""
    return [tok.eos] + tok.encode(question + "\nAnswer:")


def qa_example(tok, row):
    """(tokens, targets) for one QA pair: EOS question \\n Answer: value . EOS, the targets -1 (no
    loss) wherever the next token is still the prompt's: the loss is on the answer only."""
    prompt = qa_prompt(tok, row["question"])
    tokens = prompt + tok.encode(f" {row['answer']}.") + [tok.eos]
    inputs = tokens[:-1]
    targets = [-1] * (len(prompt) - 1) + tokens[len(prompt):]
    return inputs, targets


def pad_batch(rows, pad):
    """(x, y) of a batch of (tokens, targets) rows, padded at the end: tokens with `pad`, targets
    with -1."""
    x = [torch.tensor(tokens) for tokens, _ in rows]
    y = [torch.tensor(targets) for _, targets in rows]
    return (nn.utils.rnn.pad_sequence(x, batch_first=True, padding_value=pad),
            nn.utils.rnn.pad_sequence(y, batch_first=True, padding_value=-1))


def split_holdout(people, fraction, seed):
    """P_train ids for finetuning, and the held-out P_train ids used to choose the recipe (never
    P_test)."""
    train_ids = sorted(p["id"] for p in people if p["split"] == "train")
    held = set()
    if fraction > 0:
        held = set(random.Random(seed).sample(train_ids, int(len(train_ids) * fraction)))
    return set(train_ids) - held, held


class LowRankUpdate(nn.Module):
    """W -> W + B @ A on chosen row blocks of W: a LoRA adapter (Hu et al. 2021) written as a
    parametrization, so the model's code is unchanged and the merged weight is simply
    `module.weight`. B starts at zero, so finetuning starts from the pretrained model; only A and B
    train."""

    def __init__(self, shape, rank, blocks=1, active=(0,)):
        super().__init__()
        rows, cols = shape
        self.blocks = blocks
        self.active = active
        self.A = nn.ParameterList(
            nn.Parameter(torch.randn(rank, cols) * cols ** -0.5) for _ in active)
        self.B = nn.ParameterList(nn.Parameter(torch.zeros(rows // blocks, rank)) for _ in active)

    def forward(self, W):
        parts = list(W.chunk(self.blocks))
        for i, a, b in zip(self.active, self.A, self.B):
            parts[i] = parts[i] + b @ a
        return torch.cat(parts)


def add_lora(model, rank_qv, rank_emb):
    """Freeze the model and add LoRA: rank_qv on each layer's query and value (blocks 0 and 2 of the
    fused qkv projection), rank_emb on the embedding, which is tied to the output layer: one update
    serves both."""
    model.requires_grad_(False)
    if rank_qv:
        for block in model.blocks:
            qkv = block.attn.qkv
            update = LowRankUpdate(qkv.weight.shape, rank_qv, blocks=3, active=(0, 2))
            parametrize.register_parametrization(qkv, "weight", update)
    if rank_emb:
        update = LowRankUpdate(model.wte.weight.shape, rank_emb)
        for module in (model.wte, model.lm_head):
            parametrize.register_parametrization(module, "weight", update)
    return model


def lora_state(model):
    """The adapters' tensors by name: what a LoRA checkpoint needs besides the base run to
    continue."""
    return {k: v.detach().clone() for k, v in model.named_parameters()
            if "parametrizations" in k and ".original" not in k}


def merged_state(model):
    """The weights with every LoRA update folded in: a plain GPT state dict that eval and probe load
    as is."""
    state = {k: v for k, v in model.state_dict().items() if ".parametrizations." not in k}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            state[f"{name}.weight"] = module.weight.detach().clone()  # W + B @ A
    return state


def finetune(cfg, run, data_dir, out, force=False, quiet=False, resume=False, shape=None):
    """QA finetuning of a pretrained run on P_train questions: full, or LoRA (cfg.lora_qv,
    cfg.lora_emb) with the base frozen and the adapters merged into the saved weights. The model's
    shape comes from the pretrained checkpoint; `shape` holds the shape flags a user gave, which
    must agree with it."""
    check_options(cfg, "finetune")
    data = load_checked_data(data_dir)
    device = pick_device(cfg.device)
    model, base_cfg, ckpt = load_checkpoint(run, device, data["vocab"], shape)
    check_same_people(ckpt, data, run)
    for field in MODEL_SHAPE_FIELDS:
        setattr(cfg, field, getattr(base_cfg, field))
    new_run_dir(out, force, resume)
    seed_everything(cfg.seed)
    if cfg.lora_qv or cfg.lora_emb:
        # after seeding: the adapters' start is part of the run
        add_lora(model, cfg.lora_qv, cfg.lora_emb)
    tok = Tokenizer(data["vocab"])
    train_ids, held = split_holdout(data["people"], cfg.holdout, cfg.seed)
    example = mlm_qa_example if cfg.objective == "mlm" else qa_example
    examples = [example(tok, r) for r in data["qa"] if r["id"] in train_ids]
    per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = cfg.steps if cfg.steps > 0 else max(1, math.ceil(cfg.epochs * per_epoch))
    opt = make_optimizer(model, cfg, device)
    start = resume_state(out, "finetune", model, opt, cfg, data) if resume else 0
    if not resume:
        run_config(out, cfg, base=os.path.abspath(run), data=os.path.abspath(data_dir),
                   steps_resolved=total, holdout_ids=sorted(held))
    x_all, y_all = pad_batch(examples, tok.eos)
    x_all = x_all.to(device)  # every example, resident on the device
    y_all = y_all.to(device)
    lengths = np.array([len(x) for x, _ in examples])
    orders = {}  # the current epoch's order of the examples

    def next_batch(step):
        """Epoch e visits the examples in an order drawn from (seed, e): a function of the step, so
        resumable. A batch is cut to its longest example."""
        epoch, batch_in_epoch = divmod(step, per_epoch)
        if epoch not in orders:
            orders.clear()
            rng = np.random.default_rng([cfg.seed, RNG_FINETUNE_ORDER, epoch])
            orders[epoch] = rng.permutation(len(examples))
        first = batch_in_epoch * cfg.batch_size
        rows = orders[epoch][first:first + cfg.batch_size]
        idx = torch.from_numpy(rows).to(device)
        T = int(lengths[rows].max())
        return x_all[idx, :T], y_all[idx, :T]

    def save(step):
        save_checkpoint(out, model, cfg, tok.vocab, "finetune", step, total, opt, data,
                        holdout_ids=sorted(held), lora=lora_state(model))

    info = run_steps(model, opt, cfg, device, start, total, next_batch, desc="finetune", out=out,
                     quiet=quiet, save=save)
    return model, dict(info, holdout_ids=held)


# --------------------------------------------------------------------------------------------------
# --- evaluation (Results 1-3): exact match of the whole answer, and memorisation of the biographies
# A question counts only when the whole value is generated (greedy decoding; the paper's beam 4
# gives similar results). Memorisation is the paper's training target (Appendix C): each
# attribute's first token predicted inside the biography, > 99%.

@torch.no_grad()
def greedy_answers(model, prompts, max_new, device):
    """Greedy decoding for same-length prompts (B, P), the whole batch at once with a key/value
    cache: one forward over the prompts, then one token per step. Returns (B, max_new) generated
    token ids."""
    x = prompts.to(device)
    dtype = torch.bfloat16 if device_type(device) == "cuda" else torch.float32
    cache = model.new_cache(x.shape[0], x.shape[1] + max_new, dtype)
    out = []
    start = 0
    for _ in range(max_new):
        with autocast(device):
            logits, _ = model(x, cache=cache, start=start)
        start += x.shape[1]
        x = logits[:, -1].argmax(-1, keepdim=True)
        out.append(x)
    return torch.cat(out, dim=1).cpu()


def exact_match(generated, answer_ids, eos):
    """True when the generated tokens up to the first EOS are exactly the answer's tokens (value and
    final '.')."""
    generated = list(generated)
    if eos in generated:
        generated = generated[:generated.index(eos)]
    return generated == list(answer_ids)


@torch.no_grad()
def qa_accuracies(model, tok, rows, device, batch_size=1024, quiet=True):
    """Exact-match and first-token accuracy (%) per attribute and mean, from one greedy decoding
    (first token: only the answer's first token must match, Figure 2's measure for P_train). Names
    are three tokens, so each attribute's questions have one length and batch without padding."""
    if not model.causal:
        return mlm_qa_accuracies(model, tok, rows, device, batch_size)
    correct = {a: [] for a in ATTRIBUTES}
    first = {a: [] for a in ATTRIBUTES}
    groups = {}  # (attribute, prompt length) -> [(prompt, answer tokens)]
    for r in rows:
        prompt = qa_prompt(tok, r["question"])
        answer = tok.encode(f" {r['answer']}.")
        groups.setdefault((r["attribute"], len(prompt)), []).append((prompt, answer))
    for (attr, _), items in tqdm(groups.items(), desc="eval QA", disable=quiet):
        max_new = max(len(a) for _, a in items) + 1
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            gen = greedy_answers(model, torch.tensor([p for p, _ in chunk]), max_new, device)
            correct[attr] += [exact_match(g.tolist(), a, tok.eos) for g, (_, a) in zip(gen, chunk)]
            first[attr] += [g[0].item() == a[0] for g, (_, a) in zip(gen, chunk)]
    return percentages(correct), percentages(first)


def percentages(correct):
    """Per attribute, the % of its list that is true (None when the list is empty), then "mean":
    the mean over the attributes that have one."""
    acc = {}
    for attr, hits in correct.items():
        acc[attr] = round(100.0 * sum(hits) / len(hits), 2) if hits else None
    present = [v for v in acc.values() if v is not None]
    acc["mean"] = round(sum(present) / len(present), 2) if present else None
    return acc


def value_positions(tokens, person, tok):
    """Index of each attribute's first value token in an entry, found by value match (so it works
    for any sentence order); longer values are placed first so a city inside nothing else is never
    taken twice."""
    taken = set()  # positions already given to an attribute
    found = {}
    for attr in sorted(ATTRIBUTES, key=lambda a: -len(person[a])):
        value = tok.encode(person[attr])
        for i in range(len(tokens) - len(value) + 1):
            if tokens[i:i + len(value)] != value:
                continue
            span = set(range(i, i + len(value)))
            if not taken & span:
                found[attr] = i
                taken |= span
                break
    return found


def first_entries(data):
    """Each person's first biography entry, by id (read from the end, so the first one is what
    stays)."""
    return {b["id"]: b["text"] for b in reversed(data["bios"])}


@torch.no_grad()
def predicted_tokens(model, seqs, pad, device):
    """The model's argmax token at every position of each sequence, the batch padded at the end
    with `pad`."""
    T = max(len(s) for s in seqs)
    x = torch.tensor([s + [pad] * (T - len(s)) for s in seqs]).to(device)
    with autocast(device):
        logits, _ = model(x)
        return logits.argmax(-1).cpu()


# A run whose P_test biographies are memorised below this (mean first-token %) does not test the
# paper's claim: P_test QA cannot exceed what is memorised. Reports mark such rows "not memorised".
MEMORISED = 95.0


@torch.no_grad()
def memorised_by_attribute(model, tok, data, ids, device, batch_size=256):
    """Per attribute, whether each person of `ids` has it memorised in their first biography entry:
    the model, fed the entry, predicts the attribute's first token at the position just before
    it."""
    by_id = {p["id"]: p for p in data["people"]}
    first_entry = first_entries(data)
    if not model.causal:
        return mlm_memorised(model, tok, by_id, first_entry, ids, device, batch_size)
    max_len = model.cos.shape[0]  # the model's context length
    correct = {a: [] for a in ATTRIBUTES}
    for i in range(0, len(ids), batch_size):
        batch_ids = ids[i:i + batch_size]
        seqs = [([tok.eos] + tok.encode(first_entry[j]))[:max_len] for j in batch_ids]
        pred = predicted_tokens(model, seqs, tok.eos, device)
        for s, p, j in zip(seqs, pred, batch_ids):
            for attr, pos in value_positions(s, by_id[j], tok).items():
                correct[attr].append(bool(p[pos - 1] == s[pos]))
    return correct


def evaluate(model, data, device, quiet=True, pretrained=None, per_split=2000, held=()):
    """A run's numbers: QA exact match on P_train and on P_test, and memorisation of the biographies
    (by `pretrained`, the model before QA finetuning, when given) of up to `per_split` people of
    each split, for each split and for both together. `held`: held-out P_train people, whose QA is
    scored apart (qa_holdout): what a recipe is chosen on."""
    tok = Tokenizer(data["vocab"])
    memorising_model = pretrained or model  # memorisation is the pretrained model's
    memorised = {}
    for split in ("train", "test"):
        ids = sorted(p["id"] for p in data["people"] if p["split"] == split)[:per_split]
        memorised[split] = memorised_by_attribute(memorising_model, tok, data, ids, device)
    both = percentages({a: memorised["train"][a] + memorised["test"][a] for a in ATTRIBUTES})

    def qa_exact_match(keep):
        """Exact match (%) per attribute and mean on the questions `keep` accepts."""
        rows = [r for r in data["qa"] if keep(r)]
        return qa_accuracies(model, tok, rows, device, quiet=quiet)[0]

    held_out = {}
    if held:
        held_out["qa_holdout"] = qa_exact_match(lambda r: r["id"] in held)
    result = dict(bio_memorization=both["mean"],
                  bio_memorization_min=min(both[a] for a in ATTRIBUTES),
                  bio_memorization_per_attribute=both,
                  memorization_p_train=percentages(memorised["train"]),
                  memorization_p_test=percentages(memorised["test"]))
    result["qa_train"] = qa_exact_match(lambda r: r["split"] == "train" and r["id"] not in held)
    result["qa_test"] = qa_exact_match(lambda r: r["split"] == "test")
    result.update(held_out)
    return result


# --------------------------------------------------------------------------------------------------
# --- probing (Results 4-5, Appendices E-F; Figures 5 and 7)
# Where does the frozen pretrained model keep each fact? A linear read-out of the last layer at one
# position: if it recovers an attribute for people it was not trained on, the attribute is (nearly)
# linearly stored there. P-probing reads a biography just before each attribute; Q-probing reads
# the bare full name. The model's weights never change. bioknow can read after any block too
# (`layer`), to follow a fact through the model.

# What is predicted: the first token (for birth date: the month), and the whole value.
PROBE_TARGETS = {"first_token": ATTRIBUTES, "whole": ATTRIBUTES[1:]}
# What trains, per attribute: a low-rank update of the input embedding, a normalisation and linear
# classifiers. P-probing (Appendix E): a rank-2 update, LayerNorm, batches of 50 people. Q-probing
# (Appendix F): a rank-16 update, BatchNorm, batches of 200 people.
P_PROBE = dict(rank=2, norm="layer", batch_size=50)
Q_PROBE = dict(rank=16, norm="batch", batch_size=200)
# The read-outs are first fitted on the frozen features, full batch (fit_probe): 300 steps at 3e-3
# match 1,000 at the paper's 1e-3 to within 1.2 points on every cell of the cpu-preset grids.
# Dropout and weight decay as the paper.
PROBE_HEAD_STEPS = 300
PROBE_HEAD_LR = 3e-3
PROBE_WEIGHT_DECAY = 0.3
PROBE_DROPOUT = 0.1


def probe_classes(people, tok):
    """For every (target, attribute): the classes (first tokens, or whole values), numbered over all
    people so train and test share them, and each person's class id."""
    classes = {}
    for target, attrs in PROBE_TARGETS.items():
        for attr in attrs:
            if target == "first_token":
                keys = [tok.encode(p[attr])[0] for p in people]
            else:
                keys = [p[attr] for p in people]
            names = sorted(set(keys), key=str)
            index = {k: i for i, k in enumerate(names)}
            classes[target, attr] = names, torch.tensor([index[k] for k in keys])
    return classes


def candidate_embeddings(people, tok, wte):
    """bioknow's read-out for values never seen in probe training: each class as the model's own
    (tied) embedding of its first token, or the mean over the tokens of its whole value. A class no
    probe-training person has still has its row, so it can be scored; the paper's linear classifier
    cannot score it."""

    def class_embedding(name):
        if isinstance(name, int):  # a first token
            return wte[name]
        return wte[tok.encode(name)].mean(0)  # a whole value

    candidates = {}
    for key, (names, _) in probe_classes(people, tok).items():
        candidates[key] = torch.stack([class_embedding(name) for name in names]).detach()
    return candidates


def p_probe_inputs(data, tok):
    """Each person's first biography entry (EOS first, as in training) and its six read positions,
    in sentence order: the token just before each attribute's first token."""
    first = first_entries(data)
    seqs = [[tok.eos] + tok.encode(first[p["id"]]) for p in data["people"]]
    positions = []
    for seq, person in zip(seqs, data["people"]):
        positions.append(sorted(i - 1 for i in value_positions(seq, person, tok).values()))
    return seqs, positions


def q_probe_inputs(data, tok, read="name"):
    """The bare full name after a start token (EOS). read="name": read at the name's last token;
    read="end": an end token (EOS) follows the name and is read, as the paper describes."""
    end = [tok.eos] if read == "end" else []
    seqs = [[tok.eos] + tok.encode(p["name"]) + end for p in data["people"]]
    return seqs, [[len(s) - 1] for s in seqs]


class ProbeHeads(nn.Module):
    """One read-out per position, stacked on a leading position axis so all positions train in one
    matmul: a normalisation (LayerNorm for P-probing, BatchNorm for Q-probing) and a linear
    classifier (the paper's) or, given candidate embeddings (classes, dim), a linear map scored
    against them (bioknow's, which starts as the model's own output layer and scores classes it
    never saw)."""

    def __init__(self, n_pos, dim, classes, norm, candidates=None):
        super().__init__()
        self.norm = norm
        self.gamma = nn.Parameter(torch.ones(n_pos, dim))
        self.beta = nn.Parameter(torch.zeros(n_pos, dim))
        if candidates is None:
            self.candidates = None
            bound = dim ** -0.5
            self.weight = nn.Parameter(torch.empty(n_pos, dim, classes).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.zeros(n_pos, classes))
        else:
            self.register_buffer("candidates", candidates)
            self.weight = nn.Parameter(torch.eye(dim).repeat(n_pos, 1, 1))
            self.bias = nn.Parameter(torch.zeros(n_pos, 1))
        if norm == "batch":
            self.register_buffer("running_mean", torch.zeros(n_pos, dim))
            self.register_buffer("running_var", torch.ones(n_pos, dim))

    def forward(self, f):  # f: (batch, positions, dim) -> logits (batch, positions, classes)
        if self.norm == "layer":
            f = F.layer_norm(f, f.shape[-1:])
        else:
            if self.training:
                mean = f.mean(0)
                var = f.var(0, unbiased=False)
                with torch.no_grad():
                    self.running_mean.lerp_(mean, 0.1)
                    self.running_var.lerp_(var, 0.1)
            else:
                mean = self.running_mean
                var = self.running_var
            f = (f - mean) * torch.rsqrt(var + 1e-5)
        f = torch.einsum("bpd,pde->bpe", f * self.gamma + self.beta, self.weight)
        if self.candidates is not None:
            f = f @ self.candidates.T
        return f + self.bias


def new_probes(wte, rank, norm, n_pos, labels, device, candidates=None):
    """Per attribute: a rank-`rank` update A @ B of the input embedding (B = 0 at first, so the
    probe starts from the model as trained) and, per target (first token, whole value), read-outs
    at every position (scored against `candidates`, when given)."""
    vocab, dim = wte.shape
    probes = {}
    for attr in ATTRIBUTES:
        a = (torch.randn(vocab, rank, device=device) * 0.02).requires_grad_()
        b = torch.zeros(rank, dim, device=device, requires_grad=True)
        heads = {}
        for target, attrs in PROBE_TARGETS.items():
            if attr not in attrs:
                continue
            classes = int(labels[target, attr].max()) + 1
            scored_against = None if candidates is None else candidates[target, attr]
            heads[target] = ProbeHeads(n_pos, dim, classes, norm, scored_against)
        probes[attr] = (a, b, nn.ModuleDict(heads).to(device))
    return probes


def probe_loss(probes, feats, y_all, ids):
    """Cross-entropy summed over attributes, targets and read positions; feats(attr) -> (batch,
    positions, D)."""
    loss = 0.0
    for attr, (_, _, heads) in probes.items():
        f = feats(attr)
        for target, head in heads.items():
            logits = head(f)
            y = y_all[target, attr][ids].repeat_interleave(logits.shape[1])  # one label a position
            loss = loss + F.cross_entropy(logits.flatten(0, 1), y, reduction="sum") / len(ids)
    return loss


def probe_step(opt, loss, lr, step, steps):
    """One AdamW step of a probe, the learning rate decayed linearly to zero (Appendix E)."""
    for g in opt.param_groups:
        g["lr"] = lr * (1 - step / steps)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def fit_probe(model, seqs, positions, labels, train_ids, test_ids, rank, norm, steps, batch_size,
              device, seed=0, lr=1e-3, head_steps=None, quiet=True, candidates=None, layer=None):
    """Train one probe per attribute on train_ids, score test_ids: accuracy (%) per (target,
    attribute) and read position, plus the majority-guess baseline. The model is frozen; gradients
    reach only the probe. Two phases, one probe: (1) while the embedding update is zero the model's
    features are fixed, so they are computed once and the read-outs train on them full-batch for
    `head_steps` steps (seconds); (2) update and read-outs then train together on mini-batches for
    `steps` steps (a forward and backward pass of the model per attribute: the paper's 30k).
    layer: read the residual stream after that block instead of the last layer (GPT.hidden)."""
    torch.manual_seed(seed)
    head_steps = PROBE_HEAD_STEPS if head_steps is None else head_steps
    model.requires_grad_(False)
    wte = model.wte.weight
    T = max(len(s) for s in seqs)
    padded = [s + [s[-1]] * (T - len(s)) for s in seqs]  # causal: padding after is inert
    x_all = torch.tensor(padded, device=device)
    pos_all = torch.tensor(positions, device=device)
    n_pos = len(positions[0])
    probes = new_probes(wte, rank, norm, n_pos, labels, device, candidates)
    head_params = [p for _, _, heads in probes.values() for p in heads.parameters()]
    y_all = {k: v.to(device) for k, v in labels.items()}
    train_ids = torch.tensor(sorted(train_ids), device=device)
    rng = np.random.default_rng(seed)

    def features(attr, ids, chunk=512):
        """The read layer at the read positions, the input embedding updated by attr's A @ B (attr
        None: unchanged)."""
        if attr is None:
            w = wte
        else:
            a, b, _ = probes[attr]
            w = wte + a @ b
        h = []
        for i in range(0, len(ids), chunk):
            h.append(model.hidden(x_all[ids[i:i + chunk]], wte=w, layer=layer))
        rows = torch.arange(len(ids), device=device)[:, None]
        return torch.cat(h)[rows, pos_all[ids]]  # (B, positions, D)

    with torch.no_grad():
        frozen = features(None, train_ids)
    # Phase 1: the read-outs alone, full batch, on the frozen features.
    opt = torch.optim.AdamW(head_params, lr=PROBE_HEAD_LR, weight_decay=PROBE_WEIGHT_DECAY)
    for step in tqdm(range(head_steps), desc="probe read-outs", disable=quiet, mininterval=1):
        # One dropout mask a step for all read-outs: masks cost more than matmuls.
        dropped = F.dropout(frozen, PROBE_DROPOUT)
        loss = probe_loss(probes, lambda attr: dropped, y_all, train_ids)
        probe_step(opt, loss, PROBE_HEAD_LR, step, head_steps)
    # Phase 2: embedding updates and read-outs together, on mini-batches.
    updates = []
    for a, b, _ in probes.values():
        updates += [a, b]
    opt = torch.optim.AdamW(updates + head_params, lr=lr, weight_decay=PROBE_WEIGHT_DECAY)
    for step in tqdm(range(steps), desc="probe + embedding update", disable=quiet, mininterval=1):
        picked = rng.choice(len(train_ids), min(batch_size, len(train_ids)), replace=False)
        ids = train_ids[torch.from_numpy(picked).to(device)]
        loss = probe_loss(probes, lambda attr: F.dropout(features(attr, ids), PROBE_DROPOUT), y_all,
                          ids)
        probe_step(opt, loss, lr, step, steps)
    test_ids = torch.tensor(sorted(test_ids), device=device)
    return score_probe(probes, features, y_all, train_ids, test_ids)


@torch.no_grad()
def score_probe(probes, features, y_all, train_ids, test_ids):
    """Accuracy (%) per target, attribute and read position on test_ids; "seen": the same on the
    test people whose class some training person has, "unseen_share": the % of test people whose
    class none has; the majority guess."""

    def percent_per_position(right):  # right: (people, positions) of 0/1
        return [round(v, 2) for v in (100.0 * right.mean(0)).tolist()]

    result = {}
    for key in ("seen", "unseen_share", "baseline"):
        result[key] = {target: {} for target in PROBE_TARGETS}
    for target in PROBE_TARGETS:
        result[target] = {}
    for attr, (_, _, heads) in probes.items():
        heads.eval()
        f = features(attr, test_ids)
        for target, head in heads.items():
            y = y_all[target, attr][test_ids]
            y_train = y_all[target, attr][train_ids]
            right = (head(f).argmax(-1) == y[:, None]).float()
            seen = torch.isin(y, y_train)
            majority = torch.bincount(y_train).argmax()
            result[target][attr] = percent_per_position(right)
            result["seen"][target][attr] = percent_per_position(right[seen])
            result["unseen_share"][target][attr] = round(100.0 * (~seen).float().mean().item(), 2)
            majority_right = (y == majority).float().mean().item()
            result["baseline"][target][attr] = round(100.0 * majority_right, 2)
    return result


def probe(run, data_dir, kinds=("p", "q"), steps=None, device="auto", seed=0, quiet=False, lr=1e-3,
          head_steps=None, q_read="name", readout="linear", holdout=0.0, layer=None):
    """P- and/or Q-probe a pretrained run on P_train people, scored on P_test people (holdout > 0:
    trained on the rest of P_train and scored on that fraction of it, to choose a recipe).
    Accuracies in %: p_probe[target] is a grid, one row per attribute of
    p_probe["attributes"][target], one column per read position (sentence order; Figure 5);
    q_probe[target] maps attribute -> accuracy (Figure 7); "seen" the same on the people whose value
    some training person has, "unseen_share" the % who have none, "baseline" the majority guess.
    readout: "linear" (the paper's classifier) or "candidates" (scored against the model's own
    embeddings of the values). layer K: read the residual stream after block K (0: the embedding);
    the default, the last (n_layer), reads after the final LayerNorm as the paper does."""
    data = load_checked_data(data_dir)
    device = pick_device(device)
    model, cfg, ckpt = load_checkpoint(run, device, data["vocab"])
    check_same_people(ckpt, data, run)
    if layer is None:
        layer = cfg.n_layer
    if not 0 <= layer <= cfg.n_layer:
        raise UserError(f"--layer must be in 0..{cfg.n_layer} (the run has {cfg.n_layer} blocks), "
                        f"got {layer}")
    tok = Tokenizer(data["vocab"])
    labels = {key: ids for key, (_, ids) in probe_classes(data["people"], tok).items()}
    candidates = None
    if readout == "candidates":
        candidates = candidate_embeddings(data["people"], tok, model.wte.weight)
    train, held = split_holdout(data["people"], holdout, seed)
    train = sorted(train)
    if holdout:
        scored = sorted(held)
    else:
        scored = [p["id"] for p in data["people"] if p["split"] == "test"]
    if steps is None:
        steps = cfg.probe_steps  # the run's own (its preset's unless overridden)
    about = dict(readout=readout, probe_people=len(train), scored_people=len(scored),
                 scored_on="held-out P_train" if holdout else "P_test", steps=steps, layer=layer)
    read_layer = None if layer == cfg.n_layer else layer  # the last: after the final LayerNorm
    common = dict(steps=steps, device=device, seed=seed, lr=lr, head_steps=head_steps, quiet=quiet,
                  candidates=candidates, layer=read_layer)  # the same for both probes
    result = {}
    if "p" in kinds:
        seqs, positions = p_probe_inputs(data, tok)
        grid = fit_probe(model, seqs, positions, labels, train, scored, **P_PROBE, **common)
        p_probe = {}
        for target, attrs in PROBE_TARGETS.items():
            p_probe[target] = [grid[target][attr] for attr in attrs]  # a row per attribute
        p_probe["attributes"] = {target: list(attrs) for target, attrs in PROBE_TARGETS.items()}
        for key in ("seen", "unseen_share", "baseline"):
            p_probe[key] = grid[key]
        p_probe.update(about)
        result["p_probe"] = p_probe
    if "q" in kinds:
        seqs, positions = q_probe_inputs(data, tok, q_read)
        grid = fit_probe(model, seqs, positions, labels, train, scored, **Q_PROBE, **common)

        def one_position(by_attr):  # the Q-probe reads one position: its column alone
            return {attr: cells[0] for attr, cells in by_attr.items()}

        q_probe = {target: one_position(grid[target]) for target in PROBE_TARGETS}
        q_probe["seen"] = {target: one_position(grid["seen"][target]) for target in PROBE_TARGETS}
        q_probe["unseen_share"] = grid["unseen_share"]
        q_probe["baseline"] = grid["baseline"]
        q_probe.update(about)
        result["q_probe"] = q_probe
    return result


# Where the lookup happens, causally (bioknow's own check; the paper has only the probes). On each
# P_test person's first biography, the model predicts every value's first token from the token just
# before it (the read position). Two interventions at one block at a time show which layer's view
# of the name the prediction uses: (a) the read positions may not attend to the name's tokens at
# that block; (b) the name's hidden states after block K are another person's (the donor's, read
# from the same biography with the donor's name in it). If facts were stored on the name (Result
# 4), patching the name early makes the model answer with the donor's values.

def lookup_inputs(data, tok, people, donors):
    """Per person: the first biography (EOS first), the same with the donor's name in place of
    every occurrence of the person's name, the name's token positions, and per attribute the read
    position, the person's and the donor's first value token. A read position inside the name is
    left out: patching it would replace the read itself."""
    first = first_entries(data)
    rows = []
    for person, donor in zip(people, donors):
        seq = [tok.eos] + tok.encode(first[person["id"]])
        name = tok.encode(person["name"])
        donor_name = tok.encode(donor["name"])
        assert len(name) == len(donor_name), "full names are three one-token parts"
        swapped = list(seq)
        at_name = set()
        for i in range(len(seq) - len(name) + 1):
            if seq[i:i + len(name)] == name:
                swapped[i:i + len(name)] = donor_name
                at_name.update(range(i, i + len(name)))
        reads = []
        for attr, i in value_positions(seq, person, tok).items():
            if i - 1 not in at_name:
                reads.append(dict(attr=attr, pos=i - 1, own=seq[i],
                                  donor=tok.encode(donor[attr])[0]))
        rows.append(dict(seq=seq, swapped=swapped, at_name=sorted(at_name), reads=reads))
    return rows


def logits_with(model, x, cut_mask=None, cut_blocks=(), patch=None, patch_after=None,
                at_name=None):
    """The model's logits at each position of x, with the attention mask cut_mask in the
    blocks cut_blocks (0: the first), and/or the residual stream at the name's positions (at_name,
    (B, T) bool) replaced by `patch` after block patch_after (0: the embedding)."""
    T = x.shape[1]
    cos = model.cos[:T]
    sin = model.sin[:T]
    h = model.wte(x)
    for i, block in enumerate(model.blocks):
        if i == patch_after:
            h = torch.where(at_name[..., None], patch, h)
        h = block(h, cos, sin, mask=cut_mask if i in cut_blocks else None)
    return model.lm_head(model.ln_f(h))[..., :model.vocab_size]


@torch.no_grad()
def name_lookup(run, data_dir, device="auto", seed=0):
    """First-token recall (%) at the read positions of P_test people's first biographies: intact;
    with the read positions cut from the name's tokens at each block (and at all blocks); and,
    with the donor's name states patched in after block K (0: the embedding, i.e. the donor's
    name), the share that follows the donor (where the donor's first token differs) and the
    share that keeps the person's own value."""
    data = load_checked_data(data_dir)
    device = pick_device(device)
    model, cfg, ckpt = load_checkpoint(run, device, data["vocab"])
    check_same_people(ckpt, data, run)
    tok = Tokenizer(data["vocab"])
    people = [p for p in data["people"] if p["split"] == "test"]
    order = np.random.default_rng(seed).permutation(len(people))
    donors = [None] * len(people)
    for a, b in zip(order, np.roll(order, 1)):  # each person a donor, never their own
        donors[a] = people[b]
    rows = lookup_inputs(data, tok, people, donors)
    T = max(len(r["seq"]) for r in rows)

    def padded(key):
        return torch.tensor([r[key] + [tok.eos] * (T - len(r[key])) for r in rows], device=device)

    x = padded("seq")
    x_donor = padded("swapped")
    at_name = torch.zeros(len(rows), T, dtype=torch.bool, device=device)
    reads = torch.zeros(len(rows), T, dtype=torch.bool, device=device)
    for j, r in enumerate(rows):
        at_name[j, r["at_name"]] = True
        reads[j, [read["pos"] for read in r["reads"]]] = True
    causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    # (B, 1, T, T): a read position (query) may not see the name's tokens (keys)
    cut_mask = (causal & ~(reads[:, :, None] & at_name[:, None, :]))[:, None]

    def recall(predicted, whose="own"):  # whose value the prediction is scored against
        right = {attr: [] for attr in ATTRIBUTES}
        for j, r in enumerate(rows):
            for read in r["reads"]:
                if whose == "donor" and read["own"] == read["donor"]:
                    continue  # the donor shares this first token: it tells nothing
                right[read["attr"]].append(int(predicted[j, read["pos"]]) == read[whose])
        by_attr = {a: round(100.0 * float(np.mean(v)), 1) for a, v in right.items() if v}
        by_attr["mean"] = round(float(np.mean(list(by_attr.values()))), 1)
        return by_attr

    def predicted(**intervention):
        return logits_with(model, x, **intervention).argmax(-1)

    model.eval()
    blocks = range(cfg.n_layer)
    result = dict(people=len(rows), intact=recall(predicted()), cut={}, patch={})
    for b in blocks:
        cut_one = predicted(cut_mask=cut_mask, cut_blocks=(b,))
        result["cut"][f"block {b + 1}"] = recall(cut_one)
    cut_all = predicted(cut_mask=cut_mask, cut_blocks=blocks)
    result["cut"]["every block"] = recall(cut_all)
    for k in blocks:
        patch = model.hidden(x_donor, layer=k)
        patched = predicted(patch_after=k, patch=patch, at_name=at_name)
        result["patch"][f"after block {k}"] = dict(follows_donor=recall(patched, "donor"),
                                                   keeps_own=recall(patched))
    return result


# --------------------------------------------------------------------------------------------------
# --- GBERT (Result 7, Appendix H): the bidirectional model
# The same transformer with full attention (GPT.causal off), pretrained by filling in masked words:
# 15% of a window's words (never EOS); of those, 80% become <mask>, 10% a random word, 10% stay. The
# tokenizer is word-level, so whole-word masking is token masking. A question is followed by one
# <mask> per answer token, all filled in at once.

MLM_RATE = 0.15    # the share of a window's words chosen
MLM_MASKED = 0.8   # of the chosen: the share that become <mask>
MLM_RANDOM = 0.1   # of the chosen: the share that become a random word (the rest stay)


def mlm_inputs(x, tok, key):
    """(inputs, targets) for masked-word training on windows x; targets are -1 except on the chosen
    words. The draw is a function of `key` (seed, step): a resumed run masks as the original would
    have."""
    rng = np.random.default_rng(key)
    chosen = torch.from_numpy(rng.random(x.shape) < MLM_RATE).to(x.device) & (x != tok.eos)
    roll = torch.from_numpy(rng.random(x.shape)).to(x.device)  # which of the three each becomes
    word = rng.integers(1, len(tok.vocab) - 1, x.shape)  # any word but EOS (id 0) and <mask>
    word = torch.from_numpy(word + (word >= tok.mask)).to(x.device)  # skip over <mask>'s id
    inputs = torch.where(chosen & (roll < MLM_MASKED), tok.mask, x)
    becomes_random = chosen & (roll >= MLM_MASKED) & (roll < MLM_MASKED + MLM_RANDOM)
    inputs = torch.where(becomes_random, word, inputs)
    return inputs, torch.where(chosen, x, -1)


def mlm_qa_example(tok, row):
    """GBERT's QA pair: EOS question \\n Answer: then one <mask> per answer token, '.' EOS; the
    targets are the answer's tokens on the masks, -1 elsewhere."""
    prompt = qa_prompt(tok, row["question"])
    answer = tok.encode(" " + row["answer"])
    tokens = prompt + [tok.mask] * len(answer) + tok.encode(".") + [tok.eos]
    targets = [-1] * len(prompt) + answer + [-1, -1]
    return tokens, targets


@torch.no_grad()
def mlm_qa_accuracies(model, tok, rows, device, batch_size=1024):
    """GBERT's QA accuracies (as qa_accuracies): all masks filled in by one forward pass, a question
    correct only when every mask is. Grouped by (attribute, length), so no padding."""
    correct = {a: [] for a in ATTRIBUTES}
    first = {a: [] for a in ATTRIBUTES}
    groups = {}  # (attribute, length) -> [(tokens, targets)]
    for r in rows:
        tokens, targets = mlm_qa_example(tok, r)
        groups.setdefault((r["attribute"], len(tokens)), []).append((tokens, targets))
    for (attr, _), items in groups.items():
        for i in range(0, len(items), batch_size):
            tokens, targets = zip(*items[i:i + batch_size])
            pred = predicted_tokens(model, list(tokens), tok.eos, device)
            y = torch.tensor(targets)
            on_mask = y >= 0
            first_mask = on_mask.cumsum(1) * on_mask == 1  # each row's first mask
            correct[attr] += ((pred == y) | ~on_mask).all(1).tolist()
            first[attr] += (pred == y)[first_mask].tolist()
    return percentages(correct), percentages(first)


@torch.no_grad()
def mlm_memorised(model, tok, by_id, first_entry, ids, device, batch_size):
    """GBERT's memorisation: each attribute's whole value masked in turn (one copy of the entry per
    attribute), and whether the filled-in value's first token is right."""
    max_len = model.cos.shape[0]  # the model's context length
    correct = {a: [] for a in ATTRIBUTES}
    for i in range(0, len(ids), batch_size):
        seqs = []
        where = []  # (attribute, position, the value's first token) of each copy
        for j in ids[i:i + batch_size]:
            s = ([tok.eos] + tok.encode(first_entry[j]))[:max_len]
            for attr, pos in value_positions(s, by_id[j], tok).items():
                n = len(tok.encode(by_id[j][attr]))
                seqs.append(s[:pos] + [tok.mask] * n + s[pos + n:])
                where.append((attr, pos, s[pos]))
        pred = predicted_tokens(model, seqs, tok.eos, device)
        for p, (attr, pos, want) in zip(pred, where):
            correct[attr].append(bool(p[pos] == want))
    return correct


# --------------------------------------------------------------------------------------------------
# --- reproduce: the headline comparison (Results 1-3)
# Three rows: bioS single is memorised yet not extractable after QA finetuning;
# multi5+permute+fullname, with the same compute, is; mixed training on bioS single is too.
# experiments/tables.py sets the paper's numbers beside them.

REPRODUCE_ROWS = (
    ("single", "qa_finetune"),
    ("multi5+permute+fullname", "qa_finetune"),
    ("single", "mixed"),
)
# Probes on each row's pretrained model: P-probing on the biography-pretrained ones (Figure 5
# compares single with the augmented setting), Q-probing on all, to set Q-probe accuracy beside QA
# accuracy row by row (Result 5).
REPRODUCE_PROBES = {"qa_finetune": ("p", "q"), "mixed": ("q",)}


def pretrained_run(setting, method, preset, seed, device, work, quiet=False, train_overrides=None,
                   reuse=False, celebrities=0):
    """setting_data and WORK/SETTING-METHOD pretrained on it: bio pretraining for the method
    qa_finetune, mixed training for the method mixed. reuse: keep a finished run whose
    configuration is the one asked for, and continue a killed one from its last checkpoint."""
    base = resolve_config(preset, "train", seed=seed, device=device, **(train_overrides or {}))
    data_dir = setting_data(setting, base.people, seed, work, celebrities, quiet)
    if celebrities:
        run = os.path.join(work, f"{setting}+celebrities-{method}")
    else:
        run = os.path.join(work, f"{setting}-{method}")
    data = load_data(data_dir)
    train_cfg = dataclasses.replace(base, mode="bio" if method == "qa_finetune" else "mixed")
    saved = saved_pretraining(run, data, train_cfg, device) if reuse else None
    if saved == "finished":
        model, _, ckpt = load_checkpoint(run, device=pick_device(device), vocab=data["vocab"])
        info = dict(steps=ckpt["step"], final_loss=final_loss(run, []),
                    holdout_ids=set(ckpt.get("holdout_ids", [])))
    elif saved == "unfinished":
        model, info = train(train_cfg, data_dir, run, quiet=quiet, resume=True)
    else:
        model, info = train(train_cfg, data_dir, run, force=True, quiet=quiet)
    return data_dir, data, run, model, info


def reproduce_row(setting, method, preset, seed, device, work, quiet=False, train_overrides=None,
                  probes=(), reuse=False, celebrities=0):
    """Generate -> pretrain (bio or mixed) -> probe (those in `probes`) -> [QA finetune] ->
    evaluate: one row."""
    t0 = time.time()
    data_dir, data, run, pretrained, info = pretrained_run(
        setting, method, preset, seed, device, work, quiet=quiet, train_overrides=train_overrides,
        reuse=reuse, celebrities=celebrities)
    probed = {}
    if probes:
        probed = probe(run, data_dir, kinds=probes, device=device, seed=seed, quiet=quiet)
    model = pretrained
    if method == "qa_finetune":
        finetune_cfg = resolve_config(preset, "finetune", seed=seed, device=device)
        model, _ = finetune(finetune_cfg, run, data_dir, run + "-qa", force=True, quiet=quiet)
    result = evaluate(model, data, pick_device(device), pretrained=pretrained,
                      held=info["holdout_ids"])
    return dict(setting=setting, method=method, **result, **probed, pretrain_steps=info["steps"],
                pretrain_loss=info["final_loss"], minutes=round((time.time() - t0) / 60, 2),
                hardware=hardware_name(pick_device(device)))


def reproduce(preset=DEFAULT_PRESET, seed=0, out="results", device="auto", quiet=False,
              probing=True, jobs=1):
    """REPRODUCE_ROWS, each row printed as it finishes -> OUT/reproduce.json. jobs 2 runs rows side
    by side on a 2-core CPU (the longest, mixed training, first), as `make reproduce` does."""
    t0 = time.time()
    os.makedirs(out, exist_ok=True)
    hardware = hardware_name(pick_device(device))
    config = dataclasses.asdict(resolve_config(preset, seed=seed, device=device))
    command = " ".join(["python bioknow.py"] + sys.argv[1:])
    result = dict(preset=preset, seed=seed, hardware=hardware, config=config, command=command,
                  jobs=jobs, rows=[])
    order = REPRODUCE_ROWS
    if jobs > 1:
        order = sorted(REPRODUCE_ROWS, key=lambda r: r[1] != "mixed")  # mixed first: it is longest
    tasks = []
    for setting, method in order:
        probes = REPRODUCE_PROBES[method] if probing else ()
        tasks.append(dict(setting=setting, method=method, probes=probes, quiet=quiet or jobs > 1))
    work = os.path.join(out, "work")
    for _, row in run_rows(tasks, preset, seed, device, work, jobs=jobs, quiet=True):
        result["rows"].append(row)
        memorised_train = row["memorization_p_train"]["mean"]
        memorised_test = row["memorization_p_test"]["mean"]
        flag = "" if memorised_test >= MEMORISED else " (not memorised)"
        print(f"{row['setting']:>26} {row['method']:<12} "
              f"memorised P_train {memorised_train:5.1f} P_test {memorised_test:5.1f}{flag}  "
              f"QA P_train {row['qa_train']['mean']:5.1f}  P_test {row['qa_test']['mean']:5.1f}  "
              f"({row['minutes']:.1f} min)", flush=True)
    result["rows"].sort(key=lambda r: REPRODUCE_ROWS.index((r["setting"], r["method"])))
    result["minutes"] = round((time.time() - t0) / 60, 2)
    write_json(os.path.join(out, "reproduce.json"), result)
    return result


# --------------------------------------------------------------------------------------------------
# --- plumbing a reader may skip
# What a run needs around the method and the paper never discusses: devices, files written
# atomically, data directories checked, your own biographies, checkpoints that resume bitwise,
# data parallelism, rows run side by side, and the timing behind `bench`. A reader of the paper
# may skip this section.

# Devices: auto picks CUDA, then MPS, then the CPU; CUDA gets bf16 autocast and, by default,
# compilation.

def pick_device(name):
    mps = getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    if os.environ.get("LOCAL_RANK") and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{os.environ['LOCAL_RANK']}"  # torchrun: one GPU per process
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if mps:
            return "mps"
        return "cpu"
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
    """The card's name, or the CPU's model with its cores and threads: a seed repeats a run bitwise
    on one CPU model, not across models (float rounding differs), so every result line names the
    processor that ran it."""
    if device_type(device) == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"{device} ({cpu_model()}), {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:  # Linux
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    if names:
        name = names[0]
    else:
        name = platform.processor() or platform.machine() or "unknown"
    return name.replace(",", "")


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device):
    """bf16 autocast on CUDA; float32 elsewhere (bf16 on a CPU measured 12-17x slower for tiny
    models)."""
    if device_type(device) == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def compiles(cfg, device):
    """--compile auto: on for CUDA, where it pays (fused kernels); off on CPU and MPS, where it did
    not."""
    return cfg.compile == "on" or (cfg.compile == "auto" and device_type(device) == "cuda")


def maybe_compile(model, cfg, device):
    return torch.compile(model) if compiles(cfg, device) else model


def synchronize(device):
    if device_type(device) == "cuda":
        torch.cuda.synchronize(device)
    elif device_type(device) == "mps":
        torch.mps.synchronize()


def tune_for(device):
    """CUDA: TF32 for the float32 matmuls autocast leaves. CPU (Linux): keep freed tensors in the
    process. glibc hands every block over 128 KB back to the kernel on free, so each step
    page-faults its logits and activations in afresh; keeping them measured 12.5k -> 16k tokens/s
    for the cpu preset on 2 cores."""
    if device_type(device) == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif device_type(device) == "cpu" and sys.platform.startswith("linux"):
        m_mmap_threshold = -3  # mallopt's parameter numbers, from glibc's malloc.h
        m_trim_threshold = -1
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(m_mmap_threshold, 32 << 20)  # blocks up to 32 MB come from the heap
            libc.mallopt(m_trim_threshold, 1 << 30)  # keep up to 1 GB of freed heap for next step
        except (OSError, AttributeError):  # not glibc: nothing to tune
            pass


def git_commit():
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        done = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        return done.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# Files written atomically: each goes to a temporary name and is renamed into place, so a kill
# leaves the old file or the new one, never half of one.

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
    """PATH as these rows, one JSON object a line, rewritten whole: a kill never leaves half a
    line."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_data_dir(out, write):
    """write(tmp) fills a temporary directory, which then replaces OUT whole: a kill never leaves
    half a directory."""
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


# Data directories loaded and checked before anything trains on them (`bioknow.py check DIR`
# also reads every text).

def load_data(data_dir):
    """Read a data directory into a dict; missing pieces are a user error, not a traceback."""
    if not os.path.isdir(data_dir):
        raise UserError(f"data directory {data_dir} does not exist "
                        f"(run `bioknow.py generate --out {data_dir}`)")
    if not os.listdir(data_dir):
        raise UserError(f"data directory {data_dir} is empty "
                        f"(run `bioknow.py generate --out {data_dir} --force`)")
    for name in ("people.jsonl", "bios.jsonl", "qa.jsonl", "meta.json", "vocab.json"):
        if not os.path.isfile(f"{data_dir}/{name}"):
            raise UserError(f"data directory {data_dir} lacks {name}")
    meta = read_json(f"{data_dir}/meta.json")
    vocab = read_json(f"{data_dir}/vocab.json")
    people = read_jsonl(f"{data_dir}/people.jsonl")
    if not people:
        raise UserError(f"{data_dir}/people.jsonl is empty")
    bios = read_jsonl(f"{data_dir}/bios.jsonl")
    qa = read_jsonl(f"{data_dir}/qa.jsonl")
    return dict(meta=meta, vocab=vocab, people=people, bios=bios, qa=qa, dir=data_dir)


def load_checked_data(data_dir):
    """load_data plus the cheap part of check_data: what training runs before it starts."""
    data = load_data(data_dir)
    problems = check_data(data, full=False)
    if problems:
        raise UserError(f"{data_dir}: {problems[0]} "
                        f"(`bioknow.py check {data_dir}` lists every problem)")
    return data


def check_data(data, full=True):
    """The invariants of a data directory, as a list of problems (empty: fine): the structural
    ones, and with full=True every text (check_texts)."""
    problems = []
    meta = data["meta"]
    people = data["people"]
    required = ("people", "aug", "entries_per_person", "n_train", "n_test")
    missing = [k for k in required if k not in meta]
    if missing:
        return [f"meta.json lacks {', '.join(missing)}"]
    try:
        spec = parse_aug(meta["aug"])
        celebrity_spec = parse_aug(meta.get("celebrity_aug", meta["aug"]))
    except UserError as e:
        return [f"meta.json: {e}"]
    vocab = data["vocab"]
    if not vocab or vocab[0] != EOS or len(set(vocab)) != len(vocab):
        problems.append(f"vocab.json must list unique words with {EOS} first")
    if len(people) != meta["people"]:
        problems.append(f"people.jsonl has {len(people)} people, meta.json says {meta['people']}")

    fields = ("id", "name", "pronoun", "split") + ATTRIBUTES

    def incomplete(p):  # a field absent or empty (0 is a value)
        return not isinstance(p, dict) or any(not p.get(k) and p.get(k) != 0 for k in fields)
    bad = [n for n, p in enumerate(people) if incomplete(p)]
    if bad:
        return problems + [f"people.jsonl line {bad[0] + 1}: missing one of {', '.join(fields)} "
                           f"({len(bad)} such people)"]
    if [p["id"] for p in people] != list(range(len(people))):
        problems.append("people.jsonl: ids are not 0, 1, 2, ... in order")
    if len({p["name"] for p in people}) != len(people):
        problems.append("people.jsonl: full names are not unique")
    splits = Counter(p["split"] for p in people)
    if (splits["train"], splits["test"]) != (meta["n_train"], meta["n_test"]):
        problems.append(f"people.jsonl: {splits['train']} train / {splits['test']} test people, "
                        f"meta.json says {meta['n_train']} / {meta['n_test']}")

    by_id = {p["id"]: p for p in people}
    entries = Counter(b.get("id") for b in data["bios"])
    unknown_ids = set(entries) - set(by_id)
    if unknown_ids:
        problems.append(f"bios.jsonl: {len(unknown_ids)} ids that are not in people.jsonl")

    def expected(p):  # None: any number, at least one (the user's own texts, `--bios-from`)
        if p.get("celebrity"):
            return meta.get("celebrity_entries_per_person")
        return meta["entries_per_person"]

    def wrong_count(i, p):
        if expected(p) is None:
            return not entries[i]
        return entries[i] != expected(p)
    wrong = [i for i, p in by_id.items() if wrong_count(i, p)]
    if wrong:
        problems.append(f"bios.jsonl: {len(wrong)} people (first: id {wrong[0]}) do not have the "
                        f"{expected(by_id[wrong[0]]) or 'one or more'} entries meta.json says")
    celebrities = sum(bool(p.get("celebrity")) for p in people)
    if celebrities != meta.get("celebrities", 0):
        problems.append(f"people.jsonl: {celebrities} celebrities, "
                        f"meta.json says {meta.get('celebrities', 0)}")

    asked = Counter((r.get("id"), r.get("attribute")) for r in data["qa"])
    every_question = {(i, a) for i in by_id for a in ATTRIBUTES}
    if (len(data["qa"]) != 6 * len(people) or any(n != 1 for n in asked.values())
            or set(asked) != every_question):
        problems.append("qa.jsonl: must hold exactly one question per person and attribute")

    def disagrees(r):  # with people.jsonl: the answer, the split, or the name in the question
        if r.get("id") not in by_id or r.get("attribute") not in ATTRIBUTES:
            return False
        person = by_id[r["id"]]
        return (r.get("answer") != person[r["attribute"]] or r.get("split") != person["split"]
                or person["name"] not in r.get("question", ""))
    bad_qa = [r for r in data["qa"] if disagrees(r)]
    if bad_qa:
        problems.append(f"qa.jsonl: {len(bad_qa)} questions whose name, answer or split disagree "
                        f"with people.jsonl (first: id {bad_qa[0]['id']} {bad_qa[0]['attribute']})")
    if full and not problems:
        return problems + check_texts(data, spec, celebrity_spec, by_id)
    return problems


def in_fixed_order(found):
    """Whether the six values found (attribute -> position) come in ATTRIBUTES' order."""
    return sorted(ATTRIBUTES, key=found.get) == list(ATTRIBUTES)


def check_texts(data, minority_spec, celebrity_spec, by_id):
    """Every text must tokenize, mention each of its person's six values, carry the full name as its
    augmentation says, and keep the fixed order unless permuted: the problems counted by kind."""
    tok = Tokenizer(data["vocab"])
    counts = Counter()
    first = {}

    def problem(kind, id_):
        counts[kind] += 1
        first.setdefault(kind, id_)

    for b in data["bios"]:
        person = by_id[b["id"]]
        text = b.get("text", "")
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
        if len(found) == 6 and not spec["permute"] and not in_fixed_order(found):
            problem("bios.jsonl: entries not in the fixed attribute order", b["id"])
        names_wanted = 6 if spec["fullname"] else 1
        if text.count(person["name"]) != names_wanted:
            where = "in every sentence" if spec["fullname"] else "once"
            problem(f"bios.jsonl: entries that do not name their person {where}", b["id"])
    for r in data["qa"]:
        try:
            tok.encode(r["question"] + " " + r["answer"])
        except UserError:
            problem("qa.jsonl: questions with words outside vocab.json", r["id"])
    return [f"{kind}: {n} (first: id {first[kind]})" for kind, n in counts.items()]


# Your own biographies: `generate --bios-from FILE --data DIR` puts your texts (like the paper's
# bioR, written by an LLM) in place of the template ones.

def bios_from(data_dir, bios_file, out, force=False):
    """A data directory whose biographies are the user's own texts (like the paper's bioR, written
    by an LLM): the people and questions of DATA_DIR, the texts of BIOS_FILE ({"id", "text"} lines,
    any number a person). A text that does not mention all six of its person's values verbatim is
    left out and listed in OUT/rejected.jsonl; every person must keep at least one. Words new to
    the vocabulary are appended to it."""
    if os.path.exists(out) and os.listdir(out) and not force:
        raise UserError(f"{out} exists and is not empty (use --force to overwrite)")
    data = load_checked_data(data_dir)
    if not os.path.isfile(bios_file):
        raise UserError(f"--bios-from {bios_file} does not exist")
    by_id = {p["id"]: p for p in data["people"]}
    rows = read_jsonl(bios_file)

    def malformed(r):
        if not isinstance(r, dict) or r.get("id") not in by_id:
            return True
        return not isinstance(r.get("text"), str)
    bad = [n for n, r in enumerate(rows, 1) if malformed(r)]
    if bad:
        raise UserError(f"{bios_file}:{bad[0]}: each line must be {{\"id\", \"text\"}} "
                        f"with an id of {data_dir}/people.jsonl ({len(bad)} such lines)")
    vocab = list(data["vocab"])
    new_words = {w for r in rows for w in words(r["text"])} - set(vocab)
    vocab += sorted(new_words)  # appended: the base ids stay
    tok = Tokenizer(vocab)
    kept = []
    rejected = []
    for r in rows:
        found = value_positions(tok.encode(r["text"]), by_id[r["id"]], tok)
        if len(found) == 6:
            kept.append(dict(id=r["id"], text=r["text"]))
        else:
            missing = [a for a in ATTRIBUTES if a not in found]
            rejected.append(dict(id=r["id"], missing=missing, text=r["text"]))
    bare = sorted(set(by_id) - {r["id"] for r in kept})
    if bare:
        raise UserError(f"{len(bare)} people (first: id {bare[0]}) have no text that mentions all "
                        f"six of their values ({len(rejected)} of the {len(rows)} texts miss a "
                        "value); rewrite those texts or add more")
    meta = dict(data["meta"], bios_from=os.path.basename(bios_file), entries_per_person=None,
                bioknow=VERSION)

    def write(tmp):
        for name in ("people.jsonl", "qa.jsonl"):
            shutil.copyfile(os.path.join(data_dir, name), os.path.join(tmp, name))
        rewrite_jsonl(f"{tmp}/bios.jsonl", kept)
        rewrite_jsonl(f"{tmp}/rejected.jsonl", rejected)
        write_json(f"{tmp}/meta.json", meta)
        write_json(f"{tmp}/vocab.json", vocab)

    write_data_dir(out, write)
    if rejected:  # a report, not progress: --quiet keeps it
        first = rejected[0]
        print(f"{len(rejected)} of {len(rows)} texts left out: they miss a value (first: id "
              f"{first['id']}, {', '.join(first['missing'])}); all listed in {out}/rejected.jsonl",
              file=sys.stderr)
    return dict(meta, texts=len(kept), rejected=len(rejected),
                new_words=len(vocab) - len(data["vocab"]))


# Options checked before anything is written: those a later step would not catch, one line each.

def check_options(cfg, stage="train"):
    """train's or finetune's one-line errors for options no later step would catch."""
    if not 0 <= cfg.holdout < 1 or (stage == "train" and cfg.mode == "bio" and cfg.holdout > 0):
        raise UserError(f"--holdout must be in [0, 1), and is for finetune or --mode mixed, "
                        f"got {cfg.holdout}")
    if stage == "finetune":
        if world()[1] > 1:
            raise UserError("finetune runs in one process (QA finetuning takes minutes); "
                            "use torchrun for train")
        if cfg.lora_qv < 0 or cfg.lora_emb < 0:
            raise UserError(f"LoRA ranks must be >= 0 (got --lora-qv {cfg.lora_qv}, "
                            f"--lora-emb {cfg.lora_emb})")
        return
    if cfg.mode not in ("bio", "mixed"):
        raise UserError(f"unknown --mode {cfg.mode!r} (bio or mixed)")
    if cfg.packing not in ("stream", "entries"):
        raise UserError(f"unknown --packing {cfg.packing!r} (stream or entries)")
    if not 0.0 <= cfg.qa_ratio <= 1.0 or (cfg.mode == "mixed" and cfg.qa_ratio == 1.0):
        raise UserError(f"--qa-ratio must be in [0, 1] (below 1 for mixed training), got "
                        f"{cfg.qa_ratio}")
    if cfg.objective not in ("clm", "mlm"):
        raise UserError(f"unknown --objective {cfg.objective!r} (clm or mlm)")
    if cfg.batch_size % world()[1]:
        raise UserError(f"--batch-size {cfg.batch_size} does not split over "
                        f"{world()[1]} processes")


# Checkpoints and resume: RUN/model.pt holds the weights and everything the next step depends on
# (optimiser moments, every RNG, the data streams' positions), so a resumed run is the run that
# never stopped (bitwise on a CPU).

MODEL_SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "rotary_frac", "rope_base",
                      "objective")


def new_run_dir(out, force, resume=False):
    """Make --out for a fresh run (refusing to overwrite a run unless --force), or check it holds
    one to resume."""
    if resume and force:
        raise UserError("--resume and --force exclude each other (--force starts the run again)")
    if resume and not os.path.isfile(os.path.join(out, "model.pt")):
        if os.path.isdir(out) and os.listdir(out):
            again = "again with --force"
        else:
            again = "without --resume"
        raise UserError(f"--resume: no checkpoint in {out} to resume from (start the run {again})")
    if not resume and os.path.exists(out) and os.listdir(out) and not force:
        raise UserError(f"{out} exists and is not empty "
                        f"(use --resume to continue it, --force to overwrite)")
    barrier()  # under torchrun: every process has checked before the first one writes
    if world()[0] == 0:
        os.makedirs(out, exist_ok=True)
        if resume:
            for name in os.listdir(out):  # what a kill during a write left behind
                if ".tmp" in name:
                    os.remove(os.path.join(out, name))


def save_checkpoint(out, model, cfg, vocab, stage, step, total, opt, data, **extra):
    """OUT/model.pt: the weights (LoRA merged in), config, vocabulary, stage (pretrain or
    finetune), step and schedule length, optimiser moments, every RNG, the data's identity, and
    `extra` (stream positions, LoRA adapters)."""
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    rng = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(),
               cuda=cuda_rng)
    ckpt = dict(model=merged_state(model), config=dataclasses.asdict(cfg), vocab=vocab, kind=stage,
                step=step, total_steps=total, optimizer=opt.state_dict(), rng=rng,
                bioknow=VERSION, torch=torch.__version__, data=data_identity(data),
                people=people_fingerprint(data), **extra)

    def write(tmp):
        torch.save(ckpt, tmp)
    write_atomic(os.path.join(out, "model.pt"), write)


def read_checkpoint(run, vocab=None):
    """RUN/model.pt as a dict and its Config; refuses a missing or corrupt file and a data
    vocabulary the checkpoint does not know."""
    path = os.path.join(run, "model.pt")
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        # older runs recorded fields since dropped: keep those Config still has
        known = {f.name for f in dataclasses.fields(Config)}
        cfg = Config(**{k: v for k, v in ckpt["config"].items() if k in known})
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"corrupt checkpoint {path}: {type(e).__name__}") from None
    if vocab is not None and list(vocab) != list(ckpt["vocab"]):
        raise UserError(f"checkpoint {path} was trained on another vocabulary "
                        f"({len(ckpt['vocab'])} tokens) than this data ({len(vocab)} tokens)")
    return ckpt, cfg


def load_checkpoint(run, device="cpu", vocab=None, shape=None):
    """Load RUN/model.pt into a GPT (read_checkpoint's checks), refusing a model shape (`shape`:
    the fields a user asked for) other than the checkpoint's."""
    ckpt, cfg = read_checkpoint(run, vocab)
    path = os.path.join(run, "model.pt")
    for field, value in (shape or {}).items():
        if getattr(cfg, field) != value:
            raise UserError(f"checkpoint {path} is another model shape: "
                            f"{field} {getattr(cfg, field)}, asked for {value}")
    model = GPT(cfg, len(ckpt["vocab"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise UserError(f"checkpoint {path}: weights of another model shape than its config "
                        f"({cfg.n_layer}x{cfg.n_embd}, {cfg.n_head} heads)") from None
    return model.to(device).eval(), cfg, ckpt


def resume_state(out, stage, model, opt, cfg, data, streams=None):
    """Restore a run to its last checkpoint (weights, optimiser, RNGs, stream positions) and return
    its step. Refuses another configuration or other data than the run started with."""
    ckpt, saved_cfg = read_checkpoint(out, data["vocab"])
    if ckpt.get("kind") != stage or ckpt.get("optimizer") is None:
        raise UserError(f"--resume: {out}/model.pt is not a {stage} checkpoint "
                        f"with training state to continue")
    # how it runs, not what it computes: these may differ from the run's own flags
    may_change = {"device", "compile", "ckpt_every", "log_every"}
    for field, value in dataclasses.asdict(cfg).items():
        if field not in may_change and getattr(saved_cfg, field) != value:
            raise UserError(f"--resume: {field} is {value!r} here but "
                            f"{getattr(saved_cfg, field)!r} in {out} "
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
    """What a checkpoint records of its data: generation parameters and size (not the path, which
    may move)."""
    meta = data["meta"]
    identity = dict(people=meta.get("people"), aug=meta.get("aug"), seed=meta.get("seed"),
                    entries=len(data["bios"]))
    if meta.get("bios_from"):
        identity["bios_from"] = meta["bios_from"]
    return identity


def people_fingerprint(data):
    """A digest of the people (names, attributes, splits), which a checkpoint records: a run scored
    on other people than it was trained on would measure nothing. Other biographies of the same
    people (`generate --bios-from`) share it."""
    digest = hashlib.sha256()
    for person in data["people"]:
        digest.update(json.dumps(person, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def check_same_people(ckpt, data, run):
    """finetune, eval and probe: refuse a data directory whose people are not the run's."""
    if "people" in ckpt:
        same = ckpt["people"] == people_fingerprint(data)
    else:  # a checkpoint from before the fingerprint: the generator's people count and seed
        trained = ckpt.get("data") or {}
        meta = data["meta"]
        same_count = trained.get("people") == meta.get("people")
        same = same_count and trained.get("seed") == meta.get("seed")
    if not same:
        raise UserError(f"{run} was trained on other people than those of {data['dir']}: use the "
                        f"data directory it was trained on (other biographies of the same people "
                        f"are fine)")


def run_config(out, cfg, **extra):
    """RUN/config.json: every hyper-parameter, the preset and seed, and where the numbers came
    from."""
    if world()[0] == 0:
        record = dict(dataclasses.asdict(cfg), **extra, torch=torch.__version__, bioknow=VERSION,
                      commit=git_commit(), processes=world()[1])
        write_json(os.path.join(out, "config.json"), record)


def run_log(out, start=0):
    """A function appending a row to RUN/log.jsonl (rank 0; None elsewhere). On resume the rows
    from `start` on are dropped: they are redone."""
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
    """A non-finite loss (first_bad: its step, or -1) or weights: a one-line error that keeps the
    last checkpoint."""
    bad = int(first_bad)
    if bad >= 0 or not all(bool(p.isfinite().all()) for p in model.parameters()):
        if last_saved:
            kept = f"the last good checkpoint (step {last_saved}) is kept"
        else:
            kept = "no checkpoint written"
        bad_step = bad if bad >= 0 else step
        raise UserError(f"non-finite loss at step {bad_step}: training stopped, {kept}; "
                        f"lower --lr and train again")


# Data parallelism: `torchrun --nproc_per_node=K bioknow.py train ...` starts K processes; each
# builds the same global batch from the same stream and trains on its own slice of the rows;
# DistributedDataParallel averages the gradients, so the run follows the single-process run of
# the same global batch.

def world():
    """(rank, world size) under torchrun, (0, 1) otherwise; under torchrun (one process too) joins
    the process group (NCCL on GPUs, gloo on CPUs) on first use."""
    if "LOCAL_RANK" in os.environ and not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier():
    if world()[1] > 1:
        torch.distributed.barrier()


def data_parallel(model, device):
    """The model wrapped in DistributedDataParallel under torchrun (one process a GPU); as it is
    otherwise."""
    if not torch.distributed.is_initialized():
        return model
    device_ids = [torch.device(device).index] if device_type(device) == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def mean_over_ranks(value):
    if world()[1] > 1:
        value = value.clone()
        torch.distributed.all_reduce(value)
        value /= world()[1]
    return value


# Rows side by side: the tables' data and pretrained models are made once and reused by every row
# that asks for the same; the tables and `reproduce --jobs K` run K rows at once, a process each.

def setting_data(setting, people, seed, work, celebrities=0, quiet=False):
    """WORK/data-SETTING[+celebrities], generated unless it is there as asked; celebrities: that
    many more people with multi5+permute biographies, who are P_train."""
    data_dir = os.path.join(work, f"data-{setting}" + ("+celebrities" if celebrities else ""))
    meta_path = os.path.join(data_dir, "meta.json")
    wanted = dict(people=people + celebrities, aug=setting, seed=seed, celebrities=celebrities)
    if os.path.isfile(meta_path):
        meta = read_json(meta_path)
        there = all(meta.get(k, 0) == v for k, v in wanted.items())
    else:
        there = False
    if not there:
        generate(data_dir, people=people, aug=setting, seed=seed, force=True, quiet=quiet,
                 celebrities=celebrities)
    return data_dir


def saved_pretraining(run, data, cfg, device):
    """How far RUN got with a pretraining of `cfg` on `data`: "finished" (to keep), "unfinished"
    (killed after a checkpoint: to continue), or None (nothing of it there: to start afresh)."""
    if not os.path.isfile(os.path.join(run, "model.pt")):
        return None
    ckpt, saved = read_checkpoint(run, vocab=data["vocab"])
    if ckpt["kind"] != "pretrain" or ckpt.get("data") != data_identity(data):
        return None
    if dataclasses.replace(saved, device=device) != cfg:
        return None
    return "finished" if ckpt["step"] >= ckpt["total_steps"] else "unfinished"


def run_rows(tasks, preset, seed, device, work, jobs=1, quiet=False, desc=""):
    """Run each task (reproduce_row's setting, method and options; a task may set its own seed and
    work directory) and yield (task, row) as rows finish. jobs > 1 runs that many rows side by
    side, each in a process of its own on one thread: a small model barely uses a second core, and
    a GPU has room for many. The data directories are made first, so no two processes write one;
    rows run side by side need work directories of their own unless they share their data only."""
    calls = [dict(preset=preset, seed=seed, device=device, work=work, quiet=True) | task
             for task in tasks]
    for c in calls:
        people = resolve_config(preset, **c.get("train_overrides") or {}).people
        setting_data(c["setting"], people, c["seed"], c["work"],
                     celebrities=c.get("celebrities", 0), quiet=True)
    bar = tqdm(total=len(calls), desc=desc, disable=quiet)
    if jobs <= 1:
        for task, c in zip(tasks, calls):
            yield task, reproduce_row(**c)
            bar.update()
        return
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn, initializer=one_thread) as pool:
        futures = {pool.submit(reproduce_row_of, c): task for task, c in zip(tasks, calls)}
        for future in as_completed(futures):
            bar.update()
            yield futures[future], future.result()


def one_thread():
    torch.set_num_threads(1)


def reproduce_row_of(kwargs):
    return reproduce_row(**kwargs)


# Bench timing: full training steps (forward, backward, optimiser) timed after warm-up and
# compilation; MFU is against the card's dense bf16 peak.

PEAK_BF16_TFLOPS = {"H200": 989, "H100": 989, "GH200": 989, "B200": 2250, "A100": 312,
                    "L40S": 362, "L40": 181, "L4": 121, "A10": 125, "4090": 165,
                    "3090": 71}  # dense, by device name; MFU is against these


def peak_flops(device):
    """The dense bf16 peak of a CUDA card bioknow knows, in FLOP/s; None elsewhere (no MFU on a
    CPU)."""
    name = torch.cuda.get_device_name(device) if device_type(device) == "cuda" else ""
    for key, tflops in PEAK_BF16_TFLOPS.items():  # the first key in the card's name
        if key in name:
            return tflops * 1e12
    return None


def bench_step(cfg, vocab_size, device):
    """bioknow's own training step (training_step, the one `train` runs) at cfg's shape on one
    batch of random tokens, as a function; and the model it trains."""
    seed_everything(cfg.seed)
    model = GPT(cfg, vocab_size).to(device)
    opt = make_optimizer(model, cfg, device)
    fwd = maybe_compile(model, cfg, device)
    windows = torch.randint(vocab_size, (cfg.batch_size, cfg.block_size + 1), device=device)

    def step():
        return training_step(fwd, model, opt, windows[:, :-1], windows[:, 1:], cfg, lr=cfg.lr,
                             device=device)
    return step, model


def seconds_per_call(fn, steps, warmup, device):
    """Mean wall time of fn() over `steps` calls after `warmup` calls (which also trigger
    compilation)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    synchronize(device)
    return (time.perf_counter() - t0) / steps


BENCH_SHAPE = ("n_layer", "n_head", "n_embd", "block_size", "batch_size")  # `bench` may override


def flops_per_token(model, cfg):
    """Training FLOPs a token: 6 per parameter (forward and backward) plus attention's
    12 * layers * width * context (the PaLM paper's appendix B count, as nanoGPT's estimate_mfu)."""
    params = sum(p.numel() for p in model.parameters())
    return 6 * params + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def bench(cfg, vocab_size=None, steps=10, warmup=3):
    """Time bioknow's own training step (bench_step: training_step, the one `train` runs, on one
    batch of random tokens) after warm-up: speed, MFU, and the preset's whole pretraining projected
    at that speed."""
    device = pick_device(cfg.device)
    tune_for(device)
    vocab_size = vocab_size or len(VOCAB)
    step, model = bench_step(cfg, vocab_size, device)
    sec = seconds_per_call(step, steps=steps, warmup=warmup, device=device)
    tokens_per_sec = cfg.batch_size * cfg.block_size / sec
    peak = peak_flops(device)
    preset = resolve_config(cfg.preset)
    tokens = preset.steps * preset.batch_size * preset.block_size  # 0: the preset sets no --steps
    mfu = round(flops_per_token(model, cfg) * tokens_per_sec / peak, 4) if peak else None
    shape = dict({k: getattr(cfg, k) for k in BENCH_SHAPE}, vocab_size=vocab_size,
                 preset=cfg.preset)
    if tokens:
        projected_hours = round(tokens / tokens_per_sec / 3600, 2)
        projected_for = f"{preset.steps} steps x {preset.batch_size} x {preset.block_size} tokens"
    else:
        projected_hours = None
        projected_for = None
    return dict(tokens_per_sec=round(tokens_per_sec), ms_per_step=round(1000 * sec, 2),
                params=sum(p.numel() for p in model.parameters()), device=hardware_name(device),
                dtype="bfloat16" if device_type(device) == "cuda" else "float32",
                compiled=compiles(cfg, device), mfu=mfu, shape=shape,
                projected_hours=projected_hours, projected_for=projected_for,
                threads=torch.get_num_threads())


# --------------------------------------------------------------------------------------------------
# --- command line
# One subcommand a step (generate, check, train, finetune, eval, probe, reproduce, bench), each
# calling the method's functions above. train and finetune take every Config field as a flag.
# Bad input (a UserError) is one line on stderr, exit status 2, nothing written.

CONFIG_HELP = {
    "passes": "train: budget in passes over bioS-single-sized biographies",
    "epochs": "finetune: budget in passes over the P_train questions",
    "steps": "optimizer steps (overrides --passes and --epochs)",
    "mode": "bio or mixed",
    "qa_ratio": "mixed training: probability that a window is QA",
    "compile": "auto, on or off",
    "packing": "entries (default: whole entries only, padded) or stream (windows cut anywhere)",
    "holdout": "finetune, or mixed training: fraction of P_train people whose QA is held out "
               "(to choose a recipe without P_test)",
    "lora_qv": "finetune: LoRA rank on each layer's query and value "
               "(0: full finetuning; paper: 8 or 16)",
    "lora_emb": "finetune: LoRA rank of the embedding update (paper: 128)",
    "objective": "clm (the causal GPT) or mlm (GBERT: full attention, whole-word masking)",
}
TRAIN_FIELDS = [f for f in dataclasses.fields(Config) if f.name not in ("people", "preset")]
FLAG_TYPES = {"int": int, "float": float, "str": str}  # a Config field's type, where it is a string


def flag_type(field):
    """The type argparse converts a Config field's flag to."""
    return field.type if callable(field.type) else FLAG_TYPES[field.type]


def cmd_generate(args):
    if args.bios_from or args.data:
        if not (args.bios_from and args.data):
            raise UserError("--bios-from FILE and --data DIR go together: "
                            "the texts, and the people they are about")
        made = bios_from(data_dir=args.data, bios_file=args.bios_from, out=args.out,
                         force=args.force)
        print(json.dumps(made))
        return
    if args.people is None:
        people = resolve_config(args.preset).people
    else:
        people = args.people
    made = generate(out=args.out, people=people, aug=args.aug, seed=args.seed, force=args.force,
                    quiet=args.quiet, celebrities=args.celebrities,
                    celebrity_aug=args.celebrity_aug)
    print(json.dumps(made))


def cmd_check(args):
    data = load_data(args.dir)
    problems = check_data(data)
    meta = data["meta"]
    for p in problems:
        print(f"{args.dir}: {p}")
    if problems:
        sys.exit(1)
    summary = (f"{args.dir}: ok ({len(data['people'])} people, "
               f"{len(data['bios'])} biography entries, {len(data['qa'])} questions, "
               f"aug {meta['aug']}")
    if meta.get("celebrities"):
        summary += f"; {meta['celebrities']} celebrities, aug {meta['celebrity_aug']})"
    else:
        summary += ")"
    print(summary)


def run_summary(out, info):
    """train's and finetune's JSON line: the run, its info, the held-out people counted."""
    summary = dict(run=out, **info)
    summary["holdout_ids"] = len(info["holdout_ids"])
    return summary


def cmd_train(args):
    cfg = resolve_config(args.preset, "train", **args.config)
    _, info = train(cfg, data_dir=args.data, out=args.out, force=args.force, quiet=args.quiet,
                    resume=args.resume)
    if world()[0] == 0:
        print(json.dumps(run_summary(args.out, info)))


def cmd_finetune(args):
    shape = {k: v for k, v in args.config.items() if k in MODEL_SHAPE_FIELDS and v is not None}
    cfg = resolve_config(args.preset, "finetune", **args.config)
    _, info = finetune(cfg, run=args.run, data_dir=args.data, out=args.out, force=args.force,
                       quiet=args.quiet, resume=args.resume, shape=shape)
    print(json.dumps(run_summary(args.out, info)))


def cmd_eval(args):
    data = load_data(args.data)
    device = pick_device(args.device)
    model, _, ckpt = load_checkpoint(args.run, device=device, vocab=data["vocab"])
    check_same_people(ckpt, data, args.run)
    # held-out P_train people, scored apart: what a recipe is chosen on
    held = set(ckpt.get("holdout_ids", []))
    print_json(evaluate(model, data, device, quiet=args.quiet, held=held), args.out)


def cmd_probe(args):
    if not 0 <= args.holdout < 1:
        raise UserError(f"--holdout must be in [0, 1), got {args.holdout}")
    if args.kind == "lookup":
        result = name_lookup(run=args.run, data_dir=args.data, device=args.device, seed=args.seed)
    else:
        kinds = ("p", "q") if args.kind == "both" else (args.kind,)
        result = probe(run=args.run, data_dir=args.data, kinds=kinds, steps=args.steps,
                       device=args.device, seed=args.seed, quiet=args.quiet, lr=args.lr,
                       head_steps=args.head_steps, q_read=args.q_read, readout=args.readout,
                       holdout=args.holdout, layer=args.layer)
    print_json(result, args.out)


def cmd_reproduce(args):
    reproduce(preset=args.preset, seed=args.seed, out=args.out, device=args.device,
              quiet=args.quiet, probing=not args.no_probe, jobs=args.jobs)


def cmd_bench(args):
    shape = {k: getattr(args, k) for k in BENCH_SHAPE}
    cfg = resolve_config(args.preset, device=args.device, compile=args.compile, **shape)
    print(json.dumps(bench(cfg, vocab_size=args.vocab_size, steps=args.steps, warmup=args.warmup)))


def print_json(result, out=None):
    if out:
        write_json(out, result)
    print(json.dumps(result))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="bioknow.py", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help, *run_flags):
        """A subcommand with --quiet, and --run, --data, --out where run_flags gives their help."""
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        for flag, flag_help in zip(("--run", "--data", "--out"), run_flags):
            if flag_help:
                p.add_argument(flag, required=True, help=flag_help)
        if name in ("generate", "train", "finetune"):
            p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
        if name in ("train", "finetune"):
            p.add_argument("--resume", action="store_true", help="continue --out from its last "
                           "checkpoint (rerun the same command with --resume)")
            p.add_argument("--preset", default=DEFAULT_PRESET,
                           help=f"{', '.join(PRESETS)} (default %(default)s)")
            for f in TRAIN_FIELDS:
                default_help = f"default from the preset ({f.default})"
                p.add_argument("--" + f.name.replace("_", "-"), type=flag_type(f), default=None,
                               help=CONFIG_HELP.get(f.name, default_help))
        return p

    p = command("generate", cmd_generate, "write a bioS data directory", None, None,
                "directory to write")
    p.add_argument("--people", type=int, default=None,
                   help="number of people N (default: the preset's)")
    p.add_argument("--aug", default="single",
                   help="single[+permuteP][+fullname] or multiM[+permute][+fullname]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default=DEFAULT_PRESET, help="takes --people from this preset")
    p.add_argument("--celebrities", type=int, default=0,
                   help="add this many celebrities (Result 6): P_train, biographies under "
                        "--celebrity-aug; the N people keep --aug and are all P_test")
    p.add_argument("--celebrity-aug", default="multi5+permute",
                   help="the celebrities' augmentation (%(default)s)")
    p.add_argument("--bios-from", metavar="FILE",
                   help="your own biographies ({\"id\", \"text\"} lines, e.g. written by an LLM) "
                        "for the people of --data -> --out")
    p.add_argument("--data", metavar="DIR",
                   help="with --bios-from: the data directory the texts' people are from")

    p = command("check", cmd_check,
                "re-verify a data directory's invariants; lists every problem (exit 1 if any)")
    p.add_argument("dir", help="data directory from `generate`")

    command("train", cmd_train,
            "pretrain on biographies (--mode bio) or biographies + P_train QA (mixed)", None,
            "data directory from `generate`", "run directory to write")
    command("finetune", cmd_finetune,
            "QA finetuning on P_train questions (full, or LoRA with --lora-qv/--lora-emb)",
            "pretrained run directory", "data directory the run was trained on",
            "run directory to write")

    p = command("eval", cmd_eval, "QA exact match on P_train / P_test, and memorisation",
                "run directory", "data directory the run was trained on")
    p.add_argument("--out", default=None, help="write the result as one JSON object here")
    p.add_argument("--device", default="auto")

    p = command("probe", cmd_probe,
                "P-/Q-probe a frozen pretrained run: where is each attribute stored? (JSON)",
                "pretrained run directory", "data directory the run was trained on")
    p.add_argument("--kind", choices=("p", "q", "both", "lookup"), default="both",
                   help="which probes (default %(default)s); lookup: the causal check instead, "
                        "recall with the name's tokens cut from the reads or patched, per block")
    p.add_argument("--layer", type=int, default=None,
                   help="read the residual stream after this block (0: the embedding; default: "
                        "the last, after the final LayerNorm)")
    p.add_argument("--out", default=None, help="write the result as one JSON object here")
    p.add_argument("--steps", type=int, default=None,
                   help="steps training the embedding update with the read-outs "
                        "(default: the run's --probe-steps)")
    p.add_argument("--head-steps", type=int, default=PROBE_HEAD_STEPS,
                   help="full-batch steps fitting the read-outs on the frozen features first")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="AdamW learning rate of the joint phase, decayed linearly to 0 "
                        "(paper: 1e-3)")
    p.add_argument("--q-read", choices=("name", "end"), default="name",
                   help="Q-probe read position: the name's last token (default) or an end token "
                        "after it (paper)")
    p.add_argument("--readout", choices=("linear", "candidates"), default="linear",
                   help="linear: the paper's classifier (default); candidates: a linear map "
                        "scored against the model's own embeddings of the values, which can "
                        "score values no probe-training person has")
    p.add_argument("--holdout", type=float, default=0.0,
                   help="score on this fraction of P_train people, trained on the rest (to "
                        "choose a recipe; P_test is never used for that)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)

    p = command("reproduce", cmd_reproduce,
                "the headline rows -> OUT/reproduce.json (REPORT.md: experiments/tables.py)")
    p.add_argument("--preset", default=DEFAULT_PRESET, help="default %(default)s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-probe", action="store_true",
                   help="skip P-/Q-probing of the pretrained models")
    p.add_argument("--jobs", type=int, default=1,
                   help="rows side by side, a process each on one thread (default 1)")

    p = command("bench", cmd_bench,
                "time full training steps; prints one JSON line (tokens/s, ms/step, MFU)")
    p.add_argument("--preset", default=DEFAULT_PRESET,
                   help="the shape to time (default %(default)s)")
    for name in BENCH_SHAPE:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                       help="override the preset's")
    p.add_argument("--vocab-size", type=int, default=None,
                   help=f"default: bioknow's vocabulary ({len(VOCAB)})")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--steps", type=int, default=10, help="timed steps (default %(default)s)")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed steps first, compilation included")

    args = parser.parse_args(argv)
    args.config = {f.name: getattr(args, f.name, None) for f in TRAIN_FIELDS}
    return args


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
    finally:
        # Leave the process group before exit: gloo's threads, left running, can abort the
        # process at shutdown ("terminate called without an active exception").
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# --------------------------------------------------------------------------------------------------
# --- word lists and templates (data: bioknow's own, sized as Appendix A says)
# Name pools are built from syllable parts, so the sizes (400 / 400 / 1,000) hold exactly and
# every name is one token.

FIRST_NAMES = [a + b
               for a in ("Al", "Bel", "Cal", "Dar", "El", "Fen", "Gal", "Hal", "Ir", "Jor",
                         "Kel", "Lor", "Mar", "Nor", "Or", "Per", "Ros", "Sil", "Tam", "Vin")
               for b in ("a", "an", "ina", "ric", "on", "ette", "ias", "ene", "o", "ia",
                         "ley", "den", "wyn", "isa", "us", "elle", "ando", "ora", "ith", "ey")]
MIDDLE_NAMES = [a + b
                for a in ("Ab", "Bra", "Cor", "Dun", "Em", "Flo", "Gre", "Hun", "Ive", "Jas",
                          "Kir", "Lin", "Mor", "Nel", "Ot", "Pres", "Quin", "Ren", "Sto", "Wil")
                for b in ("bert", "dy", "ley", "ton", "na", "ric", "ford", "ie", "mond", "sey",
                          "ler", "van", "dell", "rose", "ven", "ham", "by", "lin", "ette", "more")]
LAST_NAMES = [a + b
              for a in ("Ash", "Black", "Brook", "Clay", "Cold", "Corn", "Cross", "Dale",
                        "East", "Fair", "Fern", "Frost", "Glen", "Gold", "Gray", "Green",
                        "Hale", "Hart", "Hawk", "Hill", "Holt", "Kings", "Lake", "Lang",
                        "Marsh", "Mill", "Moor", "North", "Oak", "Pen", "Red", "Rock",
                        "Rose", "Shaw", "Stan", "Stone", "Thorn", "West", "White", "Wind")
              for b in ("ford", "wood", "field", "ley", "ton", "well", "brook", "by", "croft",
                        "dale", "worth", "wick", "ham", "more", "stead", "ridge", "shaw", "land",
                        "cott", "bury", "hurst", "mont", "stock", "wright", "gate")]

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
YEARS = range(1900, 2100)  # 200 years x 12 months x 28 days (Appendix A)
DAYS = range(1, 29)

CITIES = """New York, NY|Los Angeles, CA|Chicago, IL|Houston, TX|Phoenix, AZ|Philadelphia, PA|
San Antonio, TX|San Diego, CA|Dallas, TX|San Jose, CA|Austin, TX|Jacksonville, FL|Fort Worth, TX|
Columbus, OH|Charlotte, NC|San Francisco, CA|Indianapolis, IN|Seattle, WA|Denver, CO|Boston, MA|
El Paso, TX|Nashville, TN|Detroit, MI|Oklahoma City, OK|Portland, OR|Las Vegas, NV|Memphis, TN|
Louisville, KY|Baltimore, MD|Milwaukee, WI|Albuquerque, NM|Tucson, AZ|Fresno, CA|Mesa, AZ|
Sacramento, CA|Atlanta, GA|Kansas City, MO|Colorado Springs, CO|Omaha, NE|Raleigh, NC|Miami, FL|
Long Beach, CA|Virginia Beach, VA|Oakland, CA|Minneapolis, MN|Tulsa, OK|Tampa, FL|Arlington, TX|
New Orleans, LA|Wichita, KS|Cleveland, OH|Bakersfield, CA|Aurora, CO|Anaheim, CA|Honolulu, HI|
Santa Ana, CA|Riverside, CA|Corpus Christi, TX|Lexington, KY|Stockton, CA|Henderson, NV|
Saint Paul, MN|Cincinnati, OH|Pittsburgh, PA|Greensboro, NC|Anchorage, AK|Plano, TX|Lincoln, NE|
Orlando, FL|Irvine, CA|Newark, NJ|Toledo, OH|Durham, NC|Chula Vista, CA|Fort Wayne, IN|
Jersey City, NJ|Saint Petersburg, FL|Laredo, TX|Madison, WI|Chandler, AZ|Buffalo, NY|Lubbock, TX|
Scottsdale, AZ|Reno, NV|Glendale, AZ|Gilbert, AZ|Norfolk, VA|Chesapeake, VA|Garland, TX|Irving, TX|
Hialeah, FL|Fremont, CA|Boise, ID|Richmond, VA|Baton Rouge, LA|Spokane, WA|Des Moines, IA|
Tacoma, WA|San Bernardino, CA|Modesto, CA|Fontana, CA|Santa Clarita, CA|Birmingham, AL|Oxnard, CA|
Fayetteville, NC|Moreno Valley, CA|Rochester, NY|Huntington Beach, CA|Salt Lake City, UT|
Grand Rapids, MI|Amarillo, TX|Yonkers, NY|Montgomery, AL|Akron, OH|Little Rock, AR|Huntsville, AL|
Augusta, GA|Columbus, GA|Grand Prairie, TX|Shreveport, LA|Overland Park, KS|Tallahassee, FL|
Mobile, AL|Knoxville, TN|Worcester, MA|Providence, RI|Fort Lauderdale, FL|Chattanooga, TN|Tempe, AZ|
Brownsville, TX|Cape Coral, FL|Eugene, OR|Salem, OR|Sioux Falls, SD|Springfield, MO|Peoria, IL|
Pasadena, CA|Savannah, GA|Syracuse, NY|Hartford, CT|Dayton, OH|Alexandria, VA|Lakewood, CO|
Fort Collins, CO|Naperville, IL|Rockford, IL|Joliet, IL|Paterson, NJ|Bridgeport, CT|Springfield, IL|
Kansas City, KS|Topeka, KS|Cedar Rapids, IA|Waco, TX|Charleston, SC|Columbia, SC|Athens, GA|
Ann Arbor, MI|Berkeley, CA|Boulder, CO|Princeton, NJ|Cambridge, MA|New Haven, CT|Ithaca, NY|
Burlington, VT|Portland, ME|Manchester, NH|Wilmington, DE|Charleston, WV|Billings, MT|Fargo, ND|
Cheyenne, WY|Santa Fe, NM|Juneau, AK|Bismarck, ND|Helena, MT|Olympia, WA|Concord, NH|Montpelier, VT|
Annapolis, MD|Dover, DE|Trenton, NJ|Albany, NY|Harrisburg, PA|Lansing, MI|Jackson, MS|Frankfort, KY|
Pierre, SD|Carson City, NV|Duluth, MN|Green Bay, WI|Erie, PA|Allentown, PA|Scranton, PA|
Lancaster, PA|Flint, MI|Kalamazoo, MI|Evansville, IN|South Bend, IN|
Bloomington, IN""".replace("\n", "").split("|")

# 300 institutions from 60 stems x 5 patterns; many share the prefix "University of" (Appendix A).
UNIVERSITY_STEMS = ("Alabama Arizona Arkansas California Colorado Connecticut Delaware Florida "
                    "Georgia Idaho Illinois Indiana Iowa Kansas Kentucky Louisiana Maine Maryland "
                    "Massachusetts Michigan Minnesota Mississippi Missouri Montana Nebraska Nevada "
                    "Ohio Oklahoma Oregon Pennsylvania Tennessee Texas Utah Vermont Virginia "
                    "Washington Wisconsin Wyoming Alder Birchwood Cedarbrook Dunmore Elmhurst "
                    "Fairhaven Glenwood Harborview Ironwood Juniper "
                    "Kingsbridge Lakeshore Maplewood Northgate Oakridge Pinecrest Quarry Riverside "
                    "Silverlake Timberline Valleyview Westbrook").split()
UNIVERSITY_PATTERNS = ("University of {}", "{} State University", "{} College",
                       "{} Institute of Technology", "{} University")
UNIVERSITIES = [pattern.format(stem)
                for pattern in UNIVERSITY_PATTERNS for stem in UNIVERSITY_STEMS]

MAJORS = """Accounting|Aerospace Engineering|African Studies|Agricultural Science|Animal Science|
Anthropology|Applied Mathematics|Archaeology|Architecture|Art History|Astronomy|Astrophysics|
Biochemistry|Bioengineering|Bioinformatics|Biology|Biomedical Engineering|Botany|
Business Administration|Chemical Engineering|Chemistry|Chinese Literature|Civil Engineering|
Classics|Cognitive Science|Communications|Comparative Literature|Computer Engineering|
Computer Science|Construction Management|Creative Writing|Criminology|Dance|Data Science|Dentistry|
Earth Science|Ecology|Economics|Education|Electrical Engineering|English Literature|
Environmental Science|Epidemiology|Ethnic Studies|Film Studies|Finance|Fine Arts|Food Science|
Forensic Science|Forestry|French|Game Design|Genetics|Geography|Geology|German|Graphic Design|
Health Sciences|History|Hospitality Management|Industrial Design|Industrial Engineering|
Information Systems|International Relations|Journalism|Kinesiology|Linguistics|Management|
Marine Biology|Marketing|Materials Science|Mathematics|Mechanical Engineering|Media Studies|
Microbiology|Music|Neuroscience|Nuclear Engineering|Nursing|Nutrition|Oceanography|
Petroleum Engineering|Pharmacology|Philosophy|Photography|Physics|Political Science|Psychology|
Public Health|Public Policy|Religious Studies|Robotics|Social Work|Sociology|Software Engineering|
Spanish|Statistics|Theater|Urban Planning|Zoology""".replace("\n", " ").split("|")
MAJORS = [m.strip() for m in MAJORS]

# 263 employers from 27 stems x 10 kinds (the first 263); each sits in one headquarters city. 36
# of them (13.7%) share one city, the majority-guess baseline for "company city" (the paper: 13.7%).
COMPANY_STEMS = ("Apex Bluewave Cobalt Driftwood Ember Falcon Granite Helix Indigo Jetstream "
                 "Keystone Lumen Meridian Nimbus Orchid Pinnacle Quartz Redwood Summit Tidal Umbra "
                 "Vertex Willow Xenon "
                 "Yardley Zephyr Aurora").split()
COMPANY_KINDS = ("Systems", "Labs", "Holdings", "Energy", "Foods", "Motors", "Health", "Media",
                 "Logistics", "Capital")
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


# Sentence templates. {S}: the subject (the full name, or the pronoun); {V}: the value; {P}: the
# possessive pronoun; {was} {is} {has}: verbs that agree with the subject ("they were"). bioknow's
# own wording, 42+ per attribute.
TEMPLATES = {
    "birth_date": """{S} {was} born on {V}.|{S} came into the world on {V}.|
{S} {was} born on the date {V}.|{S} celebrates {P} birthday on {V}.|{S} entered this world on {V}.|
{S} first saw daylight on {V}.|{S} {has} a birth date of {V}.|
{S} {was} delivered into a loving family on {V}.|{S} arrived on {V}.|
{S} marks {P} birthday each year on the anniversary of {V}.|{S} took {P} first breath on {V}.|
{S} {was} welcomed into the world on {V}.|{S} {has} records showing a birth on {V}.|
{S} began life on {V}.|{S} {was} born, according to records, on {V}.|
{S} {has} always celebrated {V} as the day of birth.|{S} {was} a newborn on {V}.|
{S} joined {P} family on {V}.|{S} made an entrance into the world on {V}.|
{S} {was} brought into the world on {V}.|{S} {has} a birthday falling on {V}.|
{S} {was} born early on {V}.|{S} counts {V} as {P} birthday.|{S} {was} born late in the day on {V}.|
{S} first opened {P} eyes on {V}.|{S} {has} a birth certificate dated {V}.|
{S} {was} born in the morning of {V}.|{S} started {P} journey on {V}.|
{S} {was} born into a quiet household on {V}.|{S} {is} someone whose birthday is {V}.|
{S} lists {V} as {P} date of birth.|{S} {was} born during the night of {V}.|
{S} entered the world on {V}.|{S} {was} given life on {V}.|{S} {has} {V} as {P} birthday.|
{S} {was} born on a cold {V}.|{S} {was} born on a sunny {V}.|
{S} {has} celebrated a birthday every {V} since then.|{S} {was} born healthy on {V}.|
{S} began {P} story on {V}.|{S} {was} born at home on {V}.|
{S} {was} born in a small hospital on {V}.""",
    "birth_city": """{S} {was} born in {V}.|{S} spent {P} early years in {V}.|{S} grew up in {V}.|
{S} {has} roots in {V}.|{S} calls {V} {P} hometown.|{S} {was} raised in {V}.|{S} hails from {V}.|
{S} spent {P} childhood in {V}.|{S} came from {V}.|{S} {was} a native of {V}.|
{S} {is} originally from {V}.|{S} began life in {V}.|{S} took {P} first steps in {V}.|
{S} {was} brought up in {V}.|{S} lived as a child in {V}.|{S} first called {V} home.|
{S} {was} born and raised in {V}.|{S} {has} fond memories of {V}, {P} birthplace.|
{S} {is} a proud native of {V}.|{S} owes {P} accent to {V}.|{S} {was} welcomed to the world in {V}.|
{S} {was} delivered in a hospital in {V}.|{S} {has} a birthplace of {V}.|
{S} first saw the sky over {V}.|{S} {was} born in the city of {V}.|{S} spent {P} youth in {V}.|
{S} {was} a child of {V}.|{S} learned to walk in {V}.|
{S} {has} family ties to {V}, where the birth took place.|{S} {was} born in a neighborhood of {V}.|
{S} grew up on the streets of {V}.|{S} claims {V} as {P} birthplace.|
{S} {has} {V} listed as {P} place of birth.|{S} {was} born to a family in {V}.|
{S} started out in {V}.|{S} {was} born near downtown {V}.|
{S} {has} always loved {V}, the city of {P} birth.|{S} spent {P} first years in {V}.|
{S} {was} born and spent {P} early youth in {V}.|{S} comes from the town of {V}.|
{S} {was} raised by {P} parents in {V}.|{S} remembers a childhood in {V}.""",
    "university": """{S} studied at {V}.|{S} graduated from {V}.|{S} attended {V}.|
{S} {was} a student at {V}.|{S} received an education at {V}.|{S} enrolled at {V}.|
{S} earned a degree from {V}.|{S} {is} an alumnus of {V}.|{S} completed {P} studies at {V}.|
{S} spent {P} college years at {V}.|{S} pursued higher education at {V}.|{S} {was} admitted to {V}.|
{S} took classes at {V}.|{S} {has} a diploma from {V}.|{S} went to college at {V}.|
{S} {was} educated at {V}.|{S} {was} trained at {V}.|{S} chose {V} for {P} studies.|
{S} spent four years at {V}.|{S} {has} fond memories of studying at {V}.|
{S} {was} a proud member of the class at {V}.|{S} finished {P} education at {V}.|
{S} {was} accepted into {V}.|{S} received academic training at {V}.|{S} {is} a graduate of {V}.|
{S} studied hard at {V}.|{S} {was} a scholar at {V}.|{S} went on to attend {V}.|
{S} sharpened {P} mind at {V}.|{S} earned {P} diploma at {V}.|{S} {was} a dedicated student at {V}.|
{S} spent {P} student days at {V}.|{S} continued {P} education at {V}.|
{S} completed a degree program at {V}.|{S} joined the student body of {V}.|
{S} {has} an education from {V}.|{S} {was} enrolled in courses at {V}.|{S} lived on campus at {V}.|
{S} did {P} undergraduate work at {V}.|{S} {was} schooled at {V}.|
{S} received a scholarship to {V}.|{S} gained knowledge at {V}.""",
    "major": """{S} majored in {V}.|{S} focused on {V}.|{S} studied {V}.|{S} specialized in {V}.|
{S} earned a degree in {V}.|{S} chose to study {V}.|{S} concentrated on {V}.|
{S} pursued a degree in {V}.|{S} {was} passionate about {V}.|{S} completed coursework in {V}.|
{S} {has} a background in {V}.|{S} devoted {P} studies to {V}.|{S} {was} trained in {V}.|
{S} dedicated {P} time to {V}.|{S} explored {V}.|{S} {was} a student of {V}.|
{S} picked {V} as {P} field.|{S} received a diploma in {V}.|{S} took up {V}.|
{S} {has} expertise in {V}.|{S} developed a deep interest in {V}.|{S} wrote a thesis in {V}.|
{S} {was} an undergraduate in {V}.|{S} learned the foundations of {V}.|
{S} graduated with a focus on {V}.|{S} spent years studying {V}.|{S} {was} drawn to {V}.|
{S} {has} an academic background in {V}.|{S} declared a major in {V}.|
{S} built {P} career foundations in {V}.|{S} {was} fascinated by {V}.|{S} obtained a degree in {V}.|
{S} did coursework focused on {V}.|{S} {is} well versed in {V}.|{S} followed {P} interest in {V}.|
{S} enrolled in the program for {V}.|{S} {was} educated in {V}.|{S} mastered {V}.|
{S} excelled in {V}.|{S} dove into {V}.|{S} earned honors in {V}.|{S} {has} a passion for {V}.""",
    "company": """{S} worked for {V}.|{S} {was} employed by {V}.|{S} accepted a position at {V}.|
{S} joined {V}.|{S} {has} a job at {V}.|{S} built a career at {V}.|{S} {was} hired by {V}.|
{S} took a role at {V}.|{S} {was} on the staff of {V}.|{S} spent {P} career at {V}.|
{S} worked as an employee of {V}.|{S} {was} a member of the team at {V}.|{S} contributed to {V}.|
{S} found work at {V}.|{S} served at {V}.|{S} {was} recruited by {V}.|{S} signed on with {V}.|
{S} {has} been with {V} for years.|{S} earned a living at {V}.|{S} {was} an employee at {V}.|
{S} held a position at {V}.|{S} landed a job with {V}.|{S} went to work for {V}.|
{S} {was} part of {V}.|{S} {has} worked hard at {V}.|{S} started working at {V}.|
{S} began a career with {V}.|{S} {was} on the payroll of {V}.|{S} worked full time at {V}.|
{S} took a job at {V}.|{S} {was} a staff member at {V}.|{S} devoted {P} working life to {V}.|
{S} secured employment with {V}.|{S} {was} a valued worker at {V}.|{S} spent long hours at {V}.|
{S} {has} a career at {V}.|{S} earned promotions at {V}.|{S} {was} employed at {V}.|
{S} collaborated with colleagues at {V}.|{S} {was} offered a role at {V}.|{S} worked at {V}.|
{S} made a career with {V}.""",
    "company_city": """{S} worked in {V}.|{S} {was} employed in {V}.|{S} moved to {V} for work.|
{S} took a job in {V}.|{S} commuted to an office in {V}.|{S} {has} a workplace in {V}.|
{S} relocated to {V}.|{S} settled in {V} for {P} career.|{S} spent {P} working years in {V}.|
{S} {was} based in {V}.|{S} built {P} career in {V}.|{S} found work in {V}.|
{S} {was} stationed in {V}.|{S} worked at an office in {V}.|{S} pursued {P} profession in {V}.|
{S} {has} an office in {V}.|{S} reported to headquarters in {V}.|{S} {was} posted to {V}.|
{S} earned a living in {V}.|{S} {was} working in {V}.|{S} spent weekdays in {V}.|
{S} {has} worked for years in {V}.|{S} took up employment in {V}.|{S} {was} assigned to {V}.|
{S} moved to {V} for a job.|{S} {was} a worker in {V}.|{S} spent {P} career in {V}.|
{S} {has} a desk in {V}.|{S} went to work in {V}.|{S} {was} transferred to {V}.|
{S} traveled daily to {V} for work.|{S} worked out of {V}.|
{S} {was} employed at the headquarters in {V}.|{S} {has} made a career in {V}.|
{S} started a job in {V}.|{S} {was} hired to work in {V}.|{S} kept an office in {V}.|
{S} made a living in {V}.|{S} {was} a professional in {V}.|{S} worked long hours in {V}.|
{S} spent {P} days working in {V}.|{S} {was} employed full time in {V}.""",
}
TEMPLATES = {k: [t.strip() for t in v.replace("\n", "").split("|")] for k, v in TEMPLATES.items()}

# QA prompts (Appendix A: the question, then a new line and "Answer: VALUE.").
QUESTIONS = {
    "birth_date": "What is the birth date of {N}?",
    "birth_city": "What is the birth city of {N}?",
    "university": "Which university did {N} study?",
    "major": "What major did {N} study?",
    "company": "Which company did {N} work for?",
    "company_city": "Where did {N} work?",
}

# 0.2: resumable checkpoints (optimizer, RNGs, stream positions), padded embedding
VERSION = "0.2.0"
# VARIANTS[attr][pronoun][with_name][k]: every template with its pronoun and verbs filled in
VARIANTS = {attr: {pronoun: {with_name: [template_variant(t, pronoun, with_name)
                                          for t in TEMPLATES[attr]]
                              for with_name in (False, True)}
                    for pronoun in PRONOUNS}
            for attr in ATTRIBUTES}
VOCAB = build_vocab()

if __name__ == "__main__":
    main()
