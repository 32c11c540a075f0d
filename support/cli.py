"""
bioknow.py's command line: one subcommand a step of the method, each with --help. train and finetune take every Config
field as a flag, so a new hyper-parameter is one line. bioknow.main() parses here and reports a UserError as one line
on stderr, exit status 2.
"""
import argparse
import dataclasses
import json
import sys

import bioknow as bk
from support.plumbing import (UserError, SHAPE, bios_from, check_data, load_checkpoint, load_data, pick_device, world,
                              write_json)

CONFIG_HELP = {"passes": "budget in passes: over bioS-single-sized biographies (train), over P_train QA (finetune)",
               "steps": "optimizer steps (overrides --passes)", "mode": "bio or mixed",
               "qa_ratio": "mixed training: probability that a window is QA", "compile": "auto, on or off",
               "budget": "mixed training: bio (default; --passes are biography passes, the steps scaled by "
                         "1 / (1 - qa_ratio)) or all (--passes count every window)",
               "packing": "entries (default: whole entries only, padded) or stream (windows cut anywhere)",
               "holdout": "finetune, or mixed training: fraction of P_train people whose QA is held out (to choose "
                          "a recipe without P_test)",
               "lora_qv": "finetune: LoRA rank on each layer's query and value (0: full finetuning; paper: 8 or 16)",
               "lora_emb": "finetune: LoRA rank of the embedding update (paper: 128)",
               "objective": "clm (the causal GPT) or mlm (GBERT: full attention, whole-word masking)"}
TRAIN_FIELDS = [f for f in dataclasses.fields(bk.Config) if f.name not in ("people", "preset")]


def cmd_generate(args):
    if args.bios_from or args.data:
        if not (args.bios_from and args.data):
            raise UserError("--bios-from FILE and --data DIR go together: the texts, and the people they are about")
        return print(json.dumps(bios_from(args.data, args.bios_from, args.out, args.force)))
    people = bk.resolve_config(args.preset).people if args.people is None else args.people
    print(json.dumps(bk.generate(args.out, people, args.aug, args.seed, args.force, args.quiet, args.celebrities,
                                 args.celebrity_aug)))


def cmd_check(args):
    data = load_data(args.dir)
    problems, meta = check_data(data), data["meta"]
    for p in problems:
        print(f"{args.dir}: {p}")
    if problems:
        sys.exit(1)
    print(f"{args.dir}: ok ({len(data['people'])} people, {len(data['bios'])} biography entries, "
          f"{len(data['qa'])} questions, aug {meta['aug']}"
          + (f"; {meta['celebrities']} celebrities, aug {meta['celebrity_aug']})" if meta.get("celebrities") else ")"))


def cmd_train(args):
    cfg = bk.resolve_config(args.preset, "train", **args.config)
    _, info = bk.train(cfg, args.data, args.out, args.force, args.quiet, args.resume)
    if world()[0] == 0:
        print(json.dumps(dict(run=args.out, **info | dict(holdout_ids=len(info["holdout_ids"])))))


def cmd_finetune(args):
    shape = {k: v for k, v in args.config.items() if k in SHAPE and v is not None}
    cfg = bk.resolve_config(args.preset, "finetune", **args.config)
    _, info = bk.finetune(cfg, args.run, args.data, args.out, args.force, args.quiet, args.resume, shape)
    print(json.dumps(dict(run=args.out, **info | dict(holdout_ids=len(info["holdout_ids"])))))


def cmd_eval(args):
    data = load_data(args.data)
    device = pick_device(args.device)
    model, _, ckpt = load_checkpoint(args.run, device, data["vocab"])
    held = set(ckpt.get("holdout_ids", []))  # held-out P_train people, scored apart: what a recipe is chosen on
    print_json(bk.evaluate(model, data, device, args.quiet, held=held), args.out)


def cmd_probe(args):
    if not 0 <= args.holdout < 1:
        raise UserError(f"--holdout must be in [0, 1), got {args.holdout}")
    kinds = ("p", "q") if args.kind == "both" else (args.kind,)
    print_json(bk.probe(args.run, args.data, kinds, args.steps, args.device, args.seed, args.quiet, args.lr,
                        args.head_steps, args.q_read, args.readout, args.holdout), args.out)


def cmd_bench(args):
    cfg = bk.resolve_config(args.preset, device=args.device, compile=args.compile,
                            **{k: getattr(args, k) for k in bk.BENCH_SHAPE})
    print(json.dumps(bk.bench(cfg, args.vocab_size, args.steps, args.warmup)))


