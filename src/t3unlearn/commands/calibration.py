"""The calibration steps ``t3unlearn unlearn --calibrate`` and ``t3unlearn calibrate`` share: the grid, the
holdout, the reference truth ratios (the holdout's own, a pretrained checkpoint's or an oracle's), the report."""

from __future__ import annotations


def _grid(args):
    """The calibration grid of ``--temperatures``, ``--scales``, ... (comma-separated; each value checked as its
    guidance knob is)."""
    from t3unlearn.errors import ModelError, T3Error
    from t3unlearn.t3.calibrate import grid
    from t3unlearn.t3.config import CALIBRATION_WORDS, GUIDANCE_META, check_knob

    def values(option: str, knob: str, default: str) -> list:
        out = []
        given = getattr(args, option, None)
        for x in str(default if given is None else given).split(","):
            if x.strip():
                try:
                    out.append(check_knob(knob, x.strip()))
                except ModelError as exc:
                    raise T3Error(f"--{option}: {exc}") from None
        return out or ([None] if GUIDANCE_META[knob]["optional"] else [])

    pieces, spellings = getattr(args, "piece_floors", None), getattr(args, "spellings", None)
    # neither --piece-floors nor --spellings: the default (piece floor, spelling) pairs; one alone: every pair of its
    # values with the other's whole-word value
    words = CALIBRATION_WORDS if pieces is None and spellings is None else None
    return grid(values("temperatures", "temperature", ""), values("scales", "scale", ""),
                values("temperings", "tempering", ""), tails=values("tails", "tail_logp", "none"),
                biases=values("biases", "bias", "0"), supports=values("supports", "support", "none"),
                floors=values("floors", "floor", "none"), copy_floors=values("copy_floors", "copy_floor", "none"),
                piece_floors=values("piece_floors", "piece_floor", "10") if words is None else (None,),
                spellings=values("spellings", "spelling", "base") if words is None else ("guided",), words=words)


def _holdout(args, forget_spec: str):
    """The calibration holdout set: --holdout, else the benchmark's default for this forget set; either way never an
    item the benchmark's evaluation of that split reads."""
    from t3unlearn.benchmarks import calibration_set, check_calibration_set, resolve_data
    from t3unlearn.data import load_qa
    from t3unlearn.errors import T3Error

    if args.holdout:
        found = load_qa(resolve_data(args.holdout), what="holdout set"), args.holdout
        check_calibration_set(found[0], forget_spec, f"--holdout {args.holdout}")
        return found
    model = getattr(args, "model", None)
    if model is None and getattr(args, "head", None):
        from t3unlearn.t3.model import T3ForCausalLM

        model = T3ForCausalLM.base_model_path(args.head)
    found = calibration_set(forget_spec, model)
    if found is None:
        raise T3Error("calibration needs --holdout SOURCE: items like the forget set that the model never trained on "
                      "(and that the evaluation does not read).")
    return found


def _check_holdout(args, holdout, forget, retain=None) -> None:
    """``holdout`` (``_holdout``'s (items, name)) shares no question with ``forget``, nor -- a given --holdout -- with
    ``retain`` (a benchmark's default holdout that the retain set holds is left out of it instead: see unlearn)."""
    from t3unlearn.data import check_holdout

    given = getattr(args, "holdout", None)
    check_holdout(holdout[0], forget, retain if given else None, f"--holdout {given}" if given else holdout[1])


def _common_source(sources) -> str | None:
    """The one data source all of a head's requests came from, or None (several, or one given in memory)."""
    found = {str(x) for x in sources}
    return found.pop() if len(found) == 1 and None not in sources else None


def _head_sets(args, cfg):
    """``(forget, forget_spec, retain)`` to calibrate a head on: --forget and --retain where given, else the
    requests the head records (read again from their sources and checked) and its recorded retain set."""
    from t3unlearn.benchmarks import resolve_data
    from t3unlearn.data import load_qa
    from t3unlearn.errors import T3Error
    from t3unlearn.t3.requests import request_items

    if getattr(args, "forget", None):
        forget, spec = load_qa(resolve_data(args.forget), what="forget set"), args.forget
    else:
        forget = request_items(cfg.requests or [])
        spec = _common_source([r.get("source") for r in cfg.requests]) or ""
    if args.retain:
        retain = load_qa(resolve_data(args.retain), what="retain set")
    else:
        src = (cfg.retain_set or {}).get("source")
        if not src:
            raise T3Error("the head records no retain set to read again (it was given in memory); give --retain.")
        retain = load_qa(src, what="the head's retain set")
    return forget, spec, retain


def _check_calibration_args(args) -> None:
    """The calibration options that can be checked before anything is loaded or trained."""
    from t3unlearn.errors import T3Error

    mia = getattr(args, "mia_tolerance", None)
    if mia is not None and not 0 <= mia <= 0.5:
        raise T3Error(f"--mia-tolerance is a distance from AUC 0.5 and must be in [0, 0.5] (e.g. 0.075), not {mia}.")
    tol = getattr(args, "tolerance", None)
    if tol is not None and not 0 <= tol < 1:
        raise T3Error(f"--tolerance is a relative loss of retain probability and must be in [0, 1) (e.g. 0.03), not {tol}.")


def _check_not_the_base(args, base) -> None:
    """--pretrained and --oracle stand for models that never saw the forget set: the model being unlearned is neither."""
    from pathlib import Path

    from t3unlearn.errors import T3Error

    def where(spec) -> str:
        p = Path(str(spec)).expanduser()
        return str(p.resolve()) if p.exists() else str(spec)

    for option, fix in (("pretrained", "the checkpoint it was fine-tuned from"), ("oracle", "a model trained without the forget set")):
        spec = getattr(args, option, None)
        if spec and base and where(spec) == where(base):
            raise T3Error(f"--{option} {spec} is the model being unlearned, which saw the forget set; give {fix}.")


