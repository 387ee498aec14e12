"""Where a T3 head's forget quality and privleak part ways: the distributions behind them, setting by setting.

TOFU's forget quality compares the *distribution* of the forget items' truth ratios with the oracle's (KS test);
privleak compares the forget-vs-holdout min-k membership AUC with the oracle's. Calibration's table gives the two
figures; this prints what they are made of -- quantiles (10/25/50/75/90 %) of the truth ratios and of the forget
and holdout min-k scores under each setting, beside the oracle's, the reference's and the full model's -- so one
sees *which part* of a distribution a knob moves (docs/notes/2026-12-04-offline-tofu-floor-and-ensemble.md, "The head's floor").

    T3UNLEARN_TOFU_DIR=../shared/data/tofu python benchmarks/truth_ratio_spread.py --head HEAD \\
        --setting "T=3.5,s=0.75,tail=-16,bias=1,support=0.95" --setting "T=3.5,s=2.6,tail=-16,bias=1,support=0.95,floor=-3.5"

A setting is comma-separated key=value pairs: T, s, tempering (adaptive), tail, bias, support, floor.
One torch thread; about 40 s to load and score the models, then about 20 s per setting on a 1M-parameter base.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
KEYS = {"T": "temperature", "s": "scale", "tempering": "tempering", "tail": "tail_logp", "bias": "bias",
        "support": "support", "floor": "floor"}


def parse_setting(text: str):
    from t3unlearn.t3.config import Guidance

    kw = {"tempering": "adaptive"}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in KEYS or not value:
            raise SystemExit(f"--setting: {part!r} is not one of {', '.join(k + '=...' for k in KEYS)}")
        kw[KEYS[key.strip()]] = value.strip() if key.strip() == "tempering" else float(value)
    return Guidance(**kw)


def q(values) -> str:
    return " ".join(f"{x:6.3f}" for x in np.quantile(values, QUANTILES))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--head", required=True, help="a T3 head trained on tofu:forget10 over tofu:full")
    ap.add_argument("--setting", action="append", required=True, help="a guidance setting (repeat)")
    ap.add_argument("--split", default="forget10")
    args = ap.parse_args()
    settings = [parse_setting(s) for s in args.setting]

    import torch
    from transformers import AutoModelForCausalLM

    from t3unlearn.benchmarks import calibration_set, resolve_data, resolve_model
    from t3unlearn.data import QAFormatter, load_qa
    from t3unlearn.lm import load_tokenizer
    from t3unlearn.t3 import calibrate as C
    from t3unlearn.t3.config import Guidance
    from t3unlearn.t3.model import T3ForCausalLM

    torch.set_num_threads(1)
    start = time.perf_counter()
    split, retain_split = args.split, f"retain{100 - int(args.split.removeprefix('forget'))}"
    base_path = resolve_model("tofu:full")
    t3 = T3ForCausalLM.from_pretrained(args.head, base_model=base_path, device="cpu")
    fmt = QAFormatter(load_tokenizer(base_path))
    forget = load_qa(resolve_data(f"tofu:{split}"))
    holdout, _ = calibration_set(f"tofu:{split}")
    retain = load_qa(resolve_data(f"tofu:{retain_split}"))
    retain = retain.select(sorted(random.Random("t3-calibrate-retain-0").sample(range(len(retain)), C.RETAIN_ITEMS)))
    ex = {n: C._examples(fmt, d) for n, d in (("forget", forget), ("holdout", holdout), ("retain", retain))}
    pex = C._perturbed_examples(fmt, load_qa(resolve_data(f"tofu:{split}_perturbed")))
    reference = AutoModelForCausalLM.from_pretrained(resolve_model("tofu:pretrained")).eval()
    oracle = AutoModelForCausalLM.from_pretrained(resolve_model(f"tofu:{retain_split}")).eval()
    truth = C.truth_reference(t3.base, reference, fmt.pad_id, pex)
    check = C.oracle_check(t3.base, oracle, fmt.pad_id, pex, ex["forget"], ex["holdout"])
    states = {n: C.answer_states(t3.base, e, fmt.pad_id) for n, e in ex.items()}
    plain = Guidance(1.0, 0.0)

    def min_k(model, head, st, setting):
        return C.item_stats(C.token_logprobs(model, head, st, setting), st)["min_k"]

    print(f"loaded and scored the models in {time.perf_counter() - start:.0f}s; quantiles {', '.join(f'{x:g}' for x in QUANTILES)}")
    print(f"{'model':<62}{'truth ratio':>36}   {'forget min-k':>36}   {'holdout min-k':>36}")
    orc = {n: C.answer_states(oracle, ex[n], fmt.pad_id) for n in ("forget", "holdout")}
    print(f"{'oracle (tofu:' + retain_split + ')':<62}{q(check.truth_ratios):>36}   "
          f"{q(min_k(oracle, None, orc['forget'], plain)):>36}   {q(min_k(oracle, None, orc['holdout'], plain)):>36}")
    print(f"{'reference (tofu:pretrained)':<62}{q(truth.reference):>36}")
    full_tr = C.truth_ratios(t3.base, None, truth.para, truth.pert, truth.n_pert, plain)
    print(f"{'full (tofu:full)':<62}{q(full_tr):>36}   {q(min_k(t3.base, None, states['forget'], plain)):>36}   "
          f"{q(min_k(t3.base, None, states['holdout'], plain)):>36}")
    for setting in settings:
        row = C.evaluate_settings(t3.base, t3.head, states["forget"], states["holdout"], states["retain"], [setting],
                                  truth=truth, oracle=check).rows[0]
        tr = C.truth_ratios(t3.base, t3.head, truth.para, truth.pert, truth.n_pert, setting)
        print(f"{setting.label():<62}{q(tr):>36}   {q(min_k(t3.base, t3.head, states['forget'], setting)):>36}   "
              f"{q(min_k(t3.base, t3.head, states['holdout'], setting)):>36}")
        print(f"{'':<4}forget quality {row.forget_quality:.3g}, privleak {row.privleak:+.1f}, MIA AUC {row.mia_auc:.3f}, "
              f"KS(TR, reference) {row.tr_ks:.3f}, retain p / base {row.retain_ratio:.3f}", flush=True)


if __name__ == "__main__":
    main()
