"""How fast is T3? Three ratios on a world model (not a test; CPU-sized by default).

(a) T3 unlearning wall time (features + head training, as `unlearn()` runs it, with a cold
    feature cache) / one plain forward pass of the base (logits included) over the same
    forget + retain items, in the same length-sorted batches. Target <= 1.5.
(b) the same head training done the naive way (the base's forward recomputed for every batch
    of every epoch) / ours. The naive run is timed for --naive-epochs epochs and extrapolated
    linearly to the full --epochs (each epoch does the same work). Target >= 20.
(c) guided generation tokens/s / base generation tokens/s, greedy, same prompts, same number
    of new tokens (EOS ignored). Target >= 0.9.

    python benchmarks/bench_t3.py                    # default world, forget10, full model
    python benchmarks/bench_t3.py --world tiny       # a quick run
    python benchmarks/bench_t3.py --base random      # a random Llama of the world's model size
    python benchmarks/bench_t3.py --rouge            # instead: what T3 says (greedy ROUGE-L recall)

--rouge prints greedy ROUGE-L recall on the forget set and on retain_perturbed (TOFU's retain
evaluation items) for the full model, the retain model, T3 at --temperature and the same head
at T = 1 (plain classifier guidance), so the effect of tempering is visible.

Timings on a shared machine are noisy: each measurement is repeated (--repeat) with the two
sides interleaved, and the median is used. Figures depend on the machine; the ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from t3unlearn.t3.config import Guidance
from t3unlearn.t3.options import add_guidance_options


def _base(args):
    from t3unlearn.world import ensure_world

    world = ensure_world(args.world)
    if args.base == "world":
        from t3unlearn.lm import load_model, load_tokenizer
        from t3unlearn.world import ensure_models

        path = ensure_models(world, ("full",))["full"]
        return world, load_model(str(path), device="cpu"), load_tokenizer(str(path)), f"world-{args.world} full ({path})"
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from t3unlearn.world.train import TRAIN_PRESETS, TrainSettings, train_tokenizer

    s = TrainSettings(**TRAIN_PRESETS.get(args.world, {}))
    tok = train_tokenizer(world, s.vocab_size)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=s.d_model, intermediate_size=s.ffn, num_hidden_layers=s.n_layers,
                      num_attention_heads=s.n_heads, num_key_value_heads=s.n_kv_heads, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    return world, LlamaForCausalLM(cfg).eval(), tok, f"random Llama of world-{args.world} size"


def _median(xs):
    return statistics.median(xs)


def plain_forward(model, examples, pad_id, batch_size):
    """One forward pass of the base (with logits) over all examples, length-sorted batches."""
    import torch

    from t3unlearn.data import batched, collate

    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    with torch.inference_mode():
        for idx in batched(order, batch_size):
            b = collate([examples[i] for i in idx], pad_id)
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.sum()


def rouge_table(args) -> int:
    import torch

    from t3unlearn.data import load_qa
    from t3unlearn.eval.metrics import rouge_scores
    from t3unlearn.lm import CausalLM, load_model, load_tokenizer
    from t3unlearn.t3 import T3ForCausalLM, unlearn
    from t3unlearn.t3.train import format_report
    from t3unlearn.world import ensure_models, ensure_world

    if args.threads:
        torch.set_num_threads(args.threads)
    world = ensure_world(args.world)
    retain_cfg = args.retain or f"retain{100 - int(args.forget.removeprefix('forget'))}"
    paths = ensure_models(world, ("full", retain_cfg))
    forget = load_qa(f"{world}:{args.forget}")
    retain = load_qa(f"{world}:{retain_cfg}")
    retain_eval = load_qa(f"{world}:retain_perturbed")
    tok = load_tokenizer(str(paths["full"]))
    full = load_model(str(paths["full"]), device="cpu")
    t0 = time.perf_counter()
    t3, report = unlearn(full, tok, forget, retain, temperature=args.temperature, scale=args.scale, tempering=args.tempering,
                         hidden_size=args.hidden_size, lr=args.lr, weight_decay=args.weight_decay, epochs=args.epochs,
                         batch_size=args.batch_size, seed=args.seed)
    print(f"unlearn: {time.perf_counter() - t0:.1f}s (features {'cached' if report['features_cached'] else 'computed'})")
    print(format_report(report))
    head_dir = Path(args.save_head or tempfile.mkdtemp(prefix="t3head-"))
    t3.save_pretrained(head_dir)
    t1 = T3ForCausalLM.from_base(full, head_dir, temperature=1.0)  # the same head, T = 1
    models = [("full", full), (retain_cfg, load_model(str(paths[retain_cfg]), device="cpu")),
              (f"T3 (T={args.temperature:g}, s={args.scale:g}, {args.tempering})", t3), (f"same head, T=1 (s={args.scale:g})", t1)]
    for pair in filter(None, (args.also or "").split(";")):
        T, sc = (float(v) for v in pair.split(","))
        models.append((f"same head, T={T:g}, s={sc:g}", T3ForCausalLM.from_base(full, head_dir, temperature=T, scale=sc)))
    print(f"\ngreedy ROUGE-L recall, {args.forget} ({len(forget)} items) and retain_perturbed ({len(retain_eval)} items), "
          f"max {args.max_new_tokens} new tokens")
    print(f"{'model':<28}{'forget':>9}{'retain':>9}")
    rows = {}
    for name, model in models:
        lm = CausalLM(model, tok, name=name)
        vals = []
        for ds in (forget, retain_eval):
            gens = lm.generate(ds["question"], max_new_tokens=args.max_new_tokens, batch_size=32)
            vals.append(sum(rouge_scores(a, g)["rougeL_recall"] for a, g in zip(ds["answer"], gens)) / len(gens))
        rows[name] = vals
        print(f"{name:<28}{vals[0]:>9.3f}{vals[1]:>9.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rougeL_recall": rows, "classifier": report}, indent=2) + "\n")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="default", help="world preset: default or tiny")
    ap.add_argument("--base", choices=("world", "random"), default="world", help="the world's full model, or a random one of its size")
    ap.add_argument("--forget", default="forget10")
    ap.add_argument("--retain", default=None, help="default: the complement of --forget (retain90 for forget10)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--naive-epochs", type=int, default=2, help="epochs of the naive training actually run, then extrapolated")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gen-prompts", type=int, default=16)
    ap.add_argument("--gen-batch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--rouge", action="store_true", help="print the ROUGE table instead of the timings")
    r = ap.add_argument_group("T3 settings for --rouge")
    add_guidance_options(r, knobs=("temperature", "scale", "tempering"))
    r.add_argument("--hidden-size", type=int, default=50)
    r.add_argument("--lr", type=float, default=1e-2)
    r.add_argument("--weight-decay", type=float, default=1e-2)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--max-new-tokens-rouge", dest="max_new_tokens_rouge", type=int, default=200)
    r.add_argument("--save-head", default=None, help="also save the head here")
    r.add_argument("--also", default=None, help='more rows with the same head at other settings: "T,s;T,s"')
    args = ap.parse_args(argv)
    g = Guidance().replace(**Guidance.changes_from(args))  # the options not given at Guidance's defaults
    args.temperature, args.scale, args.tempering = g.temperature, g.scale, g.tempering
    if args.rouge:
        args.max_new_tokens = args.max_new_tokens_rouge
        return rouge_table(args)

    import torch

    from t3unlearn.data import QAFormatter, load_qa
    from t3unlearn.t3 import unlearn
    from t3unlearn.t3.train import RecomputeProvider, TrainConfig, train_head

    if args.threads:
        torch.set_num_threads(args.threads)
    retain_cfg = args.retain or f"retain{100 - int(args.forget.removeprefix('forget'))}"
    world, model, tok, label = _base(args)
    forget = load_qa(f"{world}:{args.forget}")
    retain = load_qa(f"{world}:{retain_cfg}")
    fmt = QAFormatter(tok)
    def encode():
        return fmt.encode_batch(forget["question"][:], forget["answer"][:]) + fmt.encode_batch(retain["question"][:], retain["answer"][:])

    examples = encode()
    n_tok = sum(len(e.input_ids) for e in examples)
    print(f"base: {label}; {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; "
          f"torch threads {torch.get_num_threads()}")
    print(f"data: {args.forget} {len(forget)} items + {retain_cfg} {len(retain)} items, {n_tok} tokens")
    out: dict = {"base": label, "forget": args.forget, "retain": retain_cfg, "n_forget": len(forget), "n_retain": len(retain),
                 "epochs": args.epochs}

    # (a) ours (cold cache in a fresh home each time) vs one plain forward pass
    t_plain, t_ours, reports = [], [], []
    plain_forward(model, examples[:64], fmt.pad_id, 32)  # warm-up
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        plain_forward(model, encode(), fmt.pad_id, 32)  # tokenization included, as in unlearn()
        t_plain.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as home:
            os.environ["T3UNLEARN_HOME"] = home
            t0 = time.perf_counter()
            _, report = unlearn(model, tok, forget, retain, epochs=args.epochs)
            t_ours.append(time.perf_counter() - t0)
            reports.append(report)
    plain, ours = _median(t_plain), _median(t_ours)
    ratio_a = _median([o / p for o, p in zip(t_ours, t_plain)])  # paired: each run against its neighbour
    feat_s = _median([r["features_s"] for r in reports])
    train_s = _median([r["train_s"] for r in reports])
    print(f"\n(a) plain forward over all items: {plain:.2f}s; T3 unlearn (cold cache): {ours:.2f}s "
          f"[features {feat_s:.2f}s + head training {train_s:.2f}s ({args.epochs} epochs) + the rest {ours - feat_s - train_s:.2f}s]")
    print(f"    ratio T3 / plain forward = {ratio_a:.2f} (median of {len(t_ours)} paired runs)   (target <= 1.5)")
    out.update(plain_forward_s=plain, t3_unlearn_s=ours, features_s=feat_s, train_s=train_s, ratio_a=ratio_a)

    # (b) naive: base forward recomputed at every step
    cfg = TrainConfig(epochs=args.naive_epochs, warmup_epochs=0)
    provider = RecomputeProvider(model, examples, len(forget), fmt.pad_id)
    d, vocab = model.config.hidden_size, model.get_output_embeddings().weight.shape[0]
    t_naive = []
    for _ in range(max(1, args.repeat - 1)):
        t0 = time.perf_counter()
        train_head(provider, len(forget), len(retain), d, vocab, cfg)
        t_naive.append((time.perf_counter() - t0) / args.naive_epochs * args.epochs)
    naive = _median(t_naive)
    print(f"\n(b) naive training (base forward every step): {naive:.1f}s for {args.epochs} epochs "
          f"(timed {args.naive_epochs} epochs, extrapolated)")
    print(f"    ratio naive / T3 = {naive / ours:.1f}   (target >= 20); naive / head training alone = {naive / train_s:.0f}")
    out.update(naive_s=naive, naive_epochs_timed=args.naive_epochs, ratio_b=naive / ours, ratio_b_train_only=naive / train_s)

    # (c) generation throughput
    with tempfile.TemporaryDirectory() as home:
        os.environ["T3UNLEARN_HOME"] = home
        t3, _ = unlearn(model, tok, forget, retain, epochs=2)
    from t3unlearn.data import QAExample, batched, collate

    prompts = [fmt.prompt_ids(q) for q in forget["question"][: args.gen_prompts]]
    batches = []
    for idx in batched(list(range(len(prompts))), args.gen_batch):
        b = collate([QAExample(prompts[i], prompts[i], len(prompts[i])) for i in idx], fmt.pad_id, padding_side="left")
        batches.append(b)
    kw = dict(max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=fmt.pad_id)

    def gen(m):
        n = 0
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                g = m.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"], **kw)
                n += (g.shape[1] - b["input_ids"].shape[1]) * g.shape[0]
        return n / (time.perf_counter() - t0)

    gen(model), gen(t3)  # warm-up
    base_tps, t3_tps = [], []
    for _ in range(max(args.repeat, 5)):
        base_tps.append(gen(model))
        t3_tps.append(gen(t3))
    b_tps, g_tps = _median(base_tps), _median(t3_tps)
    ratio_c = _median([g / b for g, b in zip(t3_tps, base_tps)])
    print(f"\n(c) greedy generation, {len(prompts)} prompts in batches of {args.gen_batch}, {args.max_new_tokens} new tokens: "
          f"base {b_tps:.0f} tok/s, T3 {g_tps:.0f} tok/s")
    print(f"    ratio T3 / base = {ratio_c:.3f} (median of {len(t3_tps)} paired runs)   (target >= 0.9)")
    out.update(base_tok_s=b_tps, t3_tok_s=g_tps, ratio_c=ratio_c)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
