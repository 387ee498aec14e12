"""What T3 costs as the base grows, beside GradDiff and NPO: a forget10-sized job on random Llama bases (CPU).

The job has TOFU forget10's shape: 400 forget items and 3,600 retain items (calibration: 400 never-seen items and
the forget items' paraphrased and 5 perturbed answers), each item as long as its TOFU counterpart. There is no
32k tokenizer offline, so the text is made of the tokens of a 32,000-token word-level tokenizer
(`transformers.PreTrainedTokenizerFast` over a `tokenizers` WordLevel model) whose tokens are spelled as a
SentencePiece vocabulary's: half start a word ('\u2581' mark), half continue one, so the packaged recipe's base
spelling does its real work; each TOFU question and answer becomes `--tokens-per-word` (1.3) x its word count
random tokens. The bases are random-initialised
`LlamaForCausalLM`s (tied embeddings, vocabulary 32,000): random weights cost what trained ones cost, and what
the methods learn here is not measured.

Each part runs in its own process (`--threads` torch threads, OMP_NUM_THREADS set to match), which reports its
wall seconds, CPU seconds and peak RSS (VmHWM):

  features      the packaged feature extraction (`feature_cache.extract_part`, streamed to a disk cache) over
                forget + retain: one forward pass of the decoder;
  head          the packaged head recipe (`TrainConfig()`: 100 epochs, width 50, ensemble as its default) and the
                support gate, on features of the real shape (random values: the cost does not depend on them);
  calibration   `t3unlearn calibrate`'s default grid with a reference model (as `compare` runs T3): the base's
                and the reference's forward passes, then every setting scored;
  graddiff/npo  the packaged trainer with `compare`'s defaults (10 epochs, batch 16 x 2 accumulation, lr 3e-4);
  selection     what `compare`'s sweep pays per fine-tuned setting to choose one oracle-free (its "quick"
                evaluation, `quick_scores`: teacher-forced forget, retain and calibration answers and the forget
                truth ratios), and once per sweep the reference model's truth ratios.

Two accountings. *One setting each*: T3 with its calibration against one GradDiff (NPO) training at `compare`'s
default setting. *As `compare` runs them*: the first model with its setting chosen oracle-free -- T3 trains one
head and calibrates it; a fine-tuning method trains and quick-evaluates every setting of its sweep in `compare`'s
default config, and scores the reference once. Another head of the same base then costs T3 its training and the
grid (features and the calibration's forward passes are cached); a fine-tuning method, one training.

T3 total = features + head + calibration. A part too slow at a size is timed on a part of the job and scaled
linearly (marked): features, calibration and selection on N of M items (a seeded sample), GradDiff and NPO on n
and 2n of their optimizer steps (seconds per step from the difference, the fixed cost from the rest). A cost
model per part, seconds = a * F + b * V_term, is fitted (least squares) on the sizes run, F the part's operation
count (features: 2 x non-embedding parameters x tokens; head: head width x base width x trained tokens;
calibration: 2 x non-embedding parameters x tokens + 2 x d x V per scored position; GradDiff / NPO: 6 x
(non-embedding parameters + d x V) x trained tokens; selection: 2 x (non-embedding parameters + d x V) x tokens)
and V_term its vocabulary-proportional work that does not grow with the base (head: the optimizer over the V-wide
output layer; calibration: the grid's settings x positions x V; the others: 1, a fixed cost); it is extrapolated
to Llama-3.2-1B and Llama-3.1-8B (vocabulary 128,256), marked "extrapolated".

    python benchmarks/bench_cost.py                                # 1m, 30m, 100m on 1 thread (<= 40 min)
    python benchmarks/bench_cost.py --sizes 1m --out runs/cost1m  # one size
    python benchmarks/bench_cost.py --sizes 1m --parts head,calibration --full   # no scaling at all
    python benchmarks/bench_cost.py --render --out runs/cost   # the tables again from runs/cost/cost.json

Writes OUT/cost.json (every figure) and OUT/cost.md (the table and the extrapolation). Timings on a machine
shared with other jobs are noisy: CPU seconds say what the work costs, wall seconds what it took here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost_model import (BASELINES, COMPARE_TRAIN, PARTS, SIZES, TARGETS, VOCAB, compare_table, crossover, drivers,  # noqa: E402,F401
                        fit, predict, report, shape, sweep_epochs, table, _facts)

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "Question:", "Answer:"]
# what each size times when not --full: fraction of the items for features and calibration (selection: as
# calibration), and (n, 2n) optimizer steps of the baselines
SCALED = {
    "1m": dict(features=1.0, calibration=0.05, steps=(3, 6)),
    "30m": dict(features=0.1, calibration=0.025, steps=(2, 4)),
    "100m": dict(features=0.025, calibration=0.025, steps=(1, 2)),
}
TOFU = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tofu"


# --------------------------------------------------------------------------- data and models


def word(i: int) -> str:
    """Token ``i``'s spelling: letters only, SentencePiece's word-start mark on every even id -- half the vocabulary
    continues a word, as in a real 32k tokenizer, so the base's spelling (the packaged recipe's ``spelling="base"``)
    costs here what it costs there."""
    start, letters = i % 2 == 0, ""
    while True:
        i, r = divmod(i, 26)
        letters += chr(ord("a") + r)
        if not i:
            break
    return ("\u2581" if start else "") + letters


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + [word(i) for i in range(len(SPECIAL), VOCAB)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def _rows(name: str) -> list[dict]:
    path = TOFU / f"{name}.jsonl"
    if not path.is_file():
        sys.exit(f"bench_cost: {path} is missing; the benchmark takes TOFU's item lengths from /work/shared/data/tofu "
                 "(or set the TOFU variable at the top of this file to a copy of TOFU's jsonl files).")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def job(tokens_per_word: float) -> dict[str, list[dict]]:
    """forget / retain / holdout / perturbed items of random words, each as long (in tokens) as its TOFU item."""
    import random

    rng = random.Random(0)

    def words(text: str) -> str:
        n = max(1, round(len(text.split()) * tokens_per_word))
        return " ".join(word(rng.randrange(len(SPECIAL), VOCAB)) for _ in range(n))

    out = {}
    for name, source in (("forget", "forget10"), ("retain", "retain90"), ("holdout", "holdout10")):
        out[name] = [{"question": words(r["question"]), "answer": words(r["answer"])} for r in _rows(source)]
    pert = []
    for r, f in zip(_rows("forget10_perturbed"), out["forget"]):
        pert.append({"question": f["question"], "answer": f["answer"], "paraphrased_answer": words(r["paraphrased_answer"]),
                     "perturbed_answer": [words(p) for p in r["perturbed_answer"]]})
    out["perturbed"] = pert
    return out


def llama(size: str, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = SIZES[size]
    cfg = LlamaConfig(vocab_size=VOCAB, num_key_value_heads=s["num_attention_heads"], max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, **s)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def sample(items: list, fraction: float, seed: int) -> list:
    import random

    n = max(1, round(len(items) * fraction))
    return items if n >= len(items) else [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), n))]


def _tokens(examples) -> int:
    return sum(len(e.input_ids) for e in examples)


def _answer_tokens(examples) -> int:
    return sum(sum(1 for x in e.labels[1:] if x != -100) for e in examples)


# --------------------------------------------------------------------------- the parts (each in its own process)


def part_features(size: str, fraction: float, data: dict, fmt) -> dict:
    from t3unlearn.t3.feature_cache import assemble, extract_part, model_fingerprint

    full = fmt.encode_batch(*zip(*[(r["question"], r["answer"]) for r in data["forget"] + data["retain"]]))
    forget, retain = sample(data["forget"], fraction, 1), sample(data["retain"], fraction, 2)
    ex = [fmt.encode_batch([r["question"] for r in rows], [r["answer"] for r in rows]) for rows in (forget, retain)]
    model = llama(size)
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as cache:
        t0, c0 = time.perf_counter(), time.process_time()
        fp = model_fingerprint(model)
        parts = [extract_part(model, e, pad_id=fmt.pad_id, cache=True, cache_dir=cache, model_fp=fp) for e in ex]
        assemble(parts[:1], parts[1])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    timed = _tokens(ex[0] + ex[1])
    return dict(wall_s=wall, cpu_s=cpu, timed=f"{len(forget) + len(retain)} of {len(full)} items", scale=_tokens(full) / timed,
                tokens=_tokens(full))


def part_head(size: str, data: dict, fmt) -> dict:
    import torch

    from t3unlearn.t3.config import TrainConfig
    from t3unlearn.t3.features import FeatureSet
    from t3unlearn.t3.train import CachedProvider, train_head

    ex = fmt.encode_batch(*zip(*[(r["question"], r["answer"]) for r in data["forget"] + data["retain"]]))
    targets, seq = [], []
    for i, e in enumerate(ex):
        t = [x for x in e.labels[1:] if x != -100]
        targets += t
        seq += [i] * len(t)
    d, n_f = SIZES[size]["hidden_size"], len(data["forget"])
    gen = torch.Generator().manual_seed(0)
    fs = FeatureSet(torch.randn(len(targets), d, generator=gen), torch.tensor(targets), torch.tensor(seq),
                    torch.cat([torch.zeros(n_f), torch.ones(len(ex) - n_f)]), n_f, len(ex) - n_f)
    cfg = TrainConfig()
    t0, c0 = time.perf_counter(), time.process_time()
    head, _ = train_head(CachedProvider(fs), fs.n_forget, fs.n_retain, d, VOCAB, cfg)
    head.fit_support(fs.feats)  # as unlearn() does, inside its training time
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    forget_tokens = int((fs.seq < n_f).sum())
    return dict(wall_s=wall, cpu_s=cpu, timed="the whole job", scale=1.0, epochs=cfg.epochs, ensemble=cfg.ensemble,
                width=cfg.width, steps=cfg.epochs * -(-n_f // cfg.batch_size) * cfg.ensemble,
                trained_tokens=cfg.epochs * cfg.ensemble * 2 * forget_tokens)  # each forget item with one retain partner


def part_calibration(size: str, fraction: float, data: dict, fmt) -> dict:
    import torch

    from t3unlearn.t3.calibrate import RETAIN_ITEMS, calibrate, default_grid
    from t3unlearn.t3.head import GuidanceHead
    from t3unlearn.t3.model import T3Config, T3ForCausalLM

    def n_tokens(fr: float, answers_only: bool) -> int:
        count = _answer_tokens if answers_only else _tokens
        f, h = sample(data["forget"], fr, 1), sample(data["holdout"], fr, 3)
        p = sample(data["perturbed"], fr, 1)
        r = sample(data["retain"], RETAIN_ITEMS * fr / len(data["retain"]), 4)
        enc = lambda rows, key="answer": fmt.encode_batch([x["question"] for x in rows], [x[key] for x in rows])  # noqa: E731
        para = enc(p, "paraphrased_answer")
        pert = fmt.encode_batch([x["question"] for x in p for _ in x["perturbed_answer"]], [a for x in p for a in x["perturbed_answer"]])
        # the base reads every set; the reference reads the paraphrased and perturbed answers again
        return count(enc(f)) + count(enc(h)) + count(enc(r)) + 2 * count(para) + 2 * count(pert) if not answers_only else \
            count(enc(f)) + count(enc(h)) + count(enc(r)) + count(para) + count(pert)

    n = max(1, round(len(data["forget"]) * fraction))
    forget, holdout = sample(data["forget"], fraction, 1), sample(data["holdout"], fraction, 3)
    perturbed = sample(data["perturbed"], fraction, 1)
    model, reference = llama(size, 0), llama(size, 1)
    d = SIZES[size]["hidden_size"]
    grid, took = default_grid(), []
    with tempfile.TemporaryDirectory(prefix="bench-cost-states-") as cache:
        for _ in range(2):  # the first run makes the forward passes, the second reads them back: another head pays
            torch.manual_seed(0)  # that grid alone (the same head here, so that the grid's work is the same)
            t3 = T3ForCausalLM(T3Config(), model, GuidanceHead(d, 50, VOCAB).fit_support(torch.randn(4096, d))).eval()
            t0, c0 = time.perf_counter(), time.process_time()
            calibrate(t3, fmt.tokenizer, forget, holdout, data["retain"], retain_items=max(1, round(RETAIN_ITEMS * fraction)),
                      reference=reference, perturbed=perturbed, settings=grid, apply=False, cache_dir=cache)
            took.append((time.perf_counter() - t0, time.process_time() - c0))
    full_tokens, timed_tokens = n_tokens(1.0, False), n_tokens(fraction, False)
    return dict(wall_s=took[0][0], cpu_s=took[0][1], again_wall_s=took[1][0], again_cpu_s=took[1][1],
                timed=f"{n} of {len(data['forget'])} items per set", scale=full_tokens / timed_tokens,
                again_scale=n_tokens(1.0, True) / n_tokens(fraction, True), settings=len(grid), forward_tokens=full_tokens,
                positions=n_tokens(1.0, True))


def part_selection(size: str, fraction: float, data: dict, fmt) -> dict:
    """One fine-tuned model's quick evaluation (what `compare`'s sweep runs per setting) and the reference model's
    truth ratios (once per sweep), on the seeded sample ``fraction`` of the sets, as :func:`part_calibration`."""
    from t3unlearn.eval.runner import truth_ratios
    from t3unlearn.experiments.compare.units import quick_scores
    from t3unlearn.lm import CausalLM
    from t3unlearn.t3.calibrate import RETAIN_ITEMS

    def sets(fr: float) -> tuple[dict, dict]:
        forget, holdout = sample(data["forget"], fr, 1), sample(data["holdout"], fr, 3)
        # compare's quick evaluation reads the evaluation's retain set: 400 items on TOFU (retain_perturbed)
        retain = sample(data["retain"], RETAIN_ITEMS * fr / len(data["retain"]), 4)
        cols = lambda rows: {"question": [r["question"] for r in rows], "answer": [r["answer"] for r in rows]}  # noqa: E731
        return {"forget_qa": cols(forget), "retain": cols(retain), "forget": sample(data["perturbed"], fr, 1)}, cols(holdout)

    def n_tokens(fr: float) -> tuple[int, int]:
        d, cal = sets(fr)
        rows = d["forget"]
        tr = _tokens(fmt.encode_batch([r["question"] for r in rows for _ in range(1 + len(r["perturbed_answer"]))],
                                      [a for r in rows for a in [r["paraphrased_answer"], *r["perturbed_answer"]]]))
        return sum(_tokens(fmt.encode_batch(c["question"], c["answer"])) for c in (d["forget_qa"], d["retain"], cal)) + tr, tr

    d, cal = sets(fraction)
    model, reference = (CausalLM(llama(size, seed), fmt.tokenizer, template="plain") for seed in (0, 1))
    t0, c0 = time.perf_counter(), time.process_time()
    ref_tr = truth_ratios(reference, d["forget"], batch_size=32)
    ref_wall, ref_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    quick_scores(model, d, 32, calibration=cal, reference_truth_ratios=ref_tr)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    (full_tokens, full_ref), (timed_tokens, timed_ref) = n_tokens(1.0), n_tokens(fraction)
    return dict(wall_s=wall, cpu_s=cpu, reference_wall_s=ref_wall, reference_cpu_s=ref_cpu, scale=full_tokens / timed_tokens,
                reference_scale=full_ref / timed_ref, timed=f"{len(d['forget'])} of {len(data['forget'])} items per set",
                tokens=full_tokens, reference_tokens=full_ref)


def part_baseline(method: str, size: str, steps: int | None, data: dict, fmt) -> dict:
    from t3unlearn.baselines import unlearn_baseline

    params = {"graddiff": {"alpha": 1.0, "gamma": 1.0}, "npo": {"beta": 0.1}}[method]
    cfg = dict(COMPARE_TRAIN, **({"max_steps": steps} if steps else {}))
    model = llama(size)
    c0 = time.process_time()
    res = unlearn_baseline(method, model, data["forget"], data["retain"], tokenizer=fmt.tokenizer, params=params, config=cfg,
                           progress=False)
    cpu = time.process_time() - c0
    per_epoch = -(-len(data["forget"]) // COMPARE_TRAIN["batch_size"])
    total = -(-per_epoch // COMPARE_TRAIN["grad_accum"]) * COMPARE_TRAIN["epochs"]
    ex = fmt.encode_batch(*zip(*[(r["question"], r["answer"]) for r in data["forget"]]))
    return dict(wall_s=res.cost.wall_seconds, cpu_s=cpu, steps=res.report["steps"], total_steps=total,
                trained_tokens=COMPARE_TRAIN["epochs"] * 2 * _tokens(ex))  # each forget item with one retain partner


def run_part(args) -> int:
    import torch

    from t3unlearn.data import QAFormatter
    from t3unlearn.results import peak_rss_mb

    torch.set_num_threads(args.threads)
    fmt = QAFormatter(tokenizer(), template="plain")
    data = job(args.tokens_per_word)
    if args.part == "features":
        out = part_features(args.size, args.fraction, data, fmt)
    elif args.part == "head":
        out = part_head(args.size, data, fmt)
    elif args.part == "calibration":
        out = part_calibration(args.size, args.fraction, data, fmt)
    elif args.part == "selection":
        out = part_selection(args.size, args.fraction, data, fmt)
    else:
        out = part_baseline(args.part, args.size, args.steps, data, fmt)
    out["peak_rss_mb"] = peak_rss_mb()
    Path(args.result).write_text(json.dumps(out) + "\n")
    return 0


# --------------------------------------------------------------------------- orchestration, model, table


def child(args, part: str, size: str, *, fraction: float = 1.0, steps: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--size", size, "--fraction", str(fraction),
               "--threads", str(args.threads), "--tokens-per-word", str(args.tokens_per_word), "--result", str(result)]
        if steps:
            cmd += ["--steps", str(steps)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not result.is_file():
            sys.exit(f"bench_cost: the {part} part at size {size} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(result.read_text())


def measure(args, size: str, part: str) -> dict:
    plan = dict(features=1.0, calibration=1.0, steps=None) if args.full else SCALED[size]
    t0 = time.perf_counter()
    if part in ("features", "calibration", "selection"):
        r = child(args, part, size, fraction=plan["calibration" if part == "selection" else part])
        r.update(seconds=r["cpu_s"] * r["scale"], wall=r["wall_s"] * r["scale"], scaled=r["scale"] > 1.0001)
        if part == "calibration":  # another head of the same base: the grid alone (the forward passes are cached)
            r.update(again=r["again_cpu_s"] * r["again_scale"], again_wall=r["again_wall_s"] * r["again_scale"])
        if part == "selection":  # the reference's truth ratios: once per sweep
            r.update(reference_seconds=r["reference_cpu_s"] * r["reference_scale"],
                     reference_wall=r["reference_wall_s"] * r["reference_scale"])
    elif part == "head":
        r = child(args, part, size)
        r.update(seconds=r["cpu_s"], wall=r["wall_s"], scaled=False)
    elif plan["steps"] is None:
        r = child(args, part, size)
        r.update(seconds=r["cpu_s"], wall=r["wall_s"], scaled=False, timed="the whole job")
    else:  # n and 2n steps: seconds per step from the difference, the fixed cost from the rest
        n = plan["steps"][0]
        a, b = child(args, part, size, steps=n), child(args, part, size, steps=2 * n)
        total = a["total_steps"]
        r = dict(b, scaled=True, timed=f"{n} and {2 * n} of {total} steps", peak_rss_mb=max(a["peak_rss_mb"], b["peak_rss_mb"]))
        for key, out in (("cpu_s", "seconds"), ("wall_s", "wall")):
            per_step = (b[key] - a[key]) / n
            r[out] = a[key] + per_step * (total - n) if per_step > 0 else b[key] * total / (2 * n)
            r[f"{out}_fixed"] = a[key] - per_step * n if per_step > 0 else 0.0  # what a run costs besides its steps
    r["bench_s"] = time.perf_counter() - t0
    print(f"  {size:>5} {part:<12} {r['seconds']:10.1f} s CPU{' (scaled: timed on ' + r['timed'] + ')' if r['scaled'] else ''}"
          f"   peak RSS {r['peak_rss_mb']:.0f} MB   [{r['bench_s']:.0f} s to measure]", flush=True)
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1m,30m,100m", help=f"comma-separated, from {', '.join(SIZES)} [1m,30m,100m]")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)} [all]")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each part (and OMP_NUM_THREADS) [1]")
    ap.add_argument("--tokens-per-word", type=float, default=1.3, help="tokens per TOFU word [1.3]")
    ap.add_argument("--full", action="store_true", help="time every part on the whole job at every size (no scaling; hours "
                    "at 100m on a CPU)")
    ap.add_argument("--out", default="t3-runs/bench-cost", help="writes OUT/cost.json and OUT/cost.md [t3-runs/bench-cost]")
    ap.add_argument("--render", action="store_true", help="measure nothing: write OUT/cost.md again from OUT/cost.json")
    ap.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # one part, in a child process
    ap.add_argument("--size", help=argparse.SUPPRESS)
    ap.add_argument("--fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error(f"--threads must be >= 1, not {args.threads}")
    if args.part:
        return run_part(args)
    out = Path(args.out)
    if args.render:
        if not (out / "cost.json").is_file():
            ap.error(f"--render reads {out / 'cost.json'}, which does not exist: run the benchmark with --out {out} first")
        saved = json.loads((out / "cost.json").read_text())
        rows = {s: v["parts"] for s, v in saved["sizes"].items()}
        lines = report(rows, saved["model"], saved["facts"], saved["threads"])
        (out / "cost.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines) + f"\nwrote {out / 'cost.md'}")
        return 0
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    parts = [p.strip().lower() for p in args.parts.split(",") if p.strip()]
    for what, got, known in (("size", sizes, SIZES), ("part", parts, PARTS)):
        bad = [x for x in got if x not in known]
        if bad or not got:
            ap.error(f"unknown {what} {bad[0] if bad else '(none given)'!r}; choose from {', '.join(known)}")
    _rows("forget10")  # fail early without TOFU's files
    t0 = time.perf_counter()
    print(f"bench_cost: sizes {', '.join(sizes)}; parts {', '.join(parts)}; {args.threads} thread(s) per part; "
          f"{'no scaling' if args.full else 'large parts scaled (see the table)'}", flush=True)
    rows = {s: {p: measure(args, s, p) for p in parts} for s in sizes}
    facts = _facts(rows)
    model = fit(rows, facts) if len(sizes) >= 2 else {}
    lines = report(rows, model, facts, args.threads) + ["", f"(bench_cost took {time.perf_counter() - t0:.0f} s)"]
    print("\n" + "\n".join(lines))
    out.mkdir(parents=True, exist_ok=True)
    (out / "cost.json").write_text(json.dumps({"threads": args.threads, "tokens_per_word": args.tokens_per_word, "sizes": {
        s: dict(shape(dict(SIZES[s], vocab_size=VOCAB)), config=SIZES[s], parts=rows[s]) for s in sizes}, "facts": facts,
        "model": model, "crossover": crossover(rows), "sweep_epochs": {m: sweep_epochs(m) for m in BASELINES}}, indent=2) + "\n")
    (out / "cost.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'cost.json'} and {out / 'cost.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
