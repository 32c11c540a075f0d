"""Tests for bioknow.py, in the file's order: config, data, tokenizer, model, pretraining and mixed training, QA
finetuning, evaluation, probing, GBERT, the headline gap at toy scale, bench, plumbing, runs that survive, the command
line; then experiments/tables.py. `pytest -m "not slow"` skips the multi-minute tests (about a minute in all)."""
import dataclasses
import glob
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
from support.plumbing import bios_from, check_data, read_checkpoint, read_json, read_jsonl, rewrite_jsonl, write_atomic
from experiments import tables

HERE = os.path.dirname(os.path.abspath(__file__))


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, os.path.join(HERE, "bioknow.py"), *args, "--quiet"],
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"bioknow {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def run_main(capsys, *args):
    """bioknow's command line in this process (no interpreter start-up): (exit status, stdout, stderr)."""
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
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.batch_size, cfg.steps) == (12, 12, 768, 512, 96,
                                                                                                   80_000)
    assert (cfg.lr, cfg.weight_decay, cfg.adam_eps, cfg.warmup_steps, cfg.rotary_frac) == (1e-3, 0.1, 1e-6, 1000, 0.25)
    ft = bk.resolve_config("paper", "finetune")
    assert (ft.lr, ft.weight_decay, ft.batch_size, ft.steps, ft.warmup_steps) == (3e-4, 0.01, 48, 50_000, 0)
    assert bk.resolve_config("paper", n_layer=2, lr=5e-4).n_layer == 2
    assert bk.resolve_config("paper", passes=3.0).steps == 0  # an explicit --passes beats the preset's steps
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
        assert p["birth_city"] in bk.CITIES and p["university"] in bk.UNIVERSITIES and p["major"] in bk.MAJORS
        assert p["company_city"] == hq[p["company"]] and p["pronoun"] in ("he", "she", "they")
    assert Counter(p["split"] for p in people) == {"train": 1500, "test": 1500}


def test_pool_and_domain_sizes():
    sizes = [len(set(x)) for x in (bk.FIRST_NAMES, bk.MIDDLE_NAMES, bk.LAST_NAMES, bk.CITIES, bk.UNIVERSITIES,
                                   bk.MAJORS, bk.COMPANIES)]
    assert sizes == [400, 400, 1000, 200, 300, 100, 263]
    assert all(len(t) >= 40 for t in bk.TEMPLATES.values())
    top = Counter(bk.company_cities().values()).most_common(1)[0][1]
    assert round(100 * top / 263, 1) == 13.7  # the majority-guess baseline of paper §5


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


@pytest.mark.parametrize("spec", ["multi0", "permute-1", "single+multi5", "single+permute", "multi5+permute2",
                                  "single+fullname+fullname", "double", "single+permute0", ""])
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
        assert (a / name).read_bytes() == (b / name).read_bytes()  # byte-identical, meta.json included
    data = bk.load_data(str(a))
    assert len(data["bios"]) == 120 and len(data["qa"]) == 360
    by_id = {p["id"]: p for p in data["people"]}
    for r in data["qa"]:
        assert r["answer"] == by_id[r["id"]][r["attribute"]] and r["split"] == by_id[r["id"]]["split"]
        assert by_id[r["id"]]["name"] in r["question"]
    for b_ in data["bios"]:
        assert all(by_id[b_["id"]][k] in b_["text"] for k in bk.ATTRIBUTES)