def _check_perturbed_use(args, never_seen: bool) -> None:
    """--perturbed needs truth ratios to compare with: --pretrained, --oracle or a holdout with perturbed answers."""
    if getattr(args, "perturbed", None) and not (getattr(args, "pretrained", None) or getattr(args, "oracle", None)
                                                 or never_seen):
        from t3unlearn.errors import T3Error

        raise T3Error("--perturbed goes with --pretrained or --oracle, or with a holdout set whose items carry perturbed "
                      "answers (the truth ratios it is compared with).")


def _perturbed_spec(args, forget_spec: str) -> str | None:
    """The forget items' perturbed answers: --perturbed, else a benchmark forget set's FORGET_perturbed, else None."""
    from t3unlearn.benchmarks import benchmark_config

    spec = args.perturbed
    if spec is None and benchmark_config(forget_spec) is not None and not forget_spec.endswith("_perturbed"):
        spec = f"{forget_spec}_perturbed"
    return spec


def _check_truth_items(args, forget, forget_spec: str, never_seen: bool) -> None:
    """Before the head is trained: truth ratios (--pretrained, --oracle, or holdout items with perturbed answers) are
    scored on the forget items' perturbed answers, which must be there (:func:`_perturbed_spec`, else the forget set)."""
    if not (getattr(args, "pretrained", None) or getattr(args, "oracle", None) or never_seen):
        return
    from t3unlearn.benchmarks import resolve_data
    from t3unlearn.data import load_qa
    from t3unlearn.t3.calibrate import check_perturbed

    spec = _perturbed_spec(args, forget_spec)
    check_perturbed(load_qa(resolve_data(spec), what="perturbed forget set") if spec else forget)


def _reference(args, forget_spec: str, never_seen: bool = False):
    """``(reference model, oracle, perturbed items, names)`` for --pretrained / --oracle, or for calibration items
    with perturbed answers (``never_seen``: the base's truth ratios on them are the reference, and --pretrained is
    not loaded); ``names``: the reference's, the oracle's and the perturbed set's (None where not given)."""
    _check_calibration_args(args)
    ref_spec, oracle_spec = getattr(args, "pretrained", None), getattr(args, "oracle", None)
    if never_seen:
        if ref_spec:
            print(f"calibration: the calibration items carry perturbed answers, so the base's truth ratios on them are the "
                  f"reference; --pretrained {ref_spec} is not used")
        ref_spec = None
    _check_perturbed_use(args, never_seen)
    if not ref_spec and not oracle_spec and not never_seen:
        return None, None, None, (None, None, None)
    from t3unlearn.benchmarks import resolve_data, resolve_model
    from t3unlearn.data import load_qa
    from t3unlearn.lm import load_model

    spec = _perturbed_spec(args, forget_spec)
    perturbed = load_qa(resolve_data(spec), what="perturbed forget set") if spec else None
    device = getattr(args, "device", None)
    reference = load_model(resolve_model(ref_spec, log=print), device=device) if ref_spec else None
    oracle = load_model(resolve_model(oracle_spec, log=print), device=device) if oracle_spec else None
    return reference, oracle, perturbed, (ref_spec, oracle_spec, spec or "the forget set")


def _calibrate_and_report(t3, tokenizer, forget, holdout, holdout_name, retain, args, forget_spec: str = ""):
    from t3unlearn.t3.calibrate import calibrate

    from t3unlearn.t3.calibrate import has_perturbed

    never_seen = has_perturbed(holdout)
    reference, oracle, perturbed, (ref_name, oracle_name, pert_name) = _reference(args, forget_spec, never_seen)
    had_pieces = t3.head.pieces is not None
    cal = calibrate(t3, tokenizer, forget, holdout, retain, settings=_grid(args), tolerance=args.tolerance,
                    seed=args.seed, max_length=args.max_length, template=args.template, reference=reference,
                    perturbed=perturbed, mia_tolerance=args.mia_tolerance, oracle=oracle, progress=not args.quiet,
                    cache=not getattr(args, "no_cache", False))
    if not had_pieces and t3.head.pieces is not None:
        print("calibration: the head was saved before word-piece tables; it now carries its tokenizer's (the table "
              "training makes), which the word-piece exemption and the base's spelling read")
    t3.config.calibration["holdout"] = holdout_name
    if oracle_name:
        t3.config.calibration["oracle_model"] = oracle_name
    if ref_name or oracle_name or never_seen:
        t3.config.calibration["perturbed"] = pert_name
    if never_seen:
        print(f"calibration: forget truth ratios ({pert_name}) vs the base's on {holdout_name} ({len(holdout)} never-seen "
              f"items), beside forget vs {holdout_name} losses and {min(len(retain), 400)} retain items:")
    elif ref_name:
        t3.config.calibration["reference_model"] = ref_name
        print(f"calibration: forget truth ratios ({pert_name}) vs {ref_name}'s, beside forget vs {holdout_name} losses "
              f"({len(holdout)} items) and {min(len(retain), 400)} retain items:")
    else:
        print(f"calibration on forget vs {holdout_name} ({len(holdout)} items) and {min(len(retain), 400)} retain items:")
    print(cal.table())
    print(f"chosen: {t3.guidance.label()}")
    return cal
