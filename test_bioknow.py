"""Tests for bioknow.py, in the file's order: config, data, tokenizer, model, pretraining and mixed
training, QA finetuning, evaluation, probing, GBERT, the headline gap at toy scale, bench, plumbing,
runs that survive, the command line. experiments/test_tables.py tests the tables.
`pytest -m "not slow"` skips the multi-minute tests."""
import ast
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bioknow as bk
from bioknow import bios_from, check_data, read_jsonl, write_atomic

HERE = os.path.dirname(os.path.abspath(__file__))


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, os.path.join(HERE, "bioknow.py"), *args, "--quiet"],
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"bioknow {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def run_main(capsys, *args):
    """bioknow's command line in this process (no interpreter start-up):
    (exit status, stdout, stderr)."""
    try:
        bk.main([*args, "--quiet"])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def people():
    return bk.sample_people(3000, seed=1)


# --- config

def test_presets_resolve_and_flags_override():
    cfg = bk.resolve_config("paper")
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.batch_size, cfg.steps) == (
        12, 12, 768, 512, 96, 80_000)
    assert (cfg.lr, cfg.weight_decay, cfg.adam_eps, cfg.warmup_steps, cfg.rotary_frac) == (
        1e-3, 0.1, 1e-6, 1000, 0.25)
    ft = bk.resolve_config("paper", "finetune")
    assert (ft.lr, ft.weight_decay, ft.batch_size, ft.steps, ft.warmup_steps) == (
        3e-4, 0.01, 48, 50_000, 0)
    assert bk.resolve_config("paper", n_layer=2, lr=5e-4).n_layer == 2
    # an explicit --passes beats the preset's steps
    assert bk.resolve_config("paper", passes=3.0).steps == 0
    # and --epochs in finetuning
    assert bk.resolve_config("paper", "finetune", epochs=3.0).steps == 0
    assert (bk.resolve_config("cpu", "finetune").epochs == 10
            and bk.resolve_config("cpu").passes == 60)
    with pytest.raises(bk.UserError):
        bk.resolve_config("nope")


# --- data (Appendix A)

def test_people_unique_and_in_domain(people):
    assert len({p["name"] for p in people}) == len(people)
    hq = bk.company_cities()
    for p in people:
        assert p["name"] == f"{p['first_name']} {p['middle_name']} {p['last_name']}"
        month, day, year = p["birth_date"].replace(",", "").split()
        assert month in bk.MONTHS and 1 <= int(day) <= 28 and 1900 <= int(year) <= 2099
        assert (p["birth_city"] in bk.CITIES and p["university"] in bk.UNIVERSITIES
                and p["major"] in bk.MAJORS)
        assert p["company_city"] == hq[p["company"]] and p["pronoun"] in ("he", "she", "they")
    assert Counter(p["split"] for p in people) == {"train": 1500, "test": 1500}


def test_pool_and_domain_sizes():
    sizes = [len(set(x)) for x in (bk.FIRST_NAMES, bk.MIDDLE_NAMES, bk.LAST_NAMES, bk.CITIES,
                                   bk.UNIVERSITIES, bk.MAJORS, bk.COMPANIES)]
    assert sizes == [400, 400, 1000, 200, 300, 100, 263]
    assert all(len(t) >= 40 for t in bk.TEMPLATES.values())
    top = Counter(bk.company_cities().values()).most_common(1)[0][1]
    # the majority-guess baseline of company city (Appendix A)
    assert round(100 * top / 263, 1) == 13.7


def test_bad_people_counts():
    for n in (0, -3, 400 * 400 * 1000 + 1):
        with pytest.raises(bk.UserError):
            bk.sample_people(n, 0)


@pytest.mark.parametrize("spec,expect", [
    ("single", dict(multi=1, single=True, permute=0, fullname=False)),
    ("single+permute2+fullname", dict(multi=1, single=True, permute=2, fullname=True)),
    ("multi5+permute", dict(multi=5, single=False, permute=1, fullname=False)),
    ("multi2+fullname", dict(multi=2, single=False, permute=0, fullname=True)),
])
def test_parse_aug(spec, expect):
    assert bk.parse_aug(spec) == expect


@pytest.mark.parametrize("spec", ["multi0", "permute-1", "single+multi5", "single+permute",
                                  "multi5+permute2", "single+fullname+fullname", "double",
                                  "single+permute0", ""])
def test_parse_aug_rejects(spec):
    with pytest.raises(bk.UserError):
        bk.parse_aug(spec)


def sentences(text):
    return [s for s in text.split(". ")]


def test_single_has_name_once_then_pronouns(people):
    import random
    p = people[0]
    (entry,) = bk.biographies(p, bk.parse_aug("single"), random.Random(0))
    assert entry.count(p["name"]) == 1 and entry.startswith(p["name"])
    for a in bk.ATTRIBUTES:
        assert p[a] in entry
    # fixed order: birth date, birth city, university, major, company, company city
    positions = [entry.index(p[a]) for a in bk.ATTRIBUTES[:5]]
    assert positions == sorted(positions)


def test_fullname_puts_name_in_every_sentence(people):
    import random
    p = people[1]
    (entry,) = bk.biographies(p, bk.parse_aug("single+fullname"), random.Random(0))
    assert entry.count(p["name"]) == 6


def test_permute_shuffles_same_sentences(people):
    import random
    p = next(p for p in people if p["pronoun"] != "they")  # "they" changes the verb ("they were")
    entries = bk.biographies(p, bk.parse_aug("single+permute5"), random.Random(3))
    assert len(entries) == 5

    def neutral(e):  # the same six sentences up to where the name goes
        subject = bk.PRONOUNS[p["pronoun"]][0]
        return sorted(s.replace(p["name"], subject).rstrip(".") for s in sentences(e))
    assert all(neutral(e) == neutral(entries[0]) for e in entries)
    assert len({e for e in entries}) > 1 and all(e.startswith(p["name"]) for e in entries)


def test_multi_resamples_templates(people):
    import random
    p = people[3]
    entries = bk.biographies(p, bk.parse_aug("multi5"), random.Random(0))
    assert len(entries) == 5 and len(set(entries)) == 5
    assert all(e.startswith(p["name"]) and all(p[a] in e for a in bk.ATTRIBUTES) for e in entries)


