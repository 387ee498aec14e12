"""T3 on large bases: TOFU-sized forget10 unlearning with randomly initialised Llama-3.2-1B and Llama-3.1-8B.

No download: the two architectures are built from their published config values (below) with random weights,
in bf16 (the head stays fp32), directly on the GPU. The data are synthetic token sequences of TOFU's size and
shape under Llama-3's chat template: 400 forget items and 3600 retain items, prompts of 50-90 tokens (system
prompt, question, template), answers of 20-100 tokens. Random weights cost what trained ones cost, so the
timings are those of the real models (what the head learns is meaningless here, and not measured).

For each model it prints, with the GPU synchronized around every timer:

- features: one streamed forward pass of the decoder over forget and retain (written to a feature cache in
  shards, as `t3unlearn unlearn` does), wall time and tokens/s;
- head training: 100 epochs on the cached features, wall time;
- end-to-end unlearning (features + head training; model loading excluded) -- target for 8B: < 30 s;
- one more deletion request (40 items): a plain forward pass over its items, and the incremental update
  (its features + the head retrained on the union, or fine-tuned on it);
- peak GPU memory.

    python benchmarks/bench_gpu.py                          # 1B and 8B on cuda:0
    python benchmarks/bench_gpu.py --models 8b --no-cache   # features kept on the GPU, nothing written
    python benchmarks/bench_gpu.py --tiny                   # the same code path on the CPU with a tiny config

Without a CUDA device (and without --tiny) it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
CONFIGS = {
    # meta-llama/Llama-3.2-1B config.json
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
               rope_scaling={**LLAMA3_ROPE, "factor": 32.0}, tie_word_embeddings=True, bos_token_id=128000,
               eos_token_id=128001, hidden_act="silu"),
    # meta-llama/Llama-3.1-8B config.json
    "8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
               rope_scaling={**LLAMA3_ROPE, "factor": 8.0}, tie_word_embeddings=False, bos_token_id=128000,
               eos_token_id=128001, hidden_act="silu"),
    # the CPU smoke test
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=500000.0,
                 rope_scaling={**LLAMA3_ROPE, "factor": 8.0, "original_max_position_embeddings": 256},
                 tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                 hidden_act="silu"),
}
TOFU = dict(forget=400, retain=3600, request=40, prompt=(50, 90), answer=(20, 100))
SMOKE = dict(forget=40, retain=120, request=8, prompt=(8, 16), answer=(4, 12))


def synthetic_items(n: int, vocab: int, prompt: tuple[int, int], answer: tuple[int, int], seed: int):
    """``n`` QAExample-shaped items of random token ids (ids 10.. avoid the special tokens)."""
    import random

    from t3unlearn.data import IGNORE_INDEX, QAExample

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p, a = rng.randint(*prompt), rng.randint(*answer)
        ids = [rng.randrange(10, vocab) for _ in range(p + a)]
        out.append(QAExample(ids, [IGNORE_INDEX] * p + ids[p:], p))
    return out


def build(name: str, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**CONFIGS[name])
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, dtype=dtype)
    return model.eval().requires_grad_(False)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_forward(model, examples, pad_id, device, batch_size=32):
    import torch

    from t3unlearn.data import batched, collate

    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    with torch.inference_mode():
        for idx in batched(order, batch_size):
            b = collate([examples[i] for i in idx], pad_id)
            model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits.float().sum()


def bench(name: str, args, sizes: dict) -> dict:
    import torch

    from t3unlearn.t3.config import TrainConfig
    from t3unlearn.t3.feature_cache import assemble, extract_part
    from t3unlearn.t3.requests import finetune_head
    from t3unlearn.t3.train import CachedProvider, train_head

    device, dtype = args.device, getattr(torch, args.dtype)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = build(name, device, dtype)
    _sync(device)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    vocab = model.config.vocab_size
    forget = synthetic_items(sizes["forget"], vocab, sizes["prompt"], sizes["answer"], 1)
    retain = synthetic_items(sizes["retain"], vocab, sizes["prompt"], sizes["answer"], 2)
    new = synthetic_items(sizes["request"], vocab, sizes["prompt"], sizes["answer"], 3)
    tokens = sum(len(e.input_ids) for e in forget + retain)
    cache = None if args.no_cache else Path(tempfile.mkdtemp(prefix=f"bench-gpu-{name}-", dir=args.cache_dir))
    kw = dict(pad_id=0, cache=cache is not None, cache_dir=cache, model_fp=f"random-llama-{name}-{args.dtype}",
              batch_size=args.batch_size, device=device)
    try:
        _sync(device)
        t0 = time.perf_counter()
        parts = [extract_part(model, forget, **kw), extract_part(model, retain, **kw)]
        fs = assemble(parts[:1], parts[1], device)
        _sync(device)
        features_s = time.perf_counter() - t0
        cfg = TrainConfig(epochs=args.epochs)
        t0 = time.perf_counter()
        head, _ = train_head(CachedProvider(fs), fs.n_forget, fs.n_retain, fs.dim, vocab, cfg, device=device)
        _sync(device)
        train_s = time.perf_counter() - t0
        # one more deletion request
        t0 = time.perf_counter()
        plain_forward(model, new, 0, device, args.batch_size)
        _sync(device)
        forward_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        new_part = extract_part(model, new, **kw)
        fs2 = assemble([parts[0], new_part], parts[1], device)
        _sync(device)
        new_features_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_head(CachedProvider(fs2), fs2.n_forget, fs2.n_retain, fs2.dim, vocab, cfg, device=device)
        _sync(device)
        retrain_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        finetune_head(head, fs2, torch.arange(fs.n_forget, fs2.n_forget), cfg, seed=1, device=device)
        _sync(device)
        finetune_s = time.perf_counter() - t0
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
    out = {
        "model": name, "params_b": n_params / 1e9, "dtype": args.dtype, "build_s": build_s, "features_s": features_s,
        "tokens": tokens, "tokens_per_s": tokens / features_s, "train_s": train_s, "end_to_end_s": features_s + train_s,
        "forward_new_s": forward_s, "update_retrain_s": new_features_s + retrain_s, "update_finetune_s": new_features_s + finetune_s,
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None, "head_params_m": sum(p.numel() for p in head.parameters()) / 1e6,
    }
    del model, fs, fs2, parts
    if cuda:
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="1b,8b", help="comma-separated: 1b, 8b [1b,8b]")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"), help="the base's dtype [bfloat16]")
    p.add_argument("--device", default="cuda", help="[cuda]")
    p.add_argument("--batch-size", type=int, default=32, help="items per forward pass [32]")
    p.add_argument("--epochs", type=int, default=100, help="head training epochs [100]")
    p.add_argument("--no-cache", action="store_true", help="keep the features in memory; write no feature cache")
    p.add_argument("--cache-dir", default=None, help="where the temporary feature cache goes [the system temp dir]")
    p.add_argument("--tiny", "--smoke", dest="smoke", action="store_true",
                   help="run the same code path on the CPU with a tiny Llama config and tiny data (checks the script)")
    args = p.parse_args(argv)

    import torch

    if args.smoke:
        args.device, names, sizes = "cpu", ["tiny"], SMOKE
    else:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            print(f"bench_gpu: no CUDA device here (torch {torch.__version__}, CUDA available: no); run it on a machine "
                  "with a GPU, or add --tiny to run its code path on the CPU with a tiny config.", file=sys.stderr)
            return 2
        names = [n.strip().lower() for n in args.models.split(",") if n.strip()]
        bad = [n for n in names if n not in ("1b", "8b")]
        if bad:
            print(f"bench_gpu: unknown model {bad[0]!r}; choose from 1b, 8b.", file=sys.stderr)
            return 2
        sizes = TOFU
    dev = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "CPU"
    print(f"device: {dev}; torch {torch.__version__}; base {args.dtype}, head float32; forget {sizes['forget']} + retain "
          f"{sizes['retain']} items{' (TOFU forget10-sized)' if sizes is TOFU else ''}, one more request of {sizes['request']} items; "
          f"{'features in memory' if args.no_cache else 'features streamed to a disk cache'}", flush=True)
    rows = [bench(n, args, sizes) for n in names]
    print("\n| model | params | features (s) | tokens/s | head training (s) | end-to-end (s) | +1 request: forward (s) | "
          "update, retrain (s) | update, fine-tune (s) | peak GPU (GB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        gpu = "n/a" if r["peak_gpu_gb"] is None else f"{r['peak_gpu_gb']:.1f}"
        params = f"{r['params_b']:.2f}B" if r["params_b"] >= 0.1 else f"{r['params_b'] * 1e3:.2f}M"
        print(f"| {r['model']} | {params} | {r['features_s']:.2f} | {r['tokens_per_s']:,.0f} | {r['train_s']:.2f} | "
              f"{r['end_to_end_s']:.2f} | {r['forward_new_s']:.2f} | {r['update_retrain_s']:.2f} | {r['update_finetune_s']:.2f} | {gpu} |")
    for r in rows:
        if r["model"] == "8b":
            ok = "meets" if r["end_to_end_s"] < 30 else "misses"
            print(f"8B forget10 end-to-end unlearning {r['end_to_end_s']:.1f}s: {ok} the target < 30 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
