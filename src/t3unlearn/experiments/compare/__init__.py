"""``t3unlearn compare``: run every method on one benchmark split, evaluate, tabulate, plot.

Every method ends as a causal LM behind :class:`t3unlearn.lm.CausalLM` and is scored by the
one evaluation runner (:func:`t3unlearn.eval.runner.evaluate`); forget quality and privleak
are against the retain (oracle) model's results on the same split.

Plan per method (settings from a JSON config; the packaged default is ``compare_default.json``):

1. **sweep** — each setting of the method's ``sweep`` list is run with the first seed and scored
   by a *quick* evaluation (teacher-forced only: forget ``Q_A_Prob`` on forgetXX, retain
   ``Q_A_Prob`` on retain_perturbed; ``selection.eval: "full"`` uses the whole evaluation);
2. **select** — the rule of ``t3unlearn calibrate``: the setting with the lowest ``forget_reference_tr_ks``
   (the KS distance between the forget truth ratios and T3's reference: the full model's own truth ratios on
   never-seen items that carry perturbed answers, else those of the checkpoint the model was fine-tuned from)
   among the feasible ones: retain ``Q_A_Prob`` at least ``(1 - utility_tolerance)`` (0.97) times the full
   model's and ``forget_calibration_mia`` (the min-k membership AUC between forget and never-seen items)
   within 0.5 ± ``mia_tolerance`` (0.075); if none is feasible, the one that misses by least. The rule never
   looks at the retain model's results on the forget set (so not at forget quality or privleak). T3 and
   classifier guidance with ``"calibrate"`` skip the sweep: each seed's head runs ``calibrate`` itself on the
   calibration set (classifier guidance: T = 1 settings only);
3. **evaluate** — the selected setting, with every seed, gets the full TOFU evaluation; the
   table reports mean ± std over seeds.

Data: every method reads the forget set and the whole retain set (``retain_subset: null``, the
default: T3's head trains on all of it; the fine-tuning methods pair each forget item with a retain
item drawn from all of it, as the reference framework's forget/retain pairing does);
``retain_subset: "forget"`` gives every method the same seeded retain subset as large as the
forget set.

``trainings`` repeats all of it on several trainings of the benchmark's own tiny models and tabulates them
together (:mod:`.trainings`).

Every (method, setting, seed, evaluation) is a *unit* cached under ``OUT/SPLIT/runs/METHOD/ID/``:
a rerun resumes where it stopped, and ``jobs`` units run side by side, each in its own process.

Modules: :mod:`.config` (the strict settings), :mod:`.units` (one unit, the shared artifacts, the
unit's process), :mod:`.selection` (choosing a sweep setting, aggregating seeds), :mod:`.report`
(tables, verdict, plot, the ``--doc`` sections), :mod:`.trainings` (one table over several model trainings),
:mod:`.driver` (:func:`compare`).
"""

from __future__ import annotations

from t3unlearn.experiments.compare.config import (
    ALL_METHODS,
    DEFAULT_CONFIG,
    FINETUNE,
    INFERENCE_METHODS,
    CompareConfig,
    Setting,
    load_compare_config,
)

from t3unlearn.lazy import lazy_exports

_LAZY = {
    "compare": "t3unlearn.experiments.compare.driver",
    "unit_threads": "t3unlearn.experiments.compare.driver",
    "UnitSpec": "t3unlearn.experiments.compare.units",
    "execute_unit": "t3unlearn.experiments.compare.units",
    "run_unit": "t3unlearn.experiments.compare.units",
    "quick_scores": "t3unlearn.experiments.compare.units",
    "select_setting": "t3unlearn.experiments.compare.selection",
    "aggregate": "t3unlearn.experiments.compare.selection",
    "TITLES": "t3unlearn.experiments.compare.selection",
    "markdown_table": "t3unlearn.experiments.compare.report",
    "write_doc": "t3unlearn.experiments.compare.report",
    "doc_markers": "t3unlearn.experiments.compare.report",
}

__all__ = ["ALL_METHODS", "CompareConfig", "DEFAULT_CONFIG", "FINETUNE", "INFERENCE_METHODS", "Setting",
           "load_compare_config", *_LAZY]


__getattr__ = lazy_exports(__name__, _LAZY)