def test_generate_files_and_determinism(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        bk.generate(str(d), 60, "multi2+permute+fullname", seed=7, quiet=True)
    for name in ("people.jsonl", "bios.jsonl", "qa.jsonl", "vocab.json", "meta.json"):
        # byte-identical, meta.json included
        assert (a / name).read_bytes() == (b / name).read_bytes()
    data = bk.load_data(str(a))
    assert len(data["bios"]) == 120 and len(data["qa"]) == 360
    by_id = {p["id"]: p for p in data["people"]}
    for r in data["qa"]:
        assert (r["answer"] == by_id[r["id"]][r["attribute"]]
                and r["split"] == by_id[r["id"]]["split"])
        assert by_id[r["id"]]["name"] in r["question"]
    for b_ in data["bios"]:
        assert all(by_id[b_["id"]][k] in b_["text"] for k in bk.ATTRIBUTES)


def test_celebrities_are_p_train_with_their_own_augmentation(tmp_path, capsys):
    d = tmp_path / "d"
    meta = bk.generate(str(d), 20, "single+permute1", quiet=True, celebrities=10)
    assert (meta["people"], meta["n_train"], meta["n_test"],
            meta["celebrity_entries_per_person"]) == (30, 10, 20, 5)
    data = bk.load_data(str(d))
    entries = Counter(b["id"] for b in data["bios"])
    for p in data["people"]:
        assert (p["split"] == ("train" if p["celebrity"] else "test")
                and entries[p["id"]] == (5 if p["celebrity"] else 1))
    assert sum(p["celebrity"] for p in data["people"]) == 10
    code, out, _ = run_main(capsys, "check", str(d))
    assert code == 0 and "10 celebrities, aug multi5+permute" in out
    # a celebrity's five entries now too many
    edit_jsonl(d / "people.jsonl", 0, lambda p: dict(p, celebrity=False))
    code, out, _ = run_main(capsys, "check", str(d))
    assert (code == 1 and "entries meta.json says" in out
            and "9 celebrities, meta.json says 10" in out)


def test_generate_refuses_nonempty_out(tmp_path):
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(bk.UserError):
        bk.generate(str(tmp_path), 10, "single", quiet=True)
    assert (tmp_path / "x").read_text() == "keep me"


# --- tokenizer

def test_tokenizer_round_trip(tmp_path):
    bk.generate(str(tmp_path / "d"), 200, "multi2+permute+fullname", seed=0, quiet=True)
    data = bk.load_data(str(tmp_path / "d"))
    tok = bk.Tokenizer(data["vocab"])
    texts = [b["text"] for b in data["bios"]] + [bk.qa_text(r["question"], r["answer"])
                                                 for r in data["qa"]]
    for t in texts:
        assert tok.decode(tok.encode(t)) == t
    for p in data["people"]:  # name parts are single tokens
        assert len(tok.encode(p["name"])) == 3


def test_unknown_word_is_user_error():
    with pytest.raises(bk.UserError):
        bk.Tokenizer(bk.VOCAB).encode("Zyzzyva")


# --- model (Appendix B)

def tiny_model(**kw):
    torch.manual_seed(0)
    cfg = bk.Config(n_layer=2, n_head=2, n_embd=32, block_size=32, **kw)
    return bk.GPT(cfg, 50).eval(), cfg


def test_causality():
    model, _ = tiny_model()
    x = torch.randint(0, 50, (2, 16))
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 7) % 50
    with torch.no_grad():
        a, b = model(x)[0], model(y)[0]
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_rotary_scores_depend_on_relative_position_only():
    cos, sin = bk.rotary_tables(head_dim=16, rotary_frac=0.25, base=10000.0, length=64)
    assert cos.shape == (64, 4)  # rotary on 1/4 of the head
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        rq = bk.apply_rotary(q.view(1, 1, 1, 16).expand(1, 1, 64, 16), cos, sin)[0, 0, m]
        rk = bk.apply_rotary(k.view(1, 1, 1, 16).expand(1, 1, 64, 16), cos, sin)[0, 0, n]
        return (rq @ rk).item()
    assert score(5, 2) == pytest.approx(score(40, 37), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-4)
    rotated = bk.apply_rotary(q.view(1, 1, 1, 16).expand(1, 1, 64, 16), cos, sin)
    assert torch.equal(rotated[..., 4:], q[4:].expand(1, 1, 64, 12))  # the other 3/4 pass through


# --- pretraining and mixed training (Appendix C, Result 1)

def test_packed_stream_has_no_padding_and_every_entry():
    entries = [np.array([0] + [i + 1] * (3 + i % 4)) for i in range(20)]
    stream = bk.PackedStream(entries, block_size=8, key=(0, 0))
    w = stream.windows(30)
    assert w.shape == (30, 9)
    # windows overlap by one token (stride T)
    flat = np.concatenate([w[0]] + [r[1:] for r in w[1:]])
    first_pass = flat[:sum(len(e) for e in entries)]
    assert sorted(Counter(first_pass.tolist()).items()) == sorted(
        Counter(np.concatenate(entries).tolist()).items())


def test_packed_stream_resumes_from_a_position_and_cuts_any_batch_sizes():
    entries = [np.array([0] + [i + 1] * (2 + i % 5)) for i in range(15)]
    whole = bk.PackedStream(entries, block_size=6, key=(1, 0)).windows(40)
    stream = bk.PackedStream(entries, block_size=6, key=(1, 0))
    parts = [stream.windows(n) for n in (3, 0, 11, 1)]
    resumed = bk.PackedStream(entries, block_size=6, key=(1, 0), pos=stream.pos)
    assert torch.equal(torch.cat(parts + [resumed.windows(25)]), whole)


def test_whole_entry_packing_never_splits_an_entry_and_resumes():
    entries = [np.array([0] + [i + 1] * (3 + i % 5)) for i in range(30)]
    stream = bk.PackedStream(entries, block_size=12, key=(0, 0), packing="entries")
    first_pass = stream.pass_windows(0)[0]
    pieces = []
    for w in first_pass.tolist():
        real = [t for t in w if t >= 0]
        # entries first, padding after
        assert w[0] == 0 and w[len(real):] == [-1] * (len(w) - len(real))
        cut = [i for i, t in enumerate(real) if t == 0] + [len(real)]
        pieces += [tuple(real[a:b]) for a, b in zip(cut, cut[1:])]
    assert sorted(pieces) == sorted(tuple(e) for e in entries)  # every entry once, none cut
    # runs into the second pass
    whole = bk.PackedStream(entries, 12, (0, 0), packing="entries").windows(40)
    parts = [stream.windows(n) for n in (7, 0, 11)]
    resumed = bk.PackedStream(entries, 12, (0, 0), pos=stream.pos, packing="entries")
    assert torch.equal(torch.cat(parts + [resumed.windows(22)]), whole)


def test_mixed_training_gives_the_biographies_the_bio_rows_passes(tmp_path):
    bk.generate(str(tmp_path / "d"), 100, "single", quiet=True)
    data = bk.load_data(str(tmp_path / "d"))
    bio = bk.pretraining_steps(bk.resolve_config("tiny"), data, 6000)
    for qa_ratio in (0.5, 0.8):
        mixed = bk.resolve_config("tiny", mode="mixed", qa_ratio=qa_ratio)
        # the same bio windows
        assert abs(bk.pretraining_steps(mixed, data, 6000) * (1 - qa_ratio) - bio) <= 1


def test_mixed_training_holds_out_p_train_qa_to_choose_a_recipe(tmp_path, capsys, monkeypatch):
    """--holdout with mixed training: the held-out P_train people's QA never enters the stream; eval
    scores it apart."""
    bk.generate(str(tmp_path / "d"), 40, "single", quiet=True)
    data, encoded = bk.load_data(str(tmp_path / "d")), []
    monkeypatch.setattr(bk, "encode_entries",
                        lambda texts, tok: (encoded.append(list(texts))
                                            or [tok.encode(t) for t in texts]))
    run = str(tmp_path / "run")
    assert run_main(capsys, "train", "--preset", "tiny", "--data", str(tmp_path / "d"),
                    "--out", run, "--mode", "mixed", "--holdout", "0.5", "--steps", "3")[0] == 0
    held = set(torch.load(os.path.join(run, "model.pt"), weights_only=False)["holdout_ids"])
    assert len(held) == 10 and all(p["split"] == "train" for p in data["people"] if p["id"] in held)
    qa = {bk.qa_text(r["question"], r["answer"]): r["id"]
          for r in data["qa"] if r["split"] == "train"}
    # [0]: the biographies
    assert sorted(encoded[1]) == sorted(t for t, i in qa.items() if i not in held)
    code, out, _ = run_main(capsys, "eval", "--run", run, "--data", str(tmp_path / "d"))
    assert code == 0 and {"qa_train", "qa_test", "qa_holdout"} <= set(json.loads(out))