def test_celebrities_are_p_train_with_their_own_augmentation(tmp_path, capsys):
    d = tmp_path / "d"
    meta = bk.generate(str(d), 20, "single+permute1", quiet=True, celebrities=10)
    assert (meta["people"], meta["n_train"], meta["n_test"], meta["celebrity_entries_per_person"]) == (30, 10, 20, 5)
    data = bk.load_data(str(d))
    entries = Counter(b["id"] for b in data["bios"])
    for p in data["people"]:
        assert p["split"] == ("train" if p["celebrity"] else "test") and entries[p["id"]] == (5 if p["celebrity"]
                                                                                                 else 1)
    assert sum(p["celebrity"] for p in data["people"]) == 10
    code, out, _ = run_main(capsys, "check", str(d))
    assert code == 0 and "10 celebrities, aug multi5+permute" in out
    edit_jsonl(d / "people.jsonl", 0, lambda p: dict(p, celebrity=False))  # a celebrity's five entries now too many
    code, out, _ = run_main(capsys, "check", str(d))
    assert code == 1 and "entries meta.json says" in out and "9 celebrities, meta.json says 10" in out


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
    texts = [b["text"] for b in data["bios"]] + [bk.qa_text(r["question"], r["answer"]) for r in data["qa"]]
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
    flat = np.concatenate([w[0]] + [r[1:] for r in w[1:]])  # windows overlap by one token (stride T)
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
        assert w[0] == 0 and w[len(real):] == [-1] * (len(w) - len(real))  # entries first, padding after
        cut = [i for i, t in enumerate(real) if t == 0] + [len(real)]
        pieces += [tuple(real[a:b]) for a, b in zip(cut, cut[1:])]
    assert sorted(pieces) == sorted(tuple(e) for e in entries)  # every entry once, none cut
    whole = bk.PackedStream(entries, 12, (0, 0), packing="entries").windows(40)  # runs into the second pass
    parts = [stream.windows(n) for n in (7, 0, 11)]
    resumed = bk.PackedStream(entries, 12, (0, 0), pos=stream.pos, packing="entries")
    assert torch.equal(torch.cat(parts + [resumed.windows(22)]), whole)


def test_mixed_training_gives_the_biographies_the_bio_rows_passes(tmp_path):
    bk.generate(str(tmp_path / "d"), 100, "single", quiet=True)
    data = bk.load_data(str(tmp_path / "d"))
    bio = bk.pretraining_steps(bk.resolve_config("tiny"), data, 6000)
    for qa_ratio in (0.5, 0.8):
        mixed = bk.resolve_config("tiny", mode="mixed", qa_ratio=qa_ratio)
        assert abs(bk.pretraining_steps(mixed, data, 6000) * (1 - qa_ratio) - bio) <= 1  # the same bio windows
        assert bk.pretraining_steps(dataclasses.replace(mixed, budget="all"), data, 6000) == bio


