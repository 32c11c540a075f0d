"""
The baseline bioknow's training step is measured against: a plain nanoGPT-style GPT and training
step (learned position embeddings, biases, exact GELU, one fused QKV projection, SDPA attention,
tied embeddings, AdamW), written here from the description of nanoGPT's model.py / train.py, at
the same shapes as a bioknow preset. It lives outside bioknow.py on purpose: it is only a
yardstick.

    python bench/nanogpt.py --preset cpu  # one JSON line: both steps' tokens/s and the ratio
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bioknow as bk  # noqa: E402  (timing helpers and the preset shapes)


class CausalSelfAttention(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.c_attn, self.c_proj, self.n_head = nn.Linear(d, 3 * d), nn.Linear(d, d), n_head

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(d), CausalSelfAttention(d, n_head)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, d):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, d), nn.Embedding(block_size, d)
        self.h = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln_f, self.lm_head = nn.LayerNorm(d), nn.Linear(d, vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer)
                                       if name.endswith("c_proj.weight") else 0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=-1)


def nanogpt_step(cfg, vocab_size, device):
    """A nanoGPT training step at cfg's shape on random tokens, as a function."""
    torch.manual_seed(cfg.seed)
    model = NanoGPT(vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [dict(params=[p for p in params if p.dim() >= 2], weight_decay=cfg.weight_decay),
              dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0)]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95),
                            fused=bk.device_type(device) == "cuda")
    fwd = bk.maybe_compile(model, cfg, device)
    w = torch.randint(vocab_size, (cfg.batch_size, cfg.block_size + 1), device=device)

    def step():
        with bk.autocast(device):
            loss = fwd(w[:, :-1], w[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--preset", default=bk.DEFAULT_PRESET)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--steps", type=int, default=100,
                   help="timed steps of each, alternating (default %(default)s)")
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    cfg = bk.resolve_config(args.preset, device=args.device, compile=args.compile,
                            batch_size=args.batch_size)
    device = bk.pick_device(cfg.device)
    bk.tune_for(device)  # the same process settings for both
    steps = dict(bioknow=bk.bench_step(cfg, len(bk.VOCAB), device)[0],
                 nanogpt=nanogpt_step(cfg, len(bk.VOCAB), device))
    times = {name: [] for name in steps}
    # one step of each in turn: a noisy machine slows both alike
    for i in range(args.warmup + args.steps):
        for name, step in (list(steps.items())[::1 if i % 2 else -1]):  # ABBA order
            times[name].append(bk.seconds_per_call(step, 1, 0, device))
    tokens = cfg.batch_size * cfg.block_size
    rate = {name: tokens / float(np.median(t[args.warmup:])) for name, t in times.items()}
    print(json.dumps(dict(shape=dict({k: getattr(cfg, k) for k in bk.BENCH_SHAPE},
                                     vocab_size=len(bk.VOCAB)),
                          device=bk.hardware_name(device), steps=args.steps,
                          statistic="median step",
                          bioknow_tokens_per_sec=round(rate["bioknow"]),
                          nanogpt_tokens_per_sec=round(rate["nanogpt"]),
                          ratio=round(rate["bioknow"] / rate["nanogpt"], 3))))


if __name__ == "__main__":
    main()