def test_augmented_data_gets_same_compute(tmp_path):
    cfg = bk.resolve_config("tiny")
    steps = {}
    for aug in ("single", "multi5"):
        bk.generate(str(tmp_path / aug), 100, aug, quiet=True)
        data = bk.load_data(str(tmp_path / aug))
        tok = bk.Tokenizer(data["vocab"])
        tokens = sum(len(e) for e in bk.encode_entries([b["text"] for b in data["bios"]], tok))
        steps[aug] = bk.pretraining_steps(cfg, data, tokens)
    assert abs(steps["single"] - steps["multi5"]) <= max(1, 0.05 * steps["single"])
    # 1 and 5 entries a person
    bk.generate(str(tmp_path / "celebrities"), 50, "single", quiet=True, celebrities=50)
    data = bk.load_data(str(tmp_path / "celebrities"))
    tokens = sum(len(e) for e in bk.encode_entries([b["text"] for b in data["bios"]],
                                                   bk.Tokenizer(data["vocab"])))
    assert (abs(bk.pretraining_steps(cfg, data, tokens) - steps["single"])
            <= max(1, 0.05 * steps["single"]))


def test_lr_schedule_warmup_then_cosine_to_tenth():
    cfg = bk.Config(lr=1e-3, warmup_steps=10, min_lr_frac=0.1)
    assert bk.lr_at(0, 100, cfg) == pytest.approx(1e-4)
    assert bk.lr_at(9, 100, cfg) == pytest.approx(1e-3)
    assert bk.lr_at(100, 100, cfg) == pytest.approx(1e-4)


# --- QA finetuning and LoRA (Appendix D)

def test_answer_only_loss_mask():
    tok = bk.Tokenizer(bk.VOCAB)
    row = dict(question="What major did Alan Abbert Ashford study?", answer="Computer Science")
    x, y = bk.qa_example(tok, row)
    prompt_len = len(tok.encode(row["question"] + "\nAnswer:")) + 1
    assert len(x) == len(y)
    assert all(t == -1 for t in y[:prompt_len - 1])
    assert [tok.vocab[t] for t in y[prompt_len - 1:]] == ["Computer", "Science", ".", bk.EOS]


def test_lora_trains_only_adapters_and_saves_them_merged(tiny_run, tmp_path):
    base, _, _ = bk.load_checkpoint(str(tiny_run / "run"))
    cfg = bk.resolve_config("tiny", "finetune", steps=6, lr=1e-2, lora_qv=2, lora_emb=4)
    model, _ = bk.finetune(cfg, str(tiny_run / "run"), str(tiny_run / "d"), str(tmp_path / "ft"),
                           quiet=True)
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    # the adapters, nothing else
    assert trainable and all(".A." in k or ".B." in k for k in trainable)
    merged, _, _ = bk.load_checkpoint(str(tmp_path / "ft"))  # a plain GPT: the adapters folded in
    C = cfg.n_embd
    for name, before in base.state_dict().items():
        after = merged.state_dict()[name]
        # query and value blocks change, the key block does not
        if name.endswith("attn.qkv.weight"):
            assert (torch.equal(before[C:2 * C], after[C:2 * C])
                    and not torch.equal(before[:C], after[:C]))
            assert not torch.equal(before[2 * C:], after[2 * C:])
        elif name in ("wte.weight", "lm_head.weight"):
            assert not torch.equal(before, after)
        else:
            assert torch.equal(before, after), name
    x = torch.randint(0, 50, (2, 16))
    torch.testing.assert_close(merged(x)[0], model.eval()(x)[0], rtol=1e-4, atol=1e-4)


# --- evaluation

