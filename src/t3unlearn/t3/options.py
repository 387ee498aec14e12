"""Options shared by the commands that load a model and a head: argparse types, T3's guidance knobs and
calibration grids. No torch at import time (``--help`` stays fast)."""

from __future__ import annotations

import argparse

from t3unlearn.flags import deprecated_alias

from t3unlearn.errors import ModelError
from t3unlearn.t3.config import GUIDANCE_KNOBS, GUIDANCE_META, Guidance, check_knob, knob_flag


def _int_at_least(low: int):
    """An argparse type: a whole number >= ``low``, else argparse's one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1)
nonneg_int = _int_at_least(0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0, else argparse's one-line error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def add_guidance_options(g, *, saved: bool = False, knobs=GUIDANCE_KNOBS) -> None:
    """One option per :class:`Guidance` knob (of ``knobs``), generated from its field's metadata (help, bounds,
    metavar): each is checked as it is parsed, with the message :meth:`Guidance.validate` gives; an option not given
    is None. ``saved``: the knobs override a head's saved guidance (the help says so beside the default)."""
    d = Guidance()
    for name in knobs:
        m = GUIDANCE_META[name]
        default = getattr(d, name)
        shown = "off" if default is None else (f"{default:g}" if isinstance(default, float) else default)
        shown = f"the head's saved value; {shown}" if saved else shown
        metavar = m["metavar"] and (f"{m['metavar']}|none" if m["optional"] else m["metavar"])
        g.add_argument(knob_flag(name), dest=name, default=None, type=_knob_type(name), metavar=metavar,
                       choices=m["choices"], help=f"{m['help']}{'; none turns it off' if m['optional'] else ''} [{shown}]")


def _knob_type(name: str):
    """An argparse type for the guidance knob ``name``: its value as :func:`check_knob` reads it (``"none"`` for an
    optional knob turned off), else argparse's one-line error with the knob's message."""

    def parse(text: str):
        try:
            value = check_knob(name, text)
        except ModelError as exc:
            raise argparse.ArgumentTypeError(str(exc).rstrip(".")) from None  # argparse adds its own ending
        return "none" if value is None else value

    parse.__name__ = name  # argparse names the type in some errors
    return parse


def guidance_overrides(args, model_path: str | None = None) -> dict:
    """The guidance options given on the command line; with ``model_path``, an error when they are given but
    there is no head to apply them to (neither ``--head`` nor a head directory as the model)."""
    kw = Guidance.changes_from(args)
    if kw and model_path is not None and getattr(args, "head", None) is None and not _is_head_dir(model_path):
        from t3unlearn.errors import T3Error

        given = [knob_flag(k) for k in GUIDANCE_KNOBS if k in kw]
        raise T3Error(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} T3's guidance and "
                      f"need{'s' if len(given) == 1 else ''} a head: add --head DIR, or give a head directory as "
                      "--model.")
    return kw


def _is_head_dir(path: str) -> bool:
    from pathlib import Path

    return (Path(path) / "t3_config.json").is_file()


