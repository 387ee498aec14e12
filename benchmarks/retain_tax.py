"""Where does guidance cost retained knowledge? Split the retain answers' per-token log-probability change
under a guidance setting (against the base) by token kind (not a test).

The retain sample is the one `t3unlearn calibrate` scores (400 seeded items). For each answer token: the
change of its guided log-probability from the base's, grouped by whether the head reads the gold token as
forget content (f < 0.5), whether the adaptive gate is open (g > 0.5), whether the gold token is the
base's most likely one, and how sure the base is of it. "share of loss" is each group's part of the net
change (above 1 when the other tokens gain).

    T3UNLEARN_TOFU_DIR=../shared/data/tofu python benchmarks/retain_tax.py --head tofu-head --retain tofu:retain90
    python benchmarks/retain_tax.py --head head --retain world:retain90 --settings "2,1,adaptive;1,1,global"
"""

from __future__ import annotations

import argparse
import random
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--head", required=True, help="a T3 head directory (t3unlearn unlearn --out)")
    p.add_argument("--retain", required=True, help="the retain set the head was trained with, e.g. tofu:retain90")
    p.add_argument("--settings", default="2,1,adaptive;2,1,global;2,0,adaptive;1,1,global",
                   help='guidance settings "T,s,tempering;..." [%(default)s]')
    p.add_argument("--items", type=int, default=400, help="retain items scored (calibrate's seeded sample) [400]")
    p.add_argument("--threads", default="1", help="torch CPU threads [1]")
    args = p.parse_args(argv)

    import torch

    from t3unlearn.benchmarks import resolve_data
    from t3unlearn.data import QAFormatter, load_qa
    from t3unlearn.io import torch_threads
    from t3unlearn.lm import load_tokenizer
    from t3unlearn.t3.calibrate import Setting, _examples, answer_states, token_logprobs
    from t3unlearn.t3.guidance import forget_mass
    from t3unlearn.t3.model import T3ForCausalLM

    with torch_threads(args.threads):
        t3 = T3ForCausalLM.from_pretrained(args.head, device="cpu")
        fmt = QAFormatter(load_tokenizer(args.head))
        retain = load_qa(resolve_data(args.retain))
        if len(retain) > args.items:
            pick = sorted(random.Random("t3-calibrate-retain-0").sample(range(len(retain)), args.items))
            retain = retain.select(pick)
        st = answer_states(t3.base, _examples(fmt, retain), fmt.pad_id)
        base_lp = token_logprobs(t3.base, t3.head, st, Setting(1.0, 0.0))
        with torch.inference_mode():
            logp = torch.log_softmax(t3.base.get_output_embeddings()(st.hidden).float(), -1)
            h = t3.head(st.pooled).float()
            gate = forget_mass(logp, h).squeeze(-1)
            f_gold = torch.sigmoid(h.gather(-1, st.targets[:, None]).squeeze(-1))
            is_top = logp.argmax(-1) == st.targets
        groups = (("gold read as forget (f < 0.5)", f_gold < 0.5), ("gold read as retain", f_gold >= 0.5),
                  ("adaptive gate open (g > 0.5)", gate > 0.5), ("gold is the base's top token", is_top),
                  ("gold not the base's top token", ~is_top), ("base p(gold) > 0.9", base_lp.exp() > 0.9),
                  ("base p(gold) < 0.5", base_lp.exp() < 0.5))
        print(f"{len(retain)} retain items, {st.targets.numel()} answer tokens; head {args.head}")
        for spec in filter(None, args.settings.split(";")):
            T, s, mode = spec.split(",")
            d = token_logprobs(t3.base, t3.head, st, Setting(float(T), float(s), mode.strip())) - base_lp
            print(f"\nT={T}, s={s}, {mode.strip()}: mean change {d.mean():+.4f} nats/token "
                  f"(geometric-mean probability x{d.mean().exp():.3f})")
            print(f"  {'tokens':<32}{'share of tokens':>16}{'share of loss':>15}{'mean change':>13}")
            for name, m in groups:
                share = float(d[m].sum() / d.sum()) if float(d.sum()) != 0 else float("nan")
                print(f"  {name:<32}{float(m.float().mean()):>16.3f}{share:>15.3f}{float(d[m].mean()):>+13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