def test_mixed_training_holds_out_p_train_qa_to_choose_a_recipe(tmp_path, capsys, monkeypatch):
    """--holdout with mixed training: the held-out P_train people's QA never enters the stream; eval scores it apart."""
    bk.generate(str(tmp_path / "d"), 40, "single", quiet=True)
    data, encoded = bk.load_data(str(tmp_path / "d")), []
    monkeypatch.setattr(bk, "encode_entries", lambda texts, tok: encoded.append(list(texts)) or [tok.encode(t)
                                                                                            for t in texts])
    run = str(tmp_path / "run")
    assert run_main(capsys, "train", "--preset", "tiny", "--data", str(tmp_path / "d"), "--out", run, "--mode",
                    "mixed", "--holdout", "0.5", "--steps", "3")[0] == 0
    held = set(torch.load(os.path.join(run, "model.pt"), weights_only=False)["holdout_ids"])
    assert len(held) == 10 and all(p["split"] == "train" for p in data["people"] if p["id"] in held)
    qa = {bk.qa_text(r["question"], r["answer"]): r["id"] for r in data["qa"] if r["split"] == "train"}
    assert sorted(encoded[1]) == sorted(t for t, i in qa.items() if i not in held)  # [0]: the biographies
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
    bk.generate(str(tmp_path / "celebrities"), 50, "single", quiet=True, celebrities=50)  # 1 and 5 entries a person
    data = bk.load_data(str(tmp_path / "celebrities"))
    tokens = sum(len(e) for e in bk.encode_entries([b["text"] for b in data["bios"]], bk.Tokenizer(data["vocab"])))
    assert abs(bk.pretraining_steps(cfg, data, tokens) - steps["single"]) <= max(1, 0.05 * steps["single"])


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
    model, _ = bk.finetune(cfg, str(tiny_run / "run"), str(tiny_run / "d"), str(tmp_path / "ft"), quiet=True)
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".A." in k or ".B." in k for k in trainable)  # the adapters, nothing else
    merged, _, _ = bk.load_checkpoint(str(tmp_path / "ft"))  # a plain GPT: the adapters folded in
    C = cfg.n_embd
    for name, before in base.state_dict().items():
        after = merged.state_dict()[name]
        if name.endswith("attn.qkv.weight"):  # query and value blocks change, the key block does not
            assert torch.equal(before[C:2 * C], after[C:2 * C]) and not torch.equal(before[:C], after[:C])
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
                [ids], [positions] = bk.p_probe_inputs(dict(people=[p], bios=[dict(id=p["id"], text=entry)]), tok)
                firsts = {tok.encode(p[a])[0] for a in bk.ATTRIBUTES}
                assert len(positions) == 6 and positions == sorted(positions)
                assert all(ids[i + 1] in firsts for i in positions)
                if spec == "single":  # fixed order: position k precedes attribute k
                    assert [ids[i + 1] for i in positions] == [tok.encode(p[a])[0] for a in bk.ATTRIBUTES]


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
        # per position: norm (gamma, beta) and a linear classifier (weight, bias); nothing else trains
        assert {n.split(".")[-1] for n, _ in heads.named_parameters()} == {"gamma", "beta", "weight", "bias"}
    seqs, positions = bk.p_probe_inputs(data, tok)
    result = bk.fit_probe(model, seqs, positions, labels, range(20), range(20, 40), 2, "layer", 3, 8, "cpu",
                          head_steps=5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert len(result["first_token"]["company"]) == 6 and set(result["whole"]) == set(bk.ATTRIBUTES[1:])


def test_probe_command_writes_both_probes(tiny_run, tmp_path, capsys):
    out = tmp_path / "probe.json"
    code, _, _ = run_main(capsys, "probe", "--run", str(tiny_run / "run"), "--data", str(tiny_run / "d"), "--steps",
                          "2", "--head-steps", "5", "--out", str(out), "--device", "cpu")
    result = json.loads(out.read_text())
    assert code == 0 and set(result) == {"p_probe", "q_probe"}
    p = result["p_probe"]  # Figure 5's grids: attribute x read position
    assert [len(p["first_token"]), len(p["whole"])] == [6, 5] and all(len(r) == 6 for r in p["first_token"])
    assert p["attributes"]["whole"] == list(bk.ATTRIBUTES[1:])
    assert set(result["q_probe"]["whole"]) == set(bk.ATTRIBUTES[1:])
    assert set(result["q_probe"]["baseline"]) == {"first_token", "whole"}


class Planted(torch.nn.Module):
    """A stand-in model whose hidden state at every position is a code of its person's labels (plus noise)."""

    def __init__(self, codes):
        super().__init__()
        self.wte, self.codes = torch.nn.Embedding(len(codes) + 1, codes.shape[1]), codes

    def hidden(self, idx, wte=None):
        h = self.codes[idx[:, 1] - 1] + 0.1 * torch.randn(len(idx), self.codes.shape[1])
        return h[:, None].expand(-1, idx.shape[1], -1) + 0 * F.embedding(idx, wte)[..., :1]


@pytest.mark.parametrize("shuffle", [False, True])
def test_probe_reads_a_planted_label_and_not_a_shuffled_one(shuffle):
    n, g = 400, torch.Generator().manual_seed(0)
    labels = {(k, a): torch.randint(0, 4, (n,), generator=g) for k, attrs in bk.PROBE_TARGETS.items() for a in attrs}
    codes = torch.cat([F.one_hot(y, 4).float() for y in labels.values()], dim=1)
    if shuffle:
        labels = {k: y[torch.randperm(n, generator=g)] for k, y in labels.items()}
    result = bk.fit_probe(Planted(codes), [[0, i + 1, 0] for i in range(n)], [[1]] * n, labels, range(300),
                          range(300, n), 2, "layer", 20, 50, "cpu", lr=1e-2, head_steps=600)
    for kind, attrs in bk.PROBE_TARGETS.items():
        for a in attrs:
            acc, base = result[kind][a][0], result["baseline"][kind][a]
            assert (acc <= base + 15) if shuffle else (acc >= 95), (kind, a, acc, base)


def test_candidate_read_out_scores_a_value_no_probe_training_person_has():
    """The paper's linear classifier has never been shown the classes no probe-training person has; the candidate
    read-out, scored against the classes' own embeddings, names them. Accuracy on the rest is reported apart."""
    n, k, g = 400, 10, torch.Generator().manual_seed(0)
    y = torch.randint(0, k, (n,), generator=g)  # one class a person, the same for every attribute
    labels = {(t, a): y for t, attrs in bk.PROBE_TARGETS.items() for a in attrs}
    codes = torch.cat([F.one_hot(y, k).float() for _ in labels], dim=1)
    train = [i for i in range(300) if int(y[i]) < k - 3]  # nobody of the last three classes trains
    common = (Planted(codes), [[0, i + 1, 0] for i in range(n)], [[1]] * n, labels, train, range(300, n), 2, "layer",
              5, 50, "cpu")
    linear = bk.fit_probe(*common, lr=1e-2, head_steps=300)
    blocks = {key: torch.eye(codes.shape[1])[k * j:k * j + k] for j, key in enumerate(labels)}  # each class's code
    scored = bk.fit_probe(*common, lr=1e-2, head_steps=300, candidates=blocks)
    for t, attrs in bk.PROBE_TARGETS.items():
        for a in attrs:
            unseen = linear["unseen_share"][t][a]
            assert 15 < unseen < 45 and linear["seen"][t][a][0] >= 95
            assert scored[t][a][0] >= 95 and linear[t][a][0] <= scored[t][a][0] - 5  # the unseen are where it fails


# --- GBERT (Appendix H)

def test_gbert_attends_both_ways():
    model, _ = tiny_model(objective="mlm")  # the same code path with the causal switch off (paper §8)
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
    masked, kept = (inputs[chosen] == tok.mask).float().mean(), (inputs[chosen] == x[chosen]).float().mean()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and torch.equal(inputs[~chosen], x[~chosen])
    swapped = inputs[chosen & (inputs != tok.mask) & (inputs != x)]
    assert ((swapped != tok.eos) & (swapped != tok.mask)).all()
    assert torch.equal(bk.mlm_inputs(x, tok, [0, 4, 7])[0], inputs)  # a function of (seed, step): resumable


def test_gbert_qa_needs_every_mask_filled(people):
    tok = bk.Tokenizer(bk.VOCAB)
    rows = [r for p in people[:6] for r in bk.qa_pairs(p)]

    class Oracle(torch.nn.Module):  # fills each question's masks with its answer, the birth year wrong
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
                    logits[i, len(prompt) + len(answer) - 1, tok.stoi["1999" if "1999" not in row["answer"]
                                                                   else "2000"]] = 2
            return logits, None

    exact, first = bk.qa_accuracies(Oracle(), tok, rows, "cpu")
    assert exact["birth_date"] == 0 and first["birth_date"] == 100
    assert all(exact[a] == 100 and first[a] == 100 for a in bk.ATTRIBUTES[1:])


# --- reproduce: the headline gap must survive every change (toy scale, a few minutes on 2 cores)

@pytest.mark.slow
def test_headline_gap_single_low_augmented_high(tmp_path):
    """bioS single is memorised yet not extractable; multi5+permute+fullname with the same compute is (paper §5)."""
    rows = {s: bk.reproduce_row(s, "qa_finetune", "toy", 0, "cpu", str(tmp_path), quiet=True)
            for s in ("single", "multi5+permute+fullname")}
    single, augmented = rows["single"], rows["multi5+permute+fullname"]
    assert single["bio_memorization_min"] >= 90, single["bio_memorization_per_attribute"]
    assert single["qa_test"]["mean"] <= 20, single["qa_test"]
    assert augmented["qa_test"]["mean"] >= 50, augmented["qa_test"]
    assert augmented["qa_test"]["mean"] - single["qa_test"]["mean"] >= 35


def test_rows_run_side_by_side_give_the_rows_run_one_by_one(tmp_path):
    """--jobs runs rows in processes of their own; each row's numbers are what the same row gives run alone."""
    small = dict(people=40, passes=1)
    tasks = [dict(setting="single", method=m, train_overrides=small) for m in ("mixed", "qa_finetune")]
    alone = {t["method"]: row for t, row in bk.run_rows(tasks, "tiny", 0, "cpu", str(tmp_path / "a"), quiet=True)}
    both = {t["method"]: row for t, row in bk.run_rows(tasks, "tiny", 0, "cpu", str(tmp_path / "b"), jobs=2,
                                                           quiet=True)}
    for method in alone:
        assert {k: v for k, v in both[method].items() if k not in ("minutes", "hardware")} == {
            k: v for k, v in alone[method].items() if k not in ("minutes", "hardware")}


# --- bench

def test_hardware_names_the_processor():
    # a seed repeats a run bitwise on one CPU model only, so a result line must say which one ran it
    name = bk.hardware_name("cpu")
    assert name.startswith("cpu (") and name.index(")") < name.index(",") and name.endswith(torch.__version__)


def test_bench_reports_a_timed_step():
    result = bk.bench(bk.resolve_config("tiny", device="cpu"), steps=2, warmup=1)
    assert {"tokens_per_sec", "ms_per_step", "params", "device", "dtype", "compiled", "mfu"} <= set(result)
    assert result["tokens_per_sec"] > 0 and result["mfu"] is None and result["dtype"] == "float32"
    assert result["params"] == sum(p.numel() for p in bk.GPT(bk.resolve_config("tiny"), len(bk.VOCAB)).parameters())


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
    if check_data(bk.load_data(str(d)), full=False):  # the cheap part, which `train` runs: it refuses
        code, _, err = run_main(capsys, "train", "--data", str(d), "--out", str(tmp_path / "r"), "--preset", "tiny")
        assert code == 2 and expect in err and not (tmp_path / "r").exists()


def test_bios_from_keeps_texts_with_all_six_values_and_probes_them(tmp_path, capsys):
    src = tmp_path / "src"
    bk.generate(str(src), 20, "single", quiet=True)
    people = bk.load_data(str(src))["people"]
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps(r) + "\n" for p in people for r in [
        dict(id=p["id"], text=f"Born {p['birth_date']} in {p['birth_city']}, {p['name']} read {p['major']} at "
                              f"{p['university']} and now serves {p['company']} in {p['company_city']}, happily."),
        dict(id=p["id"], text=f"{p['name']} enjoys {p['major']}.")]))  # misses four values: left out
    code, out, err = run_main(capsys, "generate", "--bios-from", str(mine), "--data", str(src), "--out",
                              str(tmp_path / "byo"))
    assert code == 0 and "20 of 40 texts left out" in err
    data = bk.load_data(str(tmp_path / "byo"))
    assert len(data["bios"]) == 20 and data["vocab"][:len(bk.VOCAB)] == bk.VOCAB and "happily" in data["vocab"]
    assert len(read_jsonl(str(tmp_path / "byo" / "rejected.jsonl"))) == 20
    assert check_data(data) == []
    seqs, positions = bk.p_probe_inputs(data, bk.Tokenizer(data["vocab"]))  # read positions found by value match
    assert all(len(set(p)) == 6 for p in positions)
    cfg = bk.resolve_config("tiny", steps=2)
    bk.train(cfg, str(tmp_path / "byo"), str(tmp_path / "run"), quiet=True)
    result = bk.probe(str(tmp_path / "run"), str(tmp_path / "byo"), ("p",), steps=1, head_steps=2, quiet=True)
    assert len(result["p_probe"]["first_token"]) == 6
    mine.write_text(json.dumps(dict(id=0, text=people[0]["name"])) + "\n")  # nobody has a text with all six
    with pytest.raises(bk.UserError, match="20 people"):
        bios_from(str(src), str(mine), str(tmp_path / "byo2"))
    assert not (tmp_path / "byo2").exists()