def test_kv_cache_decoding_matches_full_recompute():
    model, _ = tiny_model()
    prompts = torch.randint(0, 50, (5, 7))
    cached = bk.greedy_answers(model, prompts, 6, "cpu")
    x = prompts
    for _ in range(6):  # the plain way: the whole sequence through the model for every new token
        x = torch.cat([x, model(x)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, x[:, 7:])


def test_exact_match():
    eos = 0
    assert bk.exact_match([5, 6, 7, eos, 9], [5, 6, 7], eos)
    assert not bk.exact_match([5, 6, eos], [5, 6, 7], eos)  # partial answers do not count
    assert not bk.exact_match([5, 6, 7, 8, eos], [5, 6, 7], eos)


def test_value_positions_fixed_and_permuted(people):
    import random
    tok = bk.Tokenizer(bk.VOCAB)
    for spec in ("single", "multi2+permute", "single+permute2+fullname"):
        for p in people[:40]:
            for entry in bk.biographies(p, bk.parse_aug(spec), random.Random(p["id"])):
                ids = tok.encode(entry)
                found = bk.value_positions(ids, p, tok)
                assert set(found) == set(bk.ATTRIBUTES)
                for a, i in found.items():
                    assert ids[i:i + len(tok.encode(p[a]))] == tok.encode(p[a])


# --- probing (Appendices E-F)

def test_p_probe_positions_are_just_before_each_attribute(people):
    import random
    tok = bk.Tokenizer(bk.VOCAB)
    for spec in ("single", "multi2+permute", "single+permute2+fullname"):
        for p in people[:30]:
            for entry in bk.biographies(p, bk.parse_aug(spec), random.Random(p["id"])):
                [ids], [positions] = bk.p_probe_inputs(
                    dict(people=[p], bios=[dict(id=p["id"], text=entry)]), tok)
                firsts = {tok.encode(p[a])[0] for a in bk.ATTRIBUTES}
                assert len(positions) == 6 and positions == sorted(positions)
                assert all(ids[i + 1] in firsts for i in positions)
                if spec == "single":  # fixed order: position k precedes attribute k
                    assert [ids[i + 1] for i in positions] == [tok.encode(p[a])[0]
                                                               for a in bk.ATTRIBUTES]


def test_q_probe_reads_the_bare_name(people):
    tok = bk.Tokenizer(bk.VOCAB)
    data = {"people": people[:5]}
    for read, tail in (("name", []), ("end", [tok.eos])):
        seqs, positions = bk.q_probe_inputs(data, tok, read)
        for p, s, (i,) in zip(people, seqs, positions):
            assert s == [tok.eos] + tok.encode(p["name"]) + tail and i == len(s) - 1


def test_probe_trains_only_its_own_parameters(tiny_run):
    model, _, _ = bk.load_checkpoint(str(tiny_run / "run"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = bk.load_data(str(tiny_run / "d"))
    tok = bk.Tokenizer(data["vocab"])
    labels = {key: ids for key, (_, ids) in bk.probe_classes(data["people"], tok).items()}
    probes = bk.new_probes(model.wte.weight, 2, "layer", 6, labels, "cpu")
    for a, b, heads in probes.values():
        assert a.shape[1] == b.shape[0] == 2 and not b.any()  # the embedding update starts at zero
        # per position: norm (gamma, beta) and a linear classifier (weight, bias);
        # nothing else trains
        assert {n.split(".")[-1] for n, _ in heads.named_parameters()} == {
            "gamma", "beta", "weight", "bias"}
    seqs, positions = bk.p_probe_inputs(data, tok)
    result = bk.fit_probe(model, seqs, positions, labels, range(20), range(20, 40), 2, "layer",
                          3, 8, "cpu", head_steps=5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert (len(result["first_token"]["company"]) == 6
            and set(result["whole"]) == set(bk.ATTRIBUTES[1:]))


def test_probe_command_writes_both_probes(tiny_run, tmp_path, capsys):
    out = tmp_path / "probe.json"
    code, _, _ = run_main(capsys, "probe", "--run", str(tiny_run / "run"),
                          "--data", str(tiny_run / "d"), "--steps", "2", "--head-steps", "5",
                          "--out", str(out), "--device", "cpu")
    result = json.loads(out.read_text())
    assert code == 0 and set(result) == {"p_probe", "q_probe"}
    p = result["p_probe"]  # Figure 5's grids: attribute x read position
    assert ([len(p["first_token"]), len(p["whole"])] == [6, 5]
            and all(len(r) == 6 for r in p["first_token"]))
    assert p["attributes"]["whole"] == list(bk.ATTRIBUTES[1:])
    assert set(result["q_probe"]["whole"]) == set(bk.ATTRIBUTES[1:])
    assert set(result["q_probe"]["baseline"]) == {"first_token", "whole"}


class Planted(torch.nn.Module):
    """A stand-in model whose hidden state at every position is a code of its person's labels
    (plus noise)."""

    def __init__(self, codes):
        super().__init__()
        self.wte, self.codes = torch.nn.Embedding(len(codes) + 1, codes.shape[1]), codes

    def hidden(self, idx, wte=None, layer=None):
        h = self.codes[idx[:, 1] - 1] + 0.1 * torch.randn(len(idx), self.codes.shape[1])
        return h[:, None].expand(-1, idx.shape[1], -1) + 0 * F.embedding(idx, wte)[..., :1]


@pytest.mark.parametrize("shuffle", [False, True])
def test_probe_reads_a_planted_label_and_not_a_shuffled_one(shuffle):
    n, g = 400, torch.Generator().manual_seed(0)
    labels = {(k, a): torch.randint(0, 4, (n,), generator=g)
              for k, attrs in bk.PROBE_TARGETS.items() for a in attrs}
    codes = torch.cat([F.one_hot(y, 4).float() for y in labels.values()], dim=1)
    if shuffle:
        labels = {k: y[torch.randperm(n, generator=g)] for k, y in labels.items()}
    result = bk.fit_probe(Planted(codes), [[0, i + 1, 0] for i in range(n)], [[1]] * n, labels,
                          range(300), range(300, n), 2, "layer", 20, 50, "cpu", lr=1e-2,
                          head_steps=600)
    for kind, attrs in bk.PROBE_TARGETS.items():
        for a in attrs:
            acc, base = result[kind][a][0], result["baseline"][kind][a]
            assert (acc <= base + 15) if shuffle else (acc >= 95), (kind, a, acc, base)


def test_candidate_read_out_scores_a_value_no_probe_training_person_has():
    """The paper's linear classifier has never been shown the classes no probe-training person has;
    the candidate read-out, scored against the classes' own embeddings, names them. Accuracy on the
    rest is reported apart."""
    n, k, g = 400, 10, torch.Generator().manual_seed(0)
    y = torch.randint(0, k, (n,), generator=g)  # one class a person, the same for every attribute
    labels = {(t, a): y for t, attrs in bk.PROBE_TARGETS.items() for a in attrs}
    codes = torch.cat([F.one_hot(y, k).float() for _ in labels], dim=1)
    train = [i for i in range(300) if int(y[i]) < k - 3]  # nobody of the last three classes trains
    common = (Planted(codes), [[0, i + 1, 0] for i in range(n)], [[1]] * n, labels, train,
              range(300, n), 2, "layer", 5, 50, "cpu")
    linear = bk.fit_probe(*common, lr=1e-2, head_steps=300)
    # each class's code
    blocks = {key: torch.eye(codes.shape[1])[k * j:k * j + k] for j, key in enumerate(labels)}
    scored = bk.fit_probe(*common, lr=1e-2, head_steps=300, candidates=blocks)
    for t, attrs in bk.PROBE_TARGETS.items():
        for a in attrs:
            unseen = linear["unseen_share"][t][a]
            assert 15 < unseen < 45 and linear["seen"][t][a][0] >= 95
            # the unseen are where it fails
            assert scored[t][a][0] >= 95 and linear[t][a][0] <= scored[t][a][0] - 5


def test_probe_layer_k_reads_the_residual_stream_after_block_k():
    model = bk.GPT(bk.resolve_config("tiny", n_layer=3), 50).eval()
    x = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    h = model.wte(x)
    assert torch.equal(model.hidden(x, layer=0), h)  # 0: the embedding
    for k, block in enumerate(model.blocks, start=1):
        h = block(h, model.cos[:12], model.sin[:12])
        if k < 3:
            assert torch.equal(model.hidden(x, layer=k), h)
    # the default: the last, after the final LayerNorm
    assert torch.equal(model.hidden(x), model.ln_f(h))


def test_probe_at_a_layer_records_it(tiny_run, tmp_path, capsys):
    out = tmp_path / "probe.json"
    args = ["probe", "--run", str(tiny_run / "run"), "--data", str(tiny_run / "d"), "--steps", "2",
            "--head-steps", "5", "--kind", "q", "--device", "cpu"]
    code, _, _ = run_main(capsys, *args, "--layer", "0", "--out", str(out))
    assert code == 0 and json.loads(out.read_text())["q_probe"]["layer"] == 0
    code, stdout, _ = run_main(capsys, *args)
    assert code == 0 and json.loads(stdout)["q_probe"]["layer"] == 1  # the tiny preset's one block


def test_lookup_interventions_leave_the_rest_alone():
    """The attention cut and the patch, checked against what they must equal when they change
    nothing, and patching the embedding against feeding the donor's tokens."""
    model = bk.GPT(bk.resolve_config("tiny", n_layer=2), 50).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 50, (3, 12), generator=g)
    donor = x.clone()
    donor[:, 2:5] = torch.randint(0, 50, (3, 3), generator=g)
    at_name = torch.zeros(3, 12, dtype=torch.bool)
    at_name[:, 2:5] = True
    with torch.no_grad():
        plain = model(x)[0]
        causal = torch.ones(12, 12, dtype=torch.bool).tril().expand(3, 1, 12, 12)
        assert torch.allclose(bk.logits_with(model, x), plain, atol=1e-5)
        assert torch.allclose(bk.logits_with(model, x, cut_mask=causal, cut_blocks=(0, 1)), plain,
                              atol=1e-5)
        own = bk.logits_with(model, x, patch=model.hidden(x, layer=1), patch_after=1,
                             at_name=at_name)
        assert torch.allclose(own, plain, atol=1e-5)
        swapped = bk.logits_with(model, x, patch=model.wte(donor), patch_after=0, at_name=at_name)
        assert torch.allclose(swapped, model(donor)[0], atol=1e-5)
        cut = causal.clone()
        cut[:, :, 8, 2:5] = False  # position 8 may not see the name
        changed = bk.logits_with(model, x, cut_mask=cut, cut_blocks=(1,))
        assert (torch.allclose(changed[:, :8], plain[:, :8], atol=1e-5)
                and not torch.allclose(changed[:, 8], plain[:, 8]))


def test_lookup_swaps_every_occurrence_of_the_name(people):
    tok = bk.Tokenizer(bk.VOCAB)
    import random
    five = people[:5]
    bios = [dict(id=p["id"], text=bk.biographies(p, bk.parse_aug("single+fullname"),
                                                 random.Random(p["id"]))[0])
            for p in five]
    donors = five[1:] + five[:1]
    for person, donor, row in zip(five, donors,
                                  bk.lookup_inputs(dict(bios=bios), tok, five, donors)):
        name, donor_name = tok.encode(person["name"]), tok.encode(donor["name"])
        assert len(row["at_name"]) == 6 * len(name)  # fullname: the name in each of six sentences
        assert [row["swapped"][i] for i in row["at_name"]] == donor_name * 6
        assert [t for i, t in enumerate(row["seq"]) if i not in row["at_name"]] == \
            [t for i, t in enumerate(row["swapped"]) if i not in row["at_name"]]
        for read in row["reads"]:
            attr = read["attr"]
            assert row["seq"][read["pos"] + 1] == read["own"] == tok.encode(person[attr])[0]
            assert read["donor"] == tok.encode(donor[attr])[0]
        assert len(row["reads"]) == 6


def test_lookup_command_reports_every_block(tiny_run, capsys):
    code, stdout, _ = run_main(capsys, "probe", "--run", str(tiny_run / "run"),
                               "--data", str(tiny_run / "d"), "--kind", "lookup", "--device", "cpu")
    result = json.loads(stdout)
    assert (code == 0 and result["people"] == 20
            and set(result["intact"]) == set(bk.ATTRIBUTES) | {"mean"})
    assert (list(result["cut"]) == ["block 1", "every block"]
            and list(result["patch"]) == ["after block 0"])


# --- GBERT (Appendix H)

def test_gbert_attends_both_ways():
    # the same code path with the causal switch off (Appendix H)
    model, _ = tiny_model(objective="mlm")
    x = torch.randint(0, 50, (2, 16))
    y = x.clone()
    y[:, -1] = (y[:, -1] + 7) % 50
    with torch.no_grad():
        a, b = model(x)[0], model(y)[0]
    assert not model.causal and all((a[:, t] - b[:, t]).abs().max() > 1e-4 for t in range(15))


def test_mlm_masking_rates():
    tok = bk.Tokenizer(bk.VOCAB)
    x = torch.randint(1, tok.mask, (400, 128))
    x[:, ::10] = tok.eos
    inputs, targets = bk.mlm_inputs(x, tok, [0, 4, 7])
    chosen = targets >= 0
    assert not chosen[x == tok.eos].any() and torch.equal(targets[chosen], x[chosen])
    assert abs(chosen.float().sum() / (x != tok.eos).sum() - 0.15) < 0.01
    masked, kept = ((inputs[chosen] == tok.mask).float().mean(),
                    (inputs[chosen] == x[chosen]).float().mean())
    assert (abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02
            and torch.equal(inputs[~chosen], x[~chosen]))
    swapped = inputs[chosen & (inputs != tok.mask) & (inputs != x)]
    assert ((swapped != tok.eos) & (swapped != tok.mask)).all()
    # a function of (seed, step): resumable
    assert torch.equal(bk.mlm_inputs(x, tok, [0, 4, 7])[0], inputs)


def test_gbert_qa_needs_every_mask_filled(people):
    tok = bk.Tokenizer(bk.VOCAB)
    rows = [r for p in people[:6] for r in bk.qa_pairs(p)]

    # fills each question's masks with its answer, the birth year wrong
    class Oracle(torch.nn.Module):
        causal = False

        def forward(self, x):
            logits = torch.zeros(*x.shape, len(tok.vocab))
            for i, seq in enumerate(x.tolist()):
                prompt = seq[:seq.index(tok.mask)]
                row = next(r for r in rows if bk.mlm_qa_example(tok, r)[0][:len(prompt)] == prompt)
                answer = tok.encode(" " + row["answer"])
                for k, t in enumerate(answer):
                    logits[i, len(prompt) + k, t] = 1
                if row["attribute"] == "birth_date":
                    logits[i, len(prompt) + len(answer) - 1,
                           tok.stoi["1999" if "1999" not in row["answer"] else "2000"]] = 2
            return logits, None

    exact, first = bk.qa_accuracies(Oracle(), tok, rows, "cpu")
    assert exact["birth_date"] == 0 and first["birth_date"] == 100
    assert all(exact[a] == 100 and first[a] == 100 for a in bk.ATTRIBUTES[1:])


# --- reproduce: the headline gap must survive every change (toy scale, a few minutes on 2 cores)

@pytest.mark.slow
def test_headline_gap_single_low_augmented_high(tmp_path):
    """bioS single is memorised yet not extractable; multi5+permute+fullname with the same compute
    is (Result 3)."""
    rows = {s: bk.reproduce_row(s, "qa_finetune", "toy", 0, "cpu", str(tmp_path), quiet=True)
            for s in ("single", "multi5+permute+fullname")}
    single, augmented = rows["single"], rows["multi5+permute+fullname"]
    assert single["bio_memorization_min"] >= 90, single["bio_memorization_per_attribute"]
    assert single["qa_test"]["mean"] <= 20, single["qa_test"]
    assert augmented["qa_test"]["mean"] >= 50, augmented["qa_test"]
    assert augmented["qa_test"]["mean"] - single["qa_test"]["mean"] >= 35


def test_rows_run_side_by_side_give_the_rows_run_one_by_one(tmp_path):
    """--jobs runs rows in processes of their own; each row's numbers are what the same row gives
    run alone."""
    small = dict(people=40, passes=1)
    tasks = [dict(setting="single", method=m, train_overrides=small)
             for m in ("mixed", "qa_finetune")]
    alone = {t["method"]: row
             for t, row in bk.run_rows(tasks, "tiny", 0, "cpu", str(tmp_path / "a"), quiet=True)}
    both = {t["method"]: row
            for t, row in bk.run_rows(tasks, "tiny", 0, "cpu", str(tmp_path / "b"), jobs=2,
                                      quiet=True)}
    for method in alone:
        assert {k: v for k, v in both[method].items() if k not in ("minutes", "hardware")} == {
            k: v for k, v in alone[method].items() if k not in ("minutes", "hardware")}


# --- bench

def test_hardware_names_the_processor():
    # a seed repeats a run bitwise on one CPU model only, so a result line must say which one ran it
    name = bk.hardware_name("cpu")
    assert (name.startswith("cpu (") and name.index(")") < name.index(",")
            and name.endswith(torch.__version__))


def test_bench_reports_a_timed_step():
    result = bk.bench(bk.resolve_config("tiny", device="cpu"), steps=2, warmup=1)
    assert {"tokens_per_sec", "ms_per_step", "params", "device", "dtype", "compiled",
            "mfu"} <= set(result)
    assert result["tokens_per_sec"] > 0 and result["mfu"] is None and result["dtype"] == "float32"
    assert result["params"] == sum(
        p.numel() for p in bk.GPT(bk.resolve_config("tiny"), len(bk.VOCAB)).parameters())


# --- plumbing: data checks and your own biographies

def edit_jsonl(path, line, change):
    """Replace line `line` of a JSONL file with change(row), or drop it when change returns None."""
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[line] = change(rows[line])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r is not None))


@pytest.mark.parametrize("file,change,expect", [
    ("qa.jsonl", lambda r: dict(r, answer="Paris"), "disagree with people.jsonl"),
    ("bios.jsonl", lambda r: None, "entries"),
    ("people.jsonl", lambda r: dict(r, name="Ann Other Person", split="test"), "test people"),
    ("bios.jsonl", lambda r: dict(r, text=r["text"].split(". ", 1)[1]), "six values"),
    ("bios.jsonl", lambda r: dict(r, text=r["text"] + " Zzyzx."), "outside vocab.json"),
])
def test_check_reports_tampered_data(tmp_path, capsys, file, change, expect):
    d = tmp_path / "d"
    bk.generate(str(d), 40, "single+permute2+fullname", quiet=True)
    code, out, _ = run_main(capsys, "check", str(d))
    assert code == 0 and "ok" in out
    edit_jsonl(d / file, 3, change)
    code, out, _ = run_main(capsys, "check", str(d))
    assert code == 1 and expect in out, out
    # the cheap part, which `train` runs: it refuses
    if check_data(bk.load_data(str(d)), full=False):
        code, _, err = run_main(capsys, "train", "--data", str(d), "--out", str(tmp_path / "r"),
                                "--preset", "tiny")
        assert code == 2 and expect in err and not (tmp_path / "r").exists()


def test_bios_from_keeps_texts_with_all_six_values_and_probes_them(tmp_path, capsys):
    src = tmp_path / "src"
    bk.generate(str(src), 20, "single", quiet=True)
    people = bk.load_data(str(src))["people"]
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps(r) + "\n" for p in people for r in [
        dict(id=p["id"], text=f"Born {p['birth_date']} in {p['birth_city']}, {p['name']} read "
                              f"{p['major']} at {p['university']} and now serves {p['company']} in "
                              f"{p['company_city']}, happily."),
        # misses four values: left out
        dict(id=p["id"], text=f"{p['name']} enjoys {p['major']}.")]))
    code, out, err = run_main(capsys, "generate", "--bios-from", str(mine), "--data", str(src),
                              "--out", str(tmp_path / "byo"))
    assert code == 0 and "20 of 40 texts left out" in err
    data = bk.load_data(str(tmp_path / "byo"))
    assert (len(data["bios"]) == 20 and data["vocab"][:len(bk.VOCAB)] == bk.VOCAB
            and "happily" in data["vocab"])
    assert len(read_jsonl(str(tmp_path / "byo" / "rejected.jsonl"))) == 20
    assert check_data(data) == []
    # read positions found by value match
    seqs, positions = bk.p_probe_inputs(data, bk.Tokenizer(data["vocab"]))
    assert all(len(set(p)) == 6 for p in positions)
    cfg = bk.resolve_config("tiny", steps=2)
    bk.train(cfg, str(tmp_path / "byo"), str(tmp_path / "run"), quiet=True)
    result = bk.probe(str(tmp_path / "run"), str(tmp_path / "byo"), ("p",), steps=1, head_steps=2,
                      quiet=True)
    assert len(result["p_probe"]["first_token"]) == 6
    # nobody has a text with all six
    mine.write_text(json.dumps(dict(id=0, text=people[0]["name"])) + "\n")
    with pytest.raises(bk.UserError, match="20 people"):
        bios_from(str(src), str(mine), str(tmp_path / "byo2"))
    assert not (tmp_path / "byo2").exists()