def add_calibration_options(c) -> None:
    from t3unlearn.t3.config import CALIBRATION_SCALES as DEFAULT_SCALES
    from t3unlearn.t3.config import CALIBRATION_TEMPERATURES as DEFAULT_TEMPERATURES
    from t3unlearn.t3.config import CALIBRATION_SUPPORTS as DEFAULT_SUPPORTS
    from t3unlearn.t3.config import CALIBRATION_TEMPERINGS as DEFAULT_TEMPERINGS
    from t3unlearn.t3.config import CALIBRATION_COPY_FLOORS

    copy_default = ",".join("none" if c is None else f"{c:g}" for c in CALIBRATION_COPY_FLOORS)
    words = ("without either option: whole words (piece floor 10, spelling base) and plain tokens (none, guided), "
             "whole words kept unless plain tokens match the reference better by more than the KS test can tell apart")
    mia_default = 0.075  # t3unlearn.t3.calibrate.MIA_TOLERANCE (not imported: --help stays free of numpy and torch)

    c.add_argument("--holdout", default=None, metavar="SOURCE",
                   help="items like the forget set that the model never trained on, and that the evaluation does not "
                        "read (a benchmark's holdout is refused) [world:calibration for world:forgetXX; tofu:calibration "
                        "(20 authors no tiny TOFU model trains on) for tofu:forgetXX]")
    c.add_argument("--pretrained", default=None, metavar="MODEL",
                   help="a model that never saw the forget set and shares the base's tokenizer -- the checkpoint the "
                        "base was fine-tuned from (tofu:pretrained, world:pretrained). T and s are then chosen so the "
                        "forget items' truth ratios look like its (what TOFU's forget quality tests); not used when the "
                        "holdout's items carry perturbed answers, whose truth ratios under the base are then the "
                        "reference [off: forget vs holdout answer losses]")
    deprecated_alias(c, "--reference-model", "--pretrained", dest="pretrained")
    c.add_argument("--oracle", default=None, metavar="MODEL",
                   help="a model that never saw the forget set, e.g. the retain model (tofu:retain90, world:retain90): "
                        "every setting is also scored with TOFU's forget quality and privleak against it and the "
                        "oracle's pick is printed beside the chosen one -- never used to choose [off]")
    c.add_argument("--perturbed", default=None, metavar="SOURCE",
                   help="with --pretrained or --oracle: the forget items' paraphrased and perturbed answers [FORGET_perturbed "
                        "for tofu:forgetXX / world:forgetXX, else the forget set's own fields]")
    c.add_argument("--mia-tolerance", type=float, default=mia_default,
                   help="the forget-vs-holdout membership (min-k) AUC must stay within 0.5 ± this: the forget answers' "
                        "least likely tokens must look as unfamiliar as a never-seen answer's (privleak) [%(default)s]")
    c.add_argument("--tolerance", type=float, default=0.03, help="allowed relative loss of retain answer probability [0.03]")
    c.add_argument("--temperatures", default=",".join(f"{t:g}" for t in DEFAULT_TEMPERATURES), help="grid of T [%(default)s]")
    c.add_argument("--scales", default=",".join(f"{s:g}" for s in DEFAULT_SCALES), help="grid of s [%(default)s]")
    c.add_argument("--temperings", default=",".join(DEFAULT_TEMPERINGS), help="grid of tempering modes [%(default)s]")
    c.add_argument("--biases", default="0", help="grid of head-logit biases (> 0 reads ambiguous tokens as retained: "
                   "less tilt and tempering where the head is unsure) [%(default)s]")
    c.add_argument("--supports", default=",".join(f"{q:g}" for q in DEFAULT_SUPPORTS),
                   help="grid of support-gate quantiles, 'none' for the gate off (e.g. none,0.95,0.99; see --support; "
                        "a head saved before the gate existed needs none) [%(default)s]")
    c.add_argument("--tails", default="none",
                   help="grid of tail guards: log-probabilities below which tempering lifts no token, 'none' for no "
                        "guard (e.g. none,-16: tokens with p < 1e-7 keep the base's slope; see --tail-logp; a list that starts with "
                        "a negative value needs '=': --tails=-16,-9) [%(default)s]")
    c.add_argument("--floors", default="none",
                   help="grid of head floors: head logits below which the tilt pushes no further, 'none' for no floor "
                        "(e.g. none,-6.5; see --floor; a list that starts with a negative value needs '=': "
                        "--floors=-6.5,-5) [%(default)s]")
    c.add_argument("--copy-floors", default=copy_default,
                   help="grid of copy exemptions: the head logit below which a token already in the context (the "
                        "question's names) is not read, 'none' for no exemption (e.g. none,4; see --copy-floor) "
                        "[%(default)s]")
    c.add_argument("--piece-floors", default=None,
                   help="grid of word-piece exemptions: the head logit below which a token that continues a word is not "
                        "read, 'none' for no exemption (e.g. none,10; see --piece-floor; the head needs a word-piece "
                        "table); with --spellings, every pair is scored [" + words + "]")
    c.add_argument("--spellings", default=None,
                   help="grid of spellings: guided (a word's later pieces are tempered and tilted like any token) or "
                        "base (they keep the base's probability; see --spelling; the head needs a word-piece table), "
                        "e.g. guided,base [10 for --piece-floors and base for --spellings when only the other is given; "
                        "without either, see --piece-floors]")


def add_force_option(parser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="use the head on a base whose fingerprint differs from the one it was trained on (only if you "
                             "know they are the same model, e.g. re-saved) [refuse]")


def check_writable(path, option: str = "out") -> None:
    """A T3Error unless ``path`` (a directory to write, perhaps not there yet) can be written: checked before any
    work, so a read-only place fails at once rather than after extraction, training or evaluation."""
    import os
    from pathlib import Path

    from t3unlearn.errors import T3Error

    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise T3Error(f"--{option} {out} is a file; give a directory.")
    probe = out if out.is_dir() else next((q for q in out.parents if q.exists()), Path("."))
    if not probe.is_dir():
        raise T3Error(f"--{option} {out}: {probe} is a file, not a directory; choose another path.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise T3Error(f"--{option} {out} cannot be written ({probe} is read-only for you); choose a writable directory.")


def _check_out(path, *, overwrite: bool = True) -> None:
    """``--out`` of a head: a new or empty directory, or (with ``overwrite``) an existing head; writable."""
    from pathlib import Path

    from t3unlearn.errors import T3Error
    from t3unlearn.io import check_replaceable

    out = Path(path)
    check_replaceable(out, "t3_config.json", "a T3 head", option="out")
    if not overwrite and (out / "t3_config.json").is_file():
        raise T3Error(f"--out {out} already holds a T3 head (and its request history); add --overwrite to replace it, "
                      f"choose another --out, or update it with --head {out} --add-forget SOURCE.")
    check_writable(out)


def _check_long_items(tokenizer, forget, retain, max_length: int) -> None:
    """A note (stderr) when items are longer than ``--max-length`` tokens: they are cut, and what is cut is not learnt."""
    import sys

    for name, ds in (("forget", forget), ("retain", retain)):
        texts = [f"{q} {a}" for q, a in zip(ds["question"], ds["answer"])]
        long = [i for i, t in enumerate(texts) if len(t.encode()) > max_length and len(tokenizer(t)["input_ids"]) > max_length]
        if long:
            print(f"note: {len(long)} {name} item(s) (e.g. item {long[0]}) are longer than --max-length {max_length} tokens "
                  "and are cut there; what is cut is neither learnt nor forgotten (raise --max-length to keep them whole).",
                  file=sys.stderr)
