"""The cost model and the tables of ``bench_cost.py`` (see its doc): parameter counts, each part's operation count,
the least-squares fit and its extrapolation, and the two accountings (one setting each; as `compare` runs them)."""

from __future__ import annotations

VOCAB = 32000
# the bases measured: Llama shapes with a 32k vocabulary (parameters counted with tied embeddings)
SIZES = {
    "1m": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=86, tie_word_embeddings=True),
    "30m": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1376, tie_word_embeddings=True),
    "100m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=2048,
                 tie_word_embeddings=True),
}
# the extrapolation targets (meta-llama config.json values)
TARGETS = {
    "Llama-3.2-1B": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True),
    "Llama-3.1-8B": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False),
}
PARTS = ("features", "head", "calibration", "graddiff", "npo", "selection")
BASELINES = ("graddiff", "npo")
COMPARE_TRAIN = dict(epochs=10, batch_size=16, grad_accum=2, warmup_epochs=1, weight_decay=0.01, max_grad_norm=1.0, lr=3e-4)


def shape(cfg: dict) -> dict:
    """Parameters of a Llama config: total, non-embedding (the decoder's layers), d, V."""
    d, f, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = d // cfg["num_attention_heads"]
    layer = d * d * 2 + 2 * d * kv * head_dim + 3 * d * f + 2 * d
    non_emb = L * layer + d
    return dict(params=non_emb + V * d * (1 if cfg.get("tie_word_embeddings", False) else 2), non_embedding=non_emb,
                d=d, vocab=V)


def drivers(part: str, sh: dict, facts: dict) -> tuple[float, float]:
    """``(F, V_term)`` of a part for a base of shape ``sh`` (see the module doc)."""
    d, V, P = sh["d"], sh["vocab"], sh["non_embedding"]
    if part == "features":
        return 2 * P * facts["tokens"], 1.0
    if part == "head":
        return facts["width"] * d * facts["head_tokens"], V * facts["width"] * facts["head_steps"]
    if part == "calibration":
        return 2 * P * facts["cal_tokens"] + 2 * d * V * facts["positions"], facts["settings"] * facts["positions"] * V
    if part == "selection":
        return 2 * (P + d * V) * facts["selection_tokens"], 1.0
    return 6 * (P + d * V) * facts["train_tokens"], 1.0


def fit(rows: dict, facts: dict) -> dict:
    """Per part: non-negative least squares of seconds on (F, V_term) over the sizes run."""
    import numpy as np
    from scipy.optimize import nnls

    out = {}
    for part in PARTS:
        pts = [(drivers(part, shape(dict(SIZES[s], vocab_size=VOCAB)), facts), r[part]["seconds"]) for s, r in rows.items() if part in r]
        if len(pts) < 2:
            continue
        A = np.array([p[0] for p in pts], dtype=float)
        norm = A.max(0)
        coef, _ = nnls(A / norm, np.array([p[1] for p in pts]))
        out[part] = (coef / norm).tolist()
    return out


def predict(model: dict, part: str, sh: dict, facts: dict) -> float:
    a, b = model[part]
    F, G = drivers(part, sh, facts)
    return a * F + b * G


def _facts(rows: dict) -> dict:
    facts = {}
    for r in rows.values():
        if "features" in r:
            facts["tokens"] = r["features"]["tokens"]
        if "head" in r:
            facts.update(width=r["head"]["width"], head_tokens=r["head"]["trained_tokens"], head_steps=r["head"]["steps"])
        if "calibration" in r:
            facts.update(cal_tokens=r["calibration"]["forward_tokens"], positions=r["calibration"]["positions"],
                         settings=r["calibration"]["settings"])
        for m in BASELINES:
            if m in r:
                facts["train_tokens"] = r[m]["trained_tokens"]
        if "selection" in r:
            facts.update(selection_tokens=r["selection"]["tokens"], reference_tokens=r["selection"]["reference_tokens"])
    return facts


def _fmt_s(r: dict | None, key: str = "seconds") -> str:
    if r is None:
        return "–"
    return f"{r[key]:,.0f}{'*' if r.get('scaled') else ''}" if r[key] >= 10 else f"{r[key]:.1f}{'*' if r.get('scaled') else ''}"


