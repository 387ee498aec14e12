"""TOFU evaluation: every metric the field reports, for any model behind :class:`t3unlearn.lm.CausalLM`.

- :mod:`t3unlearn.eval.metrics`: the metric definitions as pure functions on numbers;
- :func:`evaluate` (:mod:`~t3unlearn.eval.runner`): score a model on a split -> :class:`EvalResults`
  (:meth:`t3unlearn.benchmarks.Benchmark.evaluate` adds the benchmark's retain reference);
- :class:`EvalResults` / :func:`load_results` (:mod:`~t3unlearn.eval.results`): the
  reference framework's ``TOFU_EVAL.json`` layout, written and read;
- :func:`write_report` (:mod:`~t3unlearn.eval.report`): comparison table and plot.
"""

from t3unlearn.lazy import lazy_exports

_LAZY = {
    "evaluate": "t3unlearn.eval.runner",
    "apply_reference": "t3unlearn.eval.runner",
    "cross_reference": "t3unlearn.eval.runner",
    "load_eval_data": "t3unlearn.eval.runner",
    "EvalResults": "t3unlearn.eval.results",
    "load_results": "t3unlearn.eval.results",
    "write_report": "t3unlearn.eval.report",
}

__all__ = list(_LAZY)


__getattr__ = lazy_exports(__name__, _LAZY)