def print_json(result, out=None):
    if out:
        write_json(out, result)
    print(json.dumps(result))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="bioknow.py", description=bk.__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help, *run_flags):
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        for flag, flag_help in zip(("--run", "--data", "--out"), run_flags):
            if flag_help:
                p.add_argument(flag, required=True, help=flag_help)
        if name in ("generate", "train", "finetune"):
            p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
        if name in ("train", "finetune"):
            p.add_argument("--resume", action="store_true",
                           help="continue --out from its last checkpoint (rerun the same command with --resume)")
            p.add_argument("--preset", default=bk.DEFAULT_PRESET, help=f"{', '.join(bk.PRESETS)} (default %(default)s)")
            for f in TRAIN_FIELDS:
                p.add_argument("--" + f.name.replace("_", "-"), type=f.type if callable(f.type) else eval(f.type),
                               default=None, help=CONFIG_HELP.get(f.name, f"default from the preset ({f.default})"))
        return p

    p = command("generate", cmd_generate, "write a bioS data directory", None, None, "directory to write")
    p.add_argument("--people", type=int, default=None, help="number of people N (default: the preset's)")
    p.add_argument("--aug", default="single", help="single[+permuteP][+fullname] or multiM[+permute][+fullname]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default=bk.DEFAULT_PRESET, help="takes --people from this preset")
    p.add_argument("--celebrities", type=int, default=0, help="add this many celebrities (Result 6): P_train, "
                   "biographies under --celebrity-aug; the N people keep --aug and are all P_test")
    p.add_argument("--celebrity-aug", default="multi5+permute", help="the celebrities' augmentation (%(default)s)")
    p.add_argument("--bios-from", metavar="FILE", help="your own biographies ({\"id\", \"text\"} lines, e.g. "
                                                       "written by an LLM) for the people of --data -> --out")
    p.add_argument("--data", metavar="DIR", help="with --bios-from: the data directory the texts' people are from")
    p = command("check", cmd_check, "re-verify a data directory's invariants; lists every problem (exit 1 if any)")
    p.add_argument("dir", help="data directory from `generate`")
    command("train", cmd_train, "pretrain on biographies (--mode bio) or biographies + P_train QA (mixed)", None,
            "data directory from `generate`", "run directory to write")
    command("finetune", cmd_finetune, "QA finetuning on P_train questions (full, or LoRA with --lora-qv/--lora-emb)",
            "pretrained run directory", "data directory the run was trained on", "run directory to write")
    p = command("eval", cmd_eval, "QA exact match on P_train / P_test, and memorisation", "run directory",
                "data directory the run was trained on")
    p.add_argument("--out", default=None, help="write the result as one JSON object here")
    p.add_argument("--device", default="auto")
    p = command("probe", cmd_probe, "P-/Q-probe a frozen pretrained run: where is each attribute stored? (JSON)",
                "pretrained run directory", "data directory the run was trained on")
    p.add_argument("--kind", choices=("p", "q", "both"), default="both", help="which probes (default %(default)s)")
    p.add_argument("--out", default=None, help="write the result as one JSON object here")
    p.add_argument("--steps", type=int, default=None,
                   help="steps training the embedding update with the read-outs (default: the run's --probe-steps)")
    p.add_argument("--head-steps", type=int, default=bk.PROBE_HEAD_STEPS,
                   help="full-batch steps fitting the read-outs on the frozen features first")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="AdamW learning rate of the joint phase, decayed linearly to 0 (paper: 1e-3)")
    p.add_argument("--q-read", choices=("name", "end"), default="name",
                   help="Q-probe read position: the name's last token (default) or an end token after it (paper)")
    p.add_argument("--readout", choices=("linear", "candidates"), default="linear",
                   help="linear: the paper's classifier (default); candidates: a linear map scored against the "
                        "model's own embeddings of the values, which can score values no probe-training person has")
    p.add_argument("--holdout", type=float, default=0.0,
                   help="score on this fraction of P_train people, trained on the rest (to choose a recipe; P_test "
                        "is never used for that)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p = command("reproduce", lambda a: bk.reproduce(a.preset, a.seed, a.out, a.device, a.quiet, not a.no_probe, a.jobs),
                "the headline rows -> OUT/reproduce.json (REPORT.md: experiments/tables.py)")
    p.add_argument("--preset", default=bk.DEFAULT_PRESET, help="default %(default)s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-probe", action="store_true", help="skip P-/Q-probing of the pretrained models")
    p.add_argument("--jobs", type=int, default=1, help="rows side by side, a process each on one thread (default 1)")
    p = command("bench", cmd_bench, "time full training steps; prints one JSON line (tokens/s, ms/step, MFU)")
    p.add_argument("--preset", default=bk.DEFAULT_PRESET, help="the shape to time (default %(default)s)")
    for name in bk.BENCH_SHAPE:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None, help="override the preset's")
    p.add_argument("--vocab-size", type=int, default=None, help=f"default: bioknow's vocabulary ({len(bk.VOCAB)})")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--steps", type=int, default=10, help="timed steps (default %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first, compilation included")
    args = parser.parse_args(argv)
    args.config = {f.name: getattr(args, f.name, None) for f in TRAIN_FIELDS}
    return args