def table(rows: dict, model: dict, facts: dict, key: str = "seconds") -> list[str]:
    have_t3 = all(p in r for r in rows.values() for p in ("features", "head", "calibration"))
    lines = ["| base | parameters | features (s) | head (s) | calibration (s) | T3 total (s) | GradDiff (s) | NPO (s) | "
             "T3 / GradDiff | T3 without calibration / GradDiff | peak RSS (MB): features / head / calibration / GradDiff / NPO / "
             "selection |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for size, r in rows.items():
        sh = shape(dict(SIZES[size], vocab_size=VOCAB))
        t3 = sum(r[p][key] for p in ("features", "head", "calibration")) if have_t3 else None
        gd = r.get("graddiff")
        ratio = f"{t3 / gd[key]:.2f}" if t3 is not None and gd else "–"
        ratio_nc = f"{(t3 - r['calibration'][key]) / gd[key]:.2f}" if t3 is not None and gd else "–"
        rss = " / ".join(f"{r[p]['peak_rss_mb']:.0f}" if p in r else "–" for p in PARTS)
        lines.append(f"| {size} (d={sh['d']}, {SIZES[size]['num_hidden_layers']} layers) | {sh['params'] / 1e6:.1f}M | "
                     f"{_fmt_s(r.get('features'), key)} | {_fmt_s(r.get('head'), key)} | {_fmt_s(r.get('calibration'), key)} | "
                     f"{'–' if t3 is None else f'{t3:,.0f}'} | {_fmt_s(gd, key)} | {_fmt_s(r.get('npo'), key)} | {ratio} | {ratio_nc} | {rss} |")
    if key == "seconds" and len(model) == len(PARTS):
        for name, cfg in TARGETS.items():
            sh = shape(cfg)
            p = {part: predict(model, part, sh, facts) for part in PARTS}
            t3 = p["features"] + p["head"] + p["calibration"]
            lines.append(f"| {name} (extrapolated) | {sh['params'] / 1e9:.2f}B | {p['features']:,.0f} | {p['head']:,.0f} | "
                         f"{p['calibration']:,.0f} | {t3:,.0f} | {p['graddiff']:,.0f} | {p['npo']:,.0f} | {t3 / p['graddiff']:.2f} | "
                         f"{(t3 - p['calibration']) / p['graddiff']:.2f} | – |")
    return lines


def sweep_epochs(method: str) -> list[int]:
    """The epochs of each setting of ``method``'s sweep in `compare`'s default config."""
    from t3unlearn.experiments.compare.config import load_compare_config
    return [int(st.train.get("epochs", COMPARE_TRAIN["epochs"])) for st in load_compare_config(None).settings(method)]


def compare_table(rows: dict, model: dict, facts: dict, key: str = "seconds") -> list[str]:
    """The first unlearned model with its setting chosen oracle-free, as `compare` runs each method (module doc): a
    sweep trains each setting (``run(E)``: seconds at E epochs) and quick-evaluates it, and scores the reference once."""
    have = lambda r: all(p in r for p in PARTS)  # noqa: E731
    _sweep_cost = lambda run, sel, ref, epochs: sum(run(e) for e in epochs) + len(epochs) * sel + ref  # noqa: E731
    if not any(have(r) for r in rows.values()):
        return ["(the accounting as `compare` runs them needs every part)"]
    eps = {m: sweep_epochs(m) for m in BASELINES}
    lines = ["| base | T3: features + head + calibration (s) | T3: another head (s) | GradDiff: sweep (s) | NPO: sweep (s) | "
             "T3 / GradDiff | T3 / NPO |", "|---|---:|---:|---:|---:|---:|---:|",
             f"| settings (epochs in all) | 1 head, {facts.get('settings', '?')} guidance settings | the head, the grid | "
             f"{len(eps['graddiff'])} ({sum(eps['graddiff'])}) | {len(eps['npo'])} ({sum(eps['npo'])}) | | |"]
    for size, r in rows.items():
        if not have(r):
            continue
        t3 = sum(r[p][key] for p in ("features", "head", "calibration"))
        sel, ref = r["selection"][key], r["selection"][f"reference_{'seconds' if key == 'seconds' else 'wall'}"]
        cost = {}
        for m in BASELINES:
            fixed = max(0.0, r[m].get(f"{key}_fixed", 0.0))  # timing noise can make the difference negative
            per_epoch = (r[m][key] - fixed) / COMPARE_TRAIN["epochs"]
            cost[m] = _sweep_cost(lambda e: fixed + per_epoch * e, sel, ref, eps[m])
        again = r["head"][key] + r["calibration"]["again" if key == "seconds" else "again_wall"]
        lines.append(f"| {size} ({shape(dict(SIZES[size], vocab_size=VOCAB))['params'] / 1e6:.1f}M) | {t3:,.0f} | {again:,.0f} | "
                     f"{cost['graddiff']:,.0f} | {cost['npo']:,.0f} | {t3 / cost['graddiff']:.3f} | {t3 / cost['npo']:.3f} |")
    if key == "seconds" and len(model) == len(PARTS):
        for name, cfg in TARGETS.items():
            sh = shape(cfg)
            t3 = sum(predict(model, p, sh, facts) for p in ("features", "head", "calibration"))
            sel = predict(model, "selection", sh, facts)
            ref = sel * facts["reference_tokens"] / facts["selection_tokens"]
            cost = {}
            for m in BASELINES:
                a, b = model[m]
                F, _ = drivers(m, sh, facts)
                cost[m] = _sweep_cost(lambda e: a * F * e / COMPARE_TRAIN["epochs"] + b, sel, ref, eps[m])
            a_cal, b_cal = model["calibration"]  # another head: its training, the grid's output layer and its softmaxes
            again = predict(model, "head", sh, facts) + a_cal * 2 * sh["d"] * sh["vocab"] * facts["positions"] + \
                b_cal * drivers("calibration", sh, facts)[1]
            lines.append(f"| {name} (extrapolated) | {t3:,.0f} | {again:,.0f} | {cost['graddiff']:,.0f} | {cost['npo']:,.0f} | "
                         f"{t3 / cost['graddiff']:.3f} | {t3 / cost['npo']:.3f} |")
    return lines


def notes(rows: dict, model: dict) -> list[str]:
    out = []
    for size, r in rows.items():
        scaled = [f"{p} timed on {r[p]['timed']}" for p in PARTS if p in r and r[p].get("scaled")]
        if scaled:
            out.append(f"- {size}: " + "; ".join(scaled) + ", scaled linearly (marked *).")
    for part, (a, b) in model.items():
        out.append(f"- cost model, {part}: seconds = {a:.3e} x F + {b:.3e} x V_term")
    return out


def crossover(rows: dict) -> str:
    """Where T3 end to end becomes cheaper than GradDiff, read off the measured sizes (log-linear in parameters)."""
    import math

    pts = []
    for size, r in rows.items():
        if all(p in r for p in ("features", "head", "calibration", "graddiff")):
            t3 = sum(r[p]["seconds"] for p in ("features", "head", "calibration"))
            pts.append((shape(dict(SIZES[size], vocab_size=VOCAB))["params"], t3 / r["graddiff"]["seconds"]))
    pts.sort()
    if not pts:
        return "crossover: needs features, head, calibration and graddiff"
    if pts[0][1] <= 1:
        return f"crossover: T3 end to end is already cheaper than GradDiff at the smallest size run ({pts[0][0] / 1e6:.1f}M parameters)"
    for (p0, r0), (p1, r1) in zip(pts, pts[1:]):
        if r1 <= 1 < r0:
            x = math.log(p0) + (math.log(r0) - 0) / (math.log(r0) - math.log(r1)) * (math.log(p1) - math.log(p0))
            return f"crossover: T3 end to end becomes cheaper than GradDiff at about {math.exp(x) / 1e6:.0f}M parameters (between the sizes run)"
    return f"crossover: not within the sizes run (T3 / GradDiff at the largest: {pts[-1][1]:.2f})"


def report(rows: dict, model: dict, facts: dict, threads: int) -> list[str]:
    """cost.md: both accountings, the cost model and the crossover."""
    return [f"One setting each. CPU seconds (the work; wall seconds in cost.json), {threads} thread(s), * scaled:", "",
            *table(rows, model, facts), "", "wall seconds on this machine:", "", *table(rows, {}, facts, key="wall"), "",
            "As `compare` runs them: the first unlearned model, its setting chosen oracle-free (CPU seconds):", "",
            *compare_table(rows, model, facts), "", *notes(rows, model), "", crossover(rows)]
