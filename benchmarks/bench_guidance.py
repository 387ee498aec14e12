"""T3's guidance settings over a grid, with one head: the oracle-free calibration objective beside what the
oracle says (forget quality, privleak), and what each setting costs in retain probability.

One head is trained (seed --seed); every (T, s, tempering, tail, bias) of the grid is then scored from the
cached hidden states of the full model (no retraining: guidance is free at inference). Columns:

  calibKS   KS distance of forget vs calibration-set answer losses (what `t3unlearn calibrate` minimizes)
  FQ        forget quality: KS test p-value of forget truth ratios vs the retain (oracle) model's
  fTR       forget truth ratio (mean of min(TR, 1/TR));  fprob  forget answer probability
  PL        privleak (min-k AUC forget vs holdout, relative to the oracle's; 0 is best)
  ret/full  retain answer probability relative to the full model's (the utility constraint)
  refKS     with --pretrained NAME: KS distance of forget truth ratios vs those of the benchmark's model NAME
            (e.g. pretrained, which never saw the forget set): what `t3unlearn calibrate --pretrained` minimizes

  python benchmarks/bench_guidance.py --split forget10 --T 1,1.5,1.75,2 --s 0.6,0.7,0.8 --modes global,adaptive
  T3UNLEARN_TOFU_DIR=../shared/data/tofu python benchmarks/bench_guidance.py --bench tofu --split forget10
"""
import json, time, argparse
import numpy as np, torch
from scipy.stats import ks_2samp
from t3unlearn.benchmarks import get_benchmark
from t3unlearn.lm import load_model, load_tokenizer
from t3unlearn.t3 import unlearn
from t3unlearn.t3.calibrate import Setting, grid, answer_states, token_logprobs, item_stats, ks_distance, auc
from t3unlearn.data import QAFormatter
from t3unlearn.flags import deprecated_alias

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--bench", default="world"); ap.add_argument("--split", default="forget10")
ap.add_argument("--T", default="1,1.5,2,2.5,3"); ap.add_argument("--s", default="0.5,1,1.5,2")
ap.add_argument("--modes", default="global,adaptive"); ap.add_argument("--tails", default="none")
ap.add_argument("--biases", default="0"); ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--head", default="{}"); ap.add_argument("--calib", default="calibration")
ap.add_argument("--out", default=None)
ap.add_argument("--pretrained", default=None, metavar="NAME",
                help="a model of the benchmark that never saw the forget set (its pretrained checkpoint)")
deprecated_alias(ap, "--reference", "--pretrained", dest="pretrained")
ap.add_argument("--threads", type=int, default=1, help="torch threads [1]")
a = ap.parse_args()
torch.set_num_threads(a.threads)
bench = get_benchmark(a.bench)
pct = a.split[-2:]; rname = f"retain{100-int(pct)}"
m = bench.models(("full", rname), progress=False)
tok = load_tokenizer(str(m["full"])); base = load_model(str(m["full"]), device="cpu"); oracle = load_model(str(m[rname]), device="cpu")
t0 = time.time()
res = unlearn(base, tok, bench.qa(a.split), bench.qa(rname), seed=a.seed, **json.loads(a.head))
head = res.model.head
print(f"head trained in {time.time()-t0:.1f}s", res.report["forget"]["seq_acc"], res.report["retain"]["seq_acc"], flush=True)
fmt = QAFormatter(tok)
def rows(cfg): return bench.qa(cfg).to_list()
fq = rows(a.split); ho = rows(f"holdout{pct}"); rp = rows("retain_perturbed"); fp = rows(f"{a.split}_perturbed")
try: ca = rows(a.calib)
except Exception as e: print("no calibration set:", e); ca = ho
def ex(qs, ans): return fmt.encode_batch(qs, ans)
sets = {
 "forget": ex([r["question"] for r in fq], [r["answer"] for r in fq]),
 "calib": ex([r["question"] for r in ca], [r["answer"] for r in ca]),
 "holdout": ex([r["question"] for r in ho], [r["answer"] for r in ho]),
 "retain": ex([r["question"] for r in rp], [r["answer"] for r in rp]),
 "para": ex([r["question"] for r in fp], [r["paraphrased_answer"] for r in fp]),
 "pert": ex([r["question"] for r in fp for _ in r["perturbed_answer"]], [p for r in fp for p in r["perturbed_answer"]]),
}
npert = len(fp[0]["perturbed_answer"])
t0 = time.time()
S = {k: answer_states(base, v, fmt.pad_id) for k, v in sets.items()}
O = {k: answer_states(oracle, sets[k], fmt.pad_id) for k in ("forget", "holdout", "para", "pert")}
print(f"states in {time.time()-t0:.1f}s", flush=True)
def stats(model, st, setting): return item_stats(token_logprobs(model, head, st, setting), st)
def trs(model, SS, setting):
    para = stats(model, SS["para"], setting)["avg_loss"]; pert = stats(model, SS["pert"], setting)["avg_loss"].reshape(-1, npert)
    return np.exp(-pert.mean(1)) / (np.exp(-para) + 1e-10)