# --- runs that survive: checkpoints, resume, atomic writes, divergence

RESUMABLE = ("--preset", "tiny", "--steps", "300", "--ckpt-every", "20", "--block-size", "32",
             "--batch-size", "4")


def same_weights(run_a, run_b):
    a, b = (torch.load(os.path.join(r, "model.pt"), weights_only=False) for r in (run_a, run_b))
    return (a["step"] == b["step"]
            and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]))


def logged_curve(run):
    return [(r["step"], r["loss"], r["lr"]) for r in read_jsonl(os.path.join(run, "log.jsonl"))]


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    """A CPU run killed with SIGKILL after a checkpoint and resumed ends with the same weights,
    curve and eval numbers as an uninterrupted run: bitwise, since the data order, the RNGs and the
    optimiser come back exactly."""
    d, full, cut = (str(tmp_path / n) for n in ("d", "full", "cut"))
    bk.generate(d, 60, "multi2+permute", quiet=True)
    cli("train", "--data", d, "--out", full, *RESUMABLE)
    cmd = [sys.executable, os.path.join(HERE, "bioknow.py"), "train", "--data", d, "--out", cut,
           *RESUMABLE, "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not os.path.exists(os.path.join(cut, "model.pt")) and proc.poll() is None:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    killed_at = torch.load(os.path.join(cut, "model.pt"), weights_only=False)["step"]
    assert 0 < killed_at < 300, "the run ended before it could be killed part-way"
    resumed = json.loads(cli("train", "--data", d, "--out", cut, *RESUMABLE, "--resume").stdout)
    assert resumed["resumed_from"] == killed_at
    assert same_weights(full, cut) and logged_curve(full) == logged_curve(cut)
    evals = [json.loads(cli("eval", "--run", r, "--data", d).stdout) for r in (full, cut)]
    assert evals[0] == evals[1]


def crash_after_checkpoints(monkeypatch, n):
    """Make the n-th checkpoint write the last thing the process does (as if killed
    right after it)."""
    real, calls = bk.save_checkpoint, []

    def save(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
    monkeypatch.setattr(bk, "save_checkpoint", save)


@pytest.mark.parametrize("stage", ["mixed", "mixed, whole entries", "finetune", "lora"])
def test_resume_after_crash_matches_uninterrupted(tmp_path, monkeypatch, stage):
    d, base = str(tmp_path / "d"), str(tmp_path / "base")
    bk.generate(d, 40, "single", quiet=True)
    kw = dict(steps=30, ckpt_every=7, log_every=1) | (dict(lora_qv=2, lora_emb=4, lr=1e-2)
                                                      if stage == "lora" else {})
    if stage.startswith("mixed"):
        kw |= dict(mode="mixed", packing="entries" if "whole" in stage else "stream")
        run = lambda out, **extra: bk.train(bk.resolve_config("tiny", **kw), d, out, quiet=True,
                                            **extra)
    else:
        bk.train(bk.resolve_config("tiny", steps=5), d, base, quiet=True)
        run = lambda out, **extra: bk.finetune(bk.resolve_config("tiny", "finetune", **kw), base, d,
                                               out, quiet=True, **extra)
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    run(full)
    crash_after_checkpoints(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run(cut)
    monkeypatch.undo()
    assert run(cut, resume=True)[1]["resumed_from"] == 14
    assert same_weights(full, cut) and logged_curve(full) == logged_curve(cut)


def test_reused_pretraining_continues_a_killed_run_from_its_checkpoint(tmp_path, monkeypatch):
    """A table row whose pretraining was killed continues it (reuse=True), ending where an
    uninterrupted run ends; a finished one is kept as it is."""
    overrides = dict(people=40, steps=12, ckpt_every=5, log_every=1)
    pretrain = lambda work: bk.pretrained_run("single", "qa_finetune", "tiny", 0, "cpu", str(work),
                                              quiet=True, train_overrides=overrides, reuse=True)
    full = pretrain(tmp_path / "full")[2]
    crash_after_checkpoints(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tmp_path / "cut")
    monkeypatch.undo()
    _, _, cut, _, info = pretrain(tmp_path / "cut")
    assert info["resumed_from"] == 10
    assert same_weights(full, cut) and logged_curve(full) == logged_curve(cut)
    stamp = os.path.getmtime(os.path.join(cut, "model.pt"))
    kept = pretrain(tmp_path / "cut")[4]
    assert kept["steps"] == 12 and "resumed_from" not in kept  # loaded, not trained again
    assert os.path.getmtime(os.path.join(cut, "model.pt")) == stamp


def test_resume_refuses_a_run_it_cannot_continue(tmp_path):
    d, r, other = str(tmp_path / "d"), str(tmp_path / "r"), str(tmp_path / "other")
    bk.generate(d, 40, "single", quiet=True)
    bk.generate(other, 40, "single", seed=1, quiet=True)
    with pytest.raises(bk.UserError, match="no checkpoint"):
        bk.train(bk.resolve_config("tiny", steps=4), d, r, quiet=True, resume=True)
    bk.train(bk.resolve_config("tiny", steps=4), d, r, quiet=True)
    with pytest.raises(bk.UserError, match="lr"):
        bk.train(bk.resolve_config("tiny", steps=4, lr=1e-2), d, r, quiet=True, resume=True)
    with pytest.raises(bk.UserError, match="not the data"):
        bk.train(bk.resolve_config("tiny", steps=4), other, r, quiet=True, resume=True)
    before = open(os.path.join(r, "model.pt"), "rb").read()
    # already complete: nothing to do, nothing rewritten
    assert bk.train(bk.resolve_config("tiny", steps=4, device="cpu"), d, r, quiet=True,
                    resume=True)[1]["resumed_from"] == 4
    assert open(os.path.join(r, "model.pt"), "rb").read() == before


def test_checkpoint_holds_everything_resume_needs(tmp_path):
    d, r = str(tmp_path / "d"), str(tmp_path / "r")
    bk.generate(d, 40, "single", quiet=True)
    bk.train(bk.resolve_config("tiny", steps=6, ckpt_every=4), d, r, quiet=True)
    ckpt = torch.load(os.path.join(r, "model.pt"), weights_only=False)
    assert {"model", "optimizer", "config", "vocab", "step", "total_steps", "rng", "streams",
            "data", "torch", "bioknow"} <= set(ckpt)
    assert (ckpt["step"] == ckpt["total_steps"] == 6
            and set(ckpt["rng"]) == {"python", "numpy", "torch", "cuda"})


def test_atomic_write_leaves_old_file_or_new_never_half(tmp_path):
    path = str(tmp_path / "f.json")
    bk.write_json(path, {"good": 1})

    def dies_half_way(tmp):
        with open(tmp, "w") as f:
            f.write('{"trunc')
        raise KeyboardInterrupt  # a kill in the middle of the write
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, dies_half_way)
    assert json.loads(open(path).read()) == {"good": 1} and os.listdir(tmp_path) == ["f.json"]


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    d, r = str(tmp_path / "d"), str(tmp_path / "r")
    bk.generate(d, 40, "single", quiet=True)
    real_lr = bk.lr_at
    monkeypatch.setattr(bk, "lr_at", lambda step, total, cfg: (float("nan") if step >= 5
                                                               else real_lr(step, total, cfg)))
    with pytest.raises(bk.UserError,
                       match=r"non-finite loss at step \d+.*last good checkpoint \(step 4\)"):
        bk.train(bk.resolve_config("tiny", steps=20, ckpt_every=2), d, r, quiet=True)
    model, _, ckpt = bk.load_checkpoint(r)
    assert ckpt["step"] == 4 and all(p.isfinite().all() for p in model.parameters())


def test_same_seed_same_curve_and_config_records_everything(tmp_path):
    d = str(tmp_path / "d")
    bk.generate(d, 40, "single", quiet=True)
    runs = [str(tmp_path / n) for n in ("a", "b")]
    for r in runs:
        bk.train(bk.resolve_config("tiny", steps=12, log_every=1), d, r, quiet=True)
    assert logged_curve(runs[0]) == logged_curve(runs[1]) and same_weights(*runs)
    cfg = json.loads(open(os.path.join(runs[0], "config.json")).read())
    assert ({f.name for f in dataclasses.fields(bk.Config)} | {"torch", "bioknow", "commit"}
            <= set(cfg))
    assert cfg["preset"] == "tiny" and cfg["seed"] == 0 and cfg["torch"] == torch.__version__


def test_checkpoint_refuses_other_vocabulary(tmp_path):
    d, r = str(tmp_path / "d"), str(tmp_path / "r")
    bk.generate(d, 40, "single", quiet=True)
    bk.train(bk.resolve_config("tiny", steps=2), d, r, quiet=True)
    vocab = json.loads(open(f"{d}/vocab.json").read())
    with open(f"{d}/vocab.json", "w") as f:
        json.dump(vocab[:-1], f)
    with pytest.raises(bk.UserError, match="vocabulary"):
        bk.load_checkpoint(r, vocab=bk.load_data(d)["vocab"])


@pytest.mark.slow
def test_torchrun_two_processes_follow_the_single_process_curve(tmp_path):
    """DDP with gloo on 2 CPU processes, each on half of every batch, tracks one process on the
    whole batch."""
    d = str(tmp_path / "d")
    bk.generate(d, 60, "single", quiet=True)
    args = ["--data", d, "--preset", "tiny", "--steps", "12", "--log-every", "1", "--device", "cpu",
            "--quiet"]
    cli("train", "--out", str(tmp_path / "one"), *args)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", os.path.join(HERE, "bioknow.py"), "train",
                           "--out", str(tmp_path / "two"), *args],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = logged_curve(str(tmp_path / "one")), logged_curve(str(tmp_path / "two"))
    assert [s for s, _, _ in one] == [s for s, _, _ in two]
    assert np.allclose([l for _, l, _ in one], [l for _, l, _ in two], atol=2e-3), (one, two)
    assert json.loads(open(tmp_path / "two" / "config.json").read())["processes"] == 2


# --- command line

def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    """The in-process cases below cover every kind of bad input; this one checks the real
    exit path."""
    proc = cli("train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"),
               check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A data directory and a 4-step tiny run in it, shared by the bad-input cases."""
    root = tmp_path_factory.mktemp("tiny")
    bk.generate(str(root / "d"), 40, "single", quiet=True)
    bk.train(bk.resolve_config("tiny", steps=4), str(root / "d"), str(root / "run"), quiet=True)
    return root


def broken_data(root, name, damage):
    d = root / name
    if not d.exists():
        shutil.copytree(root / "d", d)
        damage(d)
    return str(d)


def other_people(root):
    """A data directory like the run's but of other people (another seed)."""
    d = root / "other"
    if not d.exists():
        bk.generate(str(d), 40, "single", seed=1, quiet=True)
    return str(d)


def corrupt_checkpoint(root):
    r = root / "corrupt"
    if not r.exists():
        shutil.copytree(root / "run", r)
        data = (r / "model.pt").read_bytes()
        (r / "model.pt").write_bytes(data[:len(data) // 2])
    return str(r)


BAD_INPUTS = {  # what a user may type -> words the one-line error must contain
    "aug multi0": (lambda root: ["generate", "--out", "OUT", "--aug", "multi0"], "multiM"),
    "aug permute-1": (lambda root: ["generate", "--out", "OUT", "--aug", "single+permute-1"],
                      "unexpected"),
    "aug single+multi5": (lambda root: ["generate", "--out", "OUT", "--aug", "single+multi5"],
                          "unexpected"),
    "aug unknown": (lambda root: ["generate", "--out", "OUT", "--aug", "double"], "bad --aug"),
    "people 0": (lambda root: ["generate", "--out", "OUT", "--people", "0"], "positive"),
    "people negative": (lambda root: ["generate", "--out", "OUT", "--people", "-3"], "positive"),
    "people too many": (lambda root: ["generate", "--out", "OUT", "--people", "10000000000"],
                        "unique full names"),
    "missing data dir": (lambda root: ["train", "--data", str(root / "nowhere"), "--out", "OUT"],
                         "does not exist"),
    "empty data dir": (lambda root: [
        "train", "--data", broken_data(root, "empty", lambda d: shutil.rmtree(d) or d.mkdir()),
        "--out", "OUT"], "is empty"),
    "data lacks a file": (lambda root: [
        "train", "--data", broken_data(root, "noqa", lambda d: (d / "qa.jsonl").unlink()),
        "--out", "OUT"], "lacks qa.jsonl"),
    "corrupt line": (lambda root: [
        "train", "--data", broken_data(root, "cut", lambda d: (d / "bios.jsonl").write_text(
            (d / "bios.jsonl").read_text()[:-20])), "--out", "OUT"], "corrupt line"),
    "corrupt meta": (lambda root: [
        "train", "--data", broken_data(root, "meta", lambda d: (d / "meta.json").write_text("{")),
        "--out", "OUT"], "corrupt JSON"),
    "other vocabulary": (lambda root: [
        "finetune", "--run", str(root / "run"), "--out", "OUT", "--data", broken_data(
            root, "vocab", lambda d: (d / "vocab.json").write_text(json.dumps(bk.VOCAB[:-1])))],
        "another vocabulary"),
    "other model shape": (lambda root: ["finetune", "--run", str(root / "run"), "--data",
                                        str(root / "d"), "--out", "OUT", "--n-embd", "64"],
                          "another model shape"),
    "negative LoRA rank": (lambda root: ["finetune", "--run", str(root / "run"), "--data",
                                         str(root / "d"), "--out", "OUT", "--lora-qv", "-8"],
                           "LoRA ranks"),
    "corrupt checkpoint": (lambda root: ["finetune", "--run", corrupt_checkpoint(root),
                                         "--data", str(root / "d"), "--out", "OUT"],
                           "corrupt checkpoint"),
    "existing run": (lambda root: ["train", "--data", str(root / "d"), "--out", str(root / "run"),
                                   "--preset", "tiny"], "--resume"),
    "resume without checkpoint": (lambda root: ["train", "--data", str(root / "d"), "--out", "OUT",
                                                "--resume"], "no checkpoint"),
    "unknown preset": (lambda root: ["train", "--data", str(root / "d"), "--out", "OUT",
                                     "--preset", "nope"], "unknown preset"),
    "unavailable device": (lambda root: [
        "train", "--data", str(root / "d"), "--out", "OUT",
        "--device", "cuda" if not torch.cuda.is_available() else "tpu"], "--device"),
    "negative celebrities": (lambda root: ["generate", "--out", "OUT", "--celebrities", "-5"],
                             "--celebrities"),
    "bad celebrity aug": (lambda root: ["generate", "--out", "OUT", "--celebrities", "5",
                                        "--celebrity-aug", "multi"], "bad --celebrity-aug"),
    "bios-from without data": (lambda root: ["generate", "--out", "OUT",
                                             "--bios-from", str(root / "d" / "bios.jsonl")],
                               "--data"),
    "unknown objective": (lambda root: ["train", "--data", str(root / "d"), "--out", "OUT",
                                        "--objective", "xlm"], "--objective"),
    "unknown packing": (lambda root: ["train", "--data", str(root / "d"), "--out", "OUT",
                                      "--packing", "bins"], "--packing"),
    "mixed with no biography windows": (lambda root: ["train", "--data", str(root / "d"),
                                                      "--out", "OUT", "--mode", "mixed",
                                                      "--qa-ratio", "1"], "--qa-ratio"),
    "holdout for bio pretraining": (lambda root: ["train", "--data", str(root / "d"),
                                                  "--out", "OUT", "--holdout", "0.2"], "--holdout"),
    "mixed holdout out of range": (lambda root: ["train", "--data", str(root / "d"),
                                                 "--out", "OUT", "--mode", "mixed",
                                                 "--holdout", "1.5"], "--holdout"),
    "probe holdout out of range": (lambda root: ["probe", "--run", str(root / "run"),
                                                 "--data", str(root / "d"), "--holdout", "1.5",
                                                 "--out", "OUT"], "--holdout"),
    "finetune on other people": (lambda root: ["finetune", "--run", str(root / "run"), "--data",
                                               other_people(root), "--out", "OUT"], "other people"),
    "eval on other people": (lambda root: ["eval", "--run", str(root / "run"), "--data",
                                           other_people(root), "--out", "OUT"], "other people"),
    "probe on other people": (lambda root: ["probe", "--run", str(root / "run"), "--data",
                                            other_people(root), "--out", "OUT"], "other people"),
    "lookup on other people": (lambda root: [
        "probe", "--kind", "lookup", "--run", str(root / "run"), "--data", other_people(root),
        "--out", "OUT"], "other people"),
    "probe layer past the last block": (lambda root: ["probe", "--run", str(root / "run"),
                                                      "--data", str(root / "d"), "--layer", "2",
                                                      "--out", "OUT"], "--layer"),
}


def test_other_biographies_of_the_same_people_are_accepted(tiny_run, tmp_path, capsys):
    """The refusal is about people, not texts: the same people under another augmentation (the
    --bios-from case too) are scored, and the error names both the run and the data directory."""
    same_people = tmp_path / "multi2"
    bk.generate(str(same_people), 40, "multi2+permute", quiet=True)
    code, out, _ = run_main(capsys, "eval", "--run", str(tiny_run / "run"),
                            "--data", str(same_people))
    assert code == 0 and "qa_test" in json.loads(out)
    code, _, err = run_main(capsys, "eval", "--run", str(tiny_run / "run"),
                            "--data", other_people(tiny_run))
    assert code == 2 and str(tiny_run / "run") in err and str(tiny_run / "other") in err


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_one_line_exit_2_writes_nothing(tiny_run, tmp_path, capsys, case):
    make_args, words = BAD_INPUTS[case]
    out = tmp_path / "out"
    args = [str(out) if a == "OUT" else a for a in make_args(tiny_run)]
    before = sorted((p, p.stat().st_mtime_ns) for p in tiny_run.rglob("*"))
    code, _, err = run_main(capsys, *args)
    assert code == 2 and err.startswith("bioknow: error: ") and err.count("\n") == 1, err
    assert words in err and not out.exists()
    # nothing else written either
    assert sorted((p, p.stat().st_mtime_ns) for p in tiny_run.rglob("*")) == before


def test_bioknow_py_imports_only_the_standard_library_torch_numpy_and_tqdm():
    """bioknow.py stands alone: no import of the project's other files, no sys.modules trick, and
    every line at most 100 characters."""
    source = open(os.path.join(HERE, "bioknow.py")).read()
    tree = ast.parse(source)
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    third_party = roots - set(sys.stdlib_module_names)
    assert third_party == {"torch", "numpy", "tqdm"}, third_party
    assert "sys.modules" not in source
    long_lines = [n for n, line in enumerate(source.split("\n"), 1) if len(line) > 100]
    assert not long_lines, long_lines


def test_bioknow_py_copied_alone_runs_every_step(tmp_path):
    """Copied alone into an empty folder, generate, train, finetune, eval and probe run on the tiny
    preset, each a real process started there."""
    shutil.copy(os.path.join(HERE, "bioknow.py"), tmp_path / "bioknow.py")

    def run(*args):
        proc = subprocess.run([sys.executable, "bioknow.py", *args, "--quiet"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, PYTHONPATH=""))
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    run("generate", "--out", "d", "--preset", "tiny")
    run("train", "--data", "d", "--out", "r", "--preset", "tiny", "--steps", "20")
    run("finetune", "--run", "r", "--data", "d", "--out", "q", "--preset", "tiny", "--steps", "5")
    scores = json.loads(run("eval", "--run", "q", "--data", "d"))
    probes = json.loads(run("probe", "--run", "r", "--data", "d", "--steps", "2",
                            "--head-steps", "2"))
    assert set(scores["qa_test"]) == set(bk.ATTRIBUTES) | {"mean"}
    assert {"p_probe", "q_probe"} <= set(probes)
    assert sorted(os.listdir(tmp_path)) == ["bioknow.py", "d", "q", "r"]


def test_every_subcommand_has_help(capsys):
    for sub in ("generate", "check", "train", "finetune", "eval", "probe", "bench", "reproduce"):
        code, out, _ = run_main(capsys, sub, "--help")
        assert code == 0 and "usage:" in out


def test_tiny_end_to_end_cli(tmp_path):
    """generate -> check -> train -> finetune -> eval, each a real process: pretraining lowers the
    loss, and QA finetuning on P_train questions teaches the model to answer them (none right before
    it) while the P_test questions, never trained on, are answered worse; eval's JSON carries every
    number the README names."""
    d, r, q = str(tmp_path / "d"), str(tmp_path / "r"), str(tmp_path / "q")
    cli("generate", "--out", d, "--people", "100", "--aug", "multi2+permute")
    assert "ok (100 people, 200 biography entries, 600 questions" in cli("check", d).stdout
    cli("train", "--data", d, "--out", r, "--preset", "tiny", "--passes", "20")
    cli("finetune", "--run", r, "--data", d, "--out", q, "--preset", "tiny", "--epochs", "60")
    before = json.loads(cli("eval", "--run", r, "--data", d).stdout)
    cli("eval", "--run", q, "--data", d, "--out", str(tmp_path / "e.json"))
    after = json.loads((tmp_path / "e.json").read_text())
    log = read_jsonl(os.path.join(r, "log.jsonl"))
    assert log[-1]["loss"] < 0.6 * log[0]["loss"], (log[0], log[-1])
    assert before["qa_train"]["mean"] == 0 and after["qa_train"]["mean"] >= 5
    assert after["qa_train"]["mean"] > after["qa_test"]["mean"]
    assert {"bio_memorization", "bio_memorization_min", "qa_train", "qa_test"} <= set(after)
    assert set(after["qa_test"]) == set(bk.ATTRIBUTES) | {"mean"}
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["n_layer"] == 1 and cfg["seed"] == 0 and cfg["passes"] == 20