# --- runs that survive: checkpoints, resume, atomic writes, divergence

RESUMABLE = ("--preset", "tiny", "--steps", "300", "--ckpt-every", "20", "--block-size", "32", "--batch-size", "4")


def same_weights(run_a, run_b):
    a, b = (torch.load(os.path.join(r, "model.pt"), weights_only=False) for r in (run_a, run_b))
    return a["step"] == b["step"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def logged_curve(run):
    return [(r["step"], r["loss"], r["lr"]) for r in read_jsonl(os.path.join(run, "log.jsonl"))]


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    """A CPU run killed with SIGKILL after a checkpoint and resumed ends with the same weights, curve and eval
    numbers as an uninterrupted run: bitwise, since the data order, the RNGs and the optimiser come back exactly."""
    d, full, cut = (str(tmp_path / n) for n in ("d", "full", "cut"))
    bk.generate(d, 60, "multi2+permute", quiet=True)
    cli("train", "--data", d, "--out", full, *RESUMABLE)
    cmd = [sys.executable, os.path.join(HERE, "bioknow.py"), "train", "--data", d, "--out", cut, *RESUMABLE, "--quiet"]
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
    """Make the n-th checkpoint write the last thing the process does (as if killed right after it)."""
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
    kw = dict(steps=30, ckpt_every=7, log_every=1) | (dict(lora_qv=2, lora_emb=4, lr=1e-2) if stage == "lora" else {})
    if stage.startswith("mixed"):
        kw |= dict(mode="mixed", packing="entries" if "whole" in stage else "stream")
        run = lambda out, **extra: bk.train(bk.resolve_config("tiny", **kw), d, out, quiet=True, **extra)
    else:
        bk.train(bk.resolve_config("tiny", steps=5), d, base, quiet=True)
        run = lambda out, **extra: bk.finetune(bk.resolve_config("tiny", "finetune", **kw), base, d, out, quiet=True,
                                               **extra)
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    run(full)
    crash_after_checkpoints(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run(cut)
    monkeypatch.undo()
    assert run(cut, resume=True)[1]["resumed_from"] == 14
    assert same_weights(full, cut) and logged_curve(full) == logged_curve(cut)


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
    assert bk.train(bk.resolve_config("tiny", steps=4, device="cpu"), d, r, quiet=True, resume=True)[1][
        "resumed_from"] == 4  # already complete: nothing to do, nothing rewritten
    assert open(os.path.join(r, "model.pt"), "rb").read() == before


def test_checkpoint_holds_everything_resume_needs(tmp_path):
    d, r = str(tmp_path / "d"), str(tmp_path / "r")
    bk.generate(d, 40, "single", quiet=True)
    bk.train(bk.resolve_config("tiny", steps=6, ckpt_every=4), d, r, quiet=True)
    ckpt = torch.load(os.path.join(r, "model.pt"), weights_only=False)
    assert {"model", "optimizer", "config", "vocab", "step", "total_steps", "rng", "streams", "data", "torch",
            "bioknow"} <= set(ckpt)
    assert ckpt["step"] == ckpt["total_steps"] == 6 and set(ckpt["rng"]) == {"python", "numpy", "torch", "cuda"}


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
    monkeypatch.setattr(bk, "lr_at", lambda step, total, cfg: float("nan") if step >= 5 else real_lr(step, total, cfg))
    with pytest.raises(bk.UserError, match=r"non-finite loss at step \d+.*last good checkpoint \(step 4\)"):
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
    assert {f.name for f in dataclasses.fields(bk.Config)} | {"torch", "bioknow", "commit"} <= set(cfg)
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
    """DDP with gloo on 2 CPU processes, each on half of every batch, tracks one process on the whole batch."""
    d = str(tmp_path / "d")
    bk.generate(d, 60, "single", quiet=True)
    args = ["--data", d, "--preset", "tiny", "--steps", "12", "--log-every", "1", "--device", "cpu", "--quiet"]
    cli("train", "--out", str(tmp_path / "one"), *args)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           os.path.join(HERE, "bioknow.py"), "train", "--out", str(tmp_path / "two"), *args],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = logged_curve(str(tmp_path / "one")), logged_curve(str(tmp_path / "two"))
    assert [s for s, _, _ in one] == [s for s, _, _ in two]
    assert np.allclose([l for _, l, _ in one], [l for _, l, _ in two], atol=2e-3), (one, two)
    assert json.loads(open(tmp_path / "two" / "config.json").read())["processes"] == 2


# --- command line

def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    """The in-process cases below cover every kind of bad input; this one checks the real exit path."""
    proc = cli("train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r"), check=False)
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