o = Setting(1.0, 0.0)
tr_o = trs(oracle, O, o); fo = stats(oracle, O["forget"], o); hoo = stats(oracle, O["holdout"], o)
auc_o = auc(fo["min_k"], hoo["min_k"])
tr_ref = None
if a.pretrained:
    ref = load_model(str(bench.models((a.pretrained,), progress=False)[a.pretrained]), device="cpu")
    tr_ref = trs(ref, {k: answer_states(ref, sets[k], fmt.pad_id) for k in ("para", "pert")}, o)
    print(f"{a.pretrained} vs oracle forget truth ratios: KS p-value {ks_2samp(tr_ref, tr_o).pvalue:.3f}", flush=True)
full_retain = stats(base, S["retain"], o)["prob"].mean()
print(f"oracle: forget prob {fo['prob'].mean():.3f}  min-k AUC {auc_o:.3f}  TR agg {np.mean(np.minimum(tr_o, 1/(tr_o+1e-10))):.3f}; full retain prob {full_retain:.3f}", flush=True)
parse = lambda x: [None if v == "none" else float(v) for v in x.split(",")]
G = grid(parse(a.T), parse(a.s), a.modes.split(","), parse(a.tails), parse(a.biases))
out = []
hdr = f"{'setting':<38} {'calibKS':>7} {'FQ':>9} {'fTR':>6} {'fprob':>6} {'PL':>7} {'ret/full':>8}" + (f" {'refKS':>6}" if tr_ref is not None else "")
print(hdr, flush=True)
for st in G:
    f = stats(base, S["forget"], st); c = stats(base, S["calib"], st); h = stats(base, S["holdout"], st); r = stats(base, S["retain"], st)
    tr = trs(base, S, st)
    fqv = ks_2samp(tr, tr_o).pvalue
    a_ = auc(f["min_k"], h["min_k"]); pl = ((1 - a_) - (1 - auc_o)) / ((1 - auc_o) + 1e-10) * 100
    row = dict(setting=st.label(), calib_ks=ks_distance(f["avg_loss"], c["avg_loss"]), calib_auc=auc(f["min_k"], c["min_k"]), fq=fqv,
               ftr=float(np.mean(np.minimum(tr, 1/(tr+1e-10)))), fprob=float(f["prob"].mean()), privleak=pl,
               retain_ratio=float(r["prob"].mean()/full_retain))
    if tr_ref is not None:
        row["ref_ks"] = ks_distance(tr, tr_ref)
    out.append(row)
    print(f"{row['setting']:<38} {row['calib_ks']:>7.3f} {fqv:>9.2e} {row['ftr']:>6.3f} {row['fprob']:>6.3f} {pl:>7.1f} {row['retain_ratio']:>8.3f}"
          + (f" {row['ref_ks']:>6.3f}" if tr_ref is not None else ""), flush=True)
if a.out: json.dump(out, open(a.out, "w"), indent=1)