def corrupt_checkpoint(root):
    r = root / "corrupt"
    if not r.exists():
        shutil.copytree(root / "run", r)
        data = (r / "model.pt").read_bytes()
        (r / "model.pt").write_bytes(data[:len(data) // 2])
    return str(r)


BAD_INPUTS = {  # what a user may type -> words the one-line error must contain
    "aug multi0": (lambda root: ["generate", "--out", "OUT", "--aug", "multi0"], "multiM"),
    "aug permute-1": (lambda root: ["generate", "--out", "OUT", "--aug", "single+permute-1"], "unexpected"),
    "aug single+multi5": (lambda root: ["generate", "--out", "OUT", "--aug", "single+multi5"], "unexpected"),
    "aug unknown": (lambda root: ["generate", "--out", "OUT", "--aug", "double"], "bad --aug"),
    "people 0": (lambda root: ["generate", "--out", "OUT", "--people", "0"], "positive"),
    "people negative": (lambda root: ["generate", "--out", "OUT", "--people", "-3"], "positive"),
    "people too many": (lambda root: ["generate", "--out", "OUT", "--people", "10000000000"], "unique full names"),
    "missing data dir": (lambda root: ["train", "--data", str(root / "nowhere"), "--out", "OUT"], "does not exist"),
    "empty data dir": (lambda root: ["train", "--data", broken_data(root, "empty", lambda d: shutil.rmtree(d) or
                                                                    d.mkdir()), "--out", "OUT"], "is empty"),
    "data lacks a file": (lambda root: ["train", "--data", broken_data(root, "noqa", lambda d: (d / "qa.jsonl")
                                                                       .unlink()), "--out", "OUT"], "lacks qa.jsonl"),
    "corrupt line": (lambda root: ["train", "--data", broken_data(root, "cut", lambda d: (d / "bios.jsonl").write_text(
        (d / "bios.jsonl").read_text()[:-20])), "--out", "OUT"], "corrupt line"),
    "corrupt meta": (lambda root: ["train", "--data", broken_data(root, "meta", lambda d: (d / "meta.json").write_text(
        "{")), "--out", "OUT"], "corrupt JSON"),
    "other vocabulary": (lambda root: ["finetune", "--run", str(root / "run"), "--out", "OUT", "--data", broken_data(
        root, "vocab", lambda d: (d / "vocab.json").write_text(json.dumps(bk.VOCAB[:-1])))], "another vocabulary"),
    "other model shape": (lambda root: ["finetune", "--run", str(root / "run"), "--data", str(root / "d"), "--out",
                                        "OUT", "--n-embd", "64"], "another model shape"),
    "negative LoRA rank": (lambda root: ["finetune", "--run", str(root / "run"), "--data", str(root / "d"), "--out",
                                         "OUT", "--lora-qv", "-8"], "LoRA ranks"),
    "corrupt checkpoint": (lambda root: ["finetune", "--run", corrupt_checkpoint(root), "--data", str(root / "d"),
                                         "--out", "OUT"], "corrupt checkpoint"),
    "existing run": (lambda root: ["train", "--data", str(root / "d"), "--out", str(root / "run"), "--preset", "tiny"],
                     "--resume"),
    "resume without checkpoint": (lambda root: ["train", "--data", str(root / "d"), "--out", "OUT", "--resume"],
                                  "no checkpoint"),
    "unknown preset": (lambda root: ["train", "--data", str(root / "d"), "--out", "OUT", "--preset", "nope"],
                       "unknown preset"),
    "unavailable device": (lambda root: ["train", "--data", str(root / "d"), "--out", "OUT", "--device",
                                         "cuda" if not torch.cuda.is_available() else "tpu"], "--device"),
    "negative celebrities": (lambda root: ["generate", "--out", "OUT", "--celebrities", "-5"], "--celebrities"),
    "bad celebrity aug": (lambda root: ["generate", "--out", "OUT", "--celebrities", "5", "--celebrity-aug", "multi"],
                          "bad --celebrity-aug"),
    "bios-from without data": (lambda root: ["generate", "--out", "OUT", "--bios-from", str(root / "d" / "bios.jsonl")],
                               "--data"),
    "unknown objective": (lambda root: ["train", "--data", str(root / "d"), "--out", "OUT", "--objective", "xlm"],
                          "--objective"),
    "unknown packing": (lambda root: ["train", "--data", str(root / "d"), "--out", "OUT", "--packing", "bins"],
                        "--packing"),
    "unknown budget rule": (lambda root: ["train", "--data", str(root / "d"), "--out", "OUT", "--mode", "mixed",
                                          "--budget", "steps"], "--budget"),
    "mixed with no biography windows": (lambda root: ["train", "--data", str(root / "d"), "--out", "OUT", "--mode",
                                                      "mixed", "--qa-ratio", "1"], "--qa-ratio"),
    "holdout for bio pretraining": (lambda root: ["train", "--data", str(root / "d"), "--out", "OUT", "--holdout",
                                                  "0.2"], "--holdout"),
    "mixed holdout out of range": (lambda root: ["train", "--data", str(root / "d"), "--out", "OUT", "--mode",
                                                 "mixed", "--holdout", "1.5"], "--holdout"),
    "probe holdout out of range": (lambda root: ["probe", "--run", str(root / "run"), "--data", str(root / "d"),
                                                 "--holdout", "1.5", "--out", "OUT"], "--holdout"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_one_line_exit_2_writes_nothing(tiny_run, tmp_path, capsys, case):
    make_args, words = BAD_INPUTS[case]
    out = tmp_path / "out"
    args = [str(out) if a == "OUT" else a for a in make_args(tiny_run)]
    before = sorted((p, p.stat().st_mtime_ns) for p in tiny_run.rglob("*"))
    code, _, err = run_main(capsys, *args)
    assert code == 2 and err.startswith("bioknow: error: ") and err.count("\n") == 1, err
    assert words in err and not out.exists()
    assert sorted((p, p.stat().st_mtime_ns) for p in tiny_run.rglob("*")) == before  # nothing else written either


def test_readme_tour_gives_every_section_its_lines():
    """The README's "Read these lines" table points at each `# ---` section of bioknow.py where it now stands."""
    lines = open(os.path.join(HERE, "bioknow.py")).read().split("\n")
    starts = [i + 1 for i, line in enumerate(lines) if line.startswith("# --- ")]
    ends = [s - 2 for s in starts[1:]] + [len(lines) - 1]
    readme = open(os.path.join(HERE, "README.md")).read()
    missing = [f"bioknow.py#L{a}-L{b}" for a, b in zip(starts, ends) if f"bioknow.py#L{a}-L{b})" not in readme]
    assert not missing and readme.count("](bioknow.py#L") == len(starts), missing


def test_every_subcommand_has_help(capsys):
    for sub in ("generate", "check", "train", "finetune", "eval", "probe", "bench", "reproduce"):
        code, out, _ = run_main(capsys, sub, "--help")
        assert code == 0 and "usage:" in out


def test_tiny_end_to_end_cli(tmp_path):
    """generate -> check -> train -> finetune -> eval, each a real process: pretraining lowers the loss, and QA
    finetuning on P_train questions teaches the model to answer them (none right before it) while the P_test
    questions, never trained on, are answered worse; eval's JSON carries every number the README names."""
    d, r, q = str(tmp_path / "d"), str(tmp_path / "r"), str(tmp_path / "q")
    cli("generate", "--out", d, "--people", "100", "--aug", "multi2+permute")
    assert "ok (100 people, 200 biography entries, 600 questions" in cli("check", d).stdout
    cli("train", "--data", d, "--out", r, "--preset", "tiny", "--passes", "20")
    cli("finetune", "--run", r, "--data", d, "--out", q, "--preset", "tiny", "--passes", "60")
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
