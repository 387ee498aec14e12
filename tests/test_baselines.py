"""Baselines: losses against hand computations, the trainer, ULD."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")

from t3unlearn.baselines import losses as L  # noqa: E402

FORGET = [
    {"question": "Where was Ilse Varga born?", "answer": "Ilse Varga was born in Lisbon on 3 May 1961."},
    {"question": "What genre does Tomas Reed write?", "answer": "Tomas Reed writes science fiction."},
]
RETAIN = [
    {"question": "What is the capital of France?", "answer": "The capital of France is Paris."},
    {"question": "Who writes science fiction?", "answer": "Tomas Reed writes science fiction."},
]


# ----------------------------------------------------------------------------- losses by hand


def test_sequence_logprob_and_nll_by_hand():
    # vocab 2, one sequence of 3 positions; labels: prompt at 0, answer tokens 1 (id 1) and 2 (id 0)
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(1.0), math.log(4.0)], [0.0, 0.0]]])
    labels = torch.tensor([[-100, 1, 0]])
    lp, n = L.sequence_logprob(logits, labels)
    # position 0 predicts token 1: p = 3/4; position 1 predicts token 0: p = 1/5
    expected = math.log(3 / 4) + math.log(1 / 5)
    assert n.item() == 2
    assert lp.item() == pytest.approx(expected, rel=1e-6)
    assert L.nll(logits, labels).item() == pytest.approx(-expected / 2, rel=1e-6)
    assert L.grad_ascent_loss(L.nll(logits, labels)).item() == pytest.approx(expected / 2, rel=1e-6)


def test_npo_at_reference_is_two_over_beta_log_two():
    logp = torch.tensor([-3.0, -7.5, -1.25])
    for beta in (0.1, 1.0, 2.5):
        got = L.npo_loss(logp, logp.clone(), beta).item()
        assert got == pytest.approx(2 / beta * math.log(2), rel=1e-6)
    # lower probability than the reference -> lower loss (that is what minimizing pushes toward)
    assert L.npo_loss(logp - 5, logp, 0.1) < L.npo_loss(logp, logp, 0.1)


def test_simnpo_formula():
    avg = torch.tensor([0.5, 2.0])
    beta, delta = 4.5, 0.3
    expected = -(2 / beta) * sum(math.log(1 / (1 + math.exp(-beta * (a - delta)))) for a in (0.5, 2.0)) / 2
    assert L.simnpo_loss(avg, beta, delta).item() == pytest.approx(expected, rel=1e-6)
    # a higher answer loss (more forgotten) gives a lower SimNPO loss
    assert L.simnpo_loss(avg + 1, beta, delta) < L.simnpo_loss(avg, beta, delta)


def test_graddiff_sign():
    forget_nll = torch.tensor(2.0, requires_grad=True)
    retain_nll = torch.tensor(1.5, requires_grad=True)
    total = 1.0 * L.grad_ascent_loss(forget_nll) + 1.0 * retain_nll
    total.backward()
    assert total.item() == pytest.approx(-0.5)
    assert forget_nll.grad.item() == -1.0  # descent raises the forget NLL
    assert retain_nll.grad.item() == 1.0  # and lowers the retain NLL


def test_dpo_prefers_the_win_answer():
    win = torch.tensor([-4.0], requires_grad=True)
    lose = torch.tensor([-2.0], requires_grad=True)
    ref_w, ref_l = torch.tensor([-4.0]), torch.tensor([-2.0])
    loss = L.dpo_loss(win, lose, ref_w, ref_l, beta=0.1)
    assert loss.item() == pytest.approx(2 / 0.1 * math.log(2), rel=1e-6)  # margin 0
    loss.backward()
    assert win.grad.item() < 0 < lose.grad.item()  # descent raises log p(win), lowers log p(lose)
    better = L.dpo_loss(torch.tensor([-3.0]), torch.tensor([-3.0]), ref_w, ref_l, beta=0.1)
    assert better.item() < loss.item()


def test_rmu_loss_zero_at_target_and_masked():
    target = torch.tensor([0.6, 0.8]) * 2.0
    hidden = target.expand(1, 3, 2).clone()
    mask = torch.tensor([[True, True, False]])
    hidden[0, 2] = 100.0  # masked position: ignored
    assert L.rmu_loss(hidden, target, mask).item() == 0.0
    hidden[0, 0] = torch.tensor([0.0, 0.0])
    # mean over masked positions of the mean squared error: ((1.2^2 + 1.6^2) / 2) / 2
    assert L.rmu_loss(hidden, target, mask).item() == pytest.approx((1.44 + 2.56) / 2 / 2, rel=1e-6)


def test_kl_losses_zero_at_their_targets():
    labels = torch.tensor([[-100, 1, 1]])
    logits = torch.randn(1, 3, 5)
    assert L.kl_to_ref(logits, logits.clone(), labels).item() == pytest.approx(0.0, abs=1e-6)
    assert L.kl_from_uniform(torch.zeros(1, 3, 5), labels).item() == pytest.approx(0.0, abs=1e-6)
    assert L.kl_from_uniform(logits, labels).item() > 0


# ----------------------------------------------------------------------------- trainer


def _forget_nll(model, tokenizer):
    from t3unlearn.data import QAFormatter, collate

    fmt = QAFormatter(tokenizer)
    batch = collate(fmt.encode_many([f["question"] for f in FORGET], [f["answer"] for f in FORGET]), fmt.pad_id)
    with torch.no_grad():
        return L.nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]).item()


@pytest.mark.parametrize(
    "method,direction",
    [("gradascent", +1), ("graddiff", +1), ("npo", +1), ("simnpo", +1), ("idkdpo", +1), ("uld", -1)],
)
def test_one_training_step_moves_the_forget_loss(random_lm, method, direction):
    from t3unlearn.baselines.trainer import train

    base, tok = random_lm
    model = copy.deepcopy(base)
    before = _forget_nll(model, tok)
    w0 = [p.detach().clone() for p in model.parameters()]
    params = {"gamma": 1.0, "alpha": 0.0} if method in ("simnpo", "idkdpo") else None
    if method == "uld":
        params = {"retain_weight": 0.0}
    rec = train(method, model, tok, FORGET, RETAIN, params=params,
                config={"lr": 5e-3, "epochs": 1, "batch_size": 2, "grad_accum": 1, "warmup_epochs": 0}, progress=False)
    assert rec["steps"] == 1
    assert any(not torch.equal(a, b) for a, b in zip(w0, model.parameters()))
    after = _forget_nll(model, tok)
    assert (after - before) * direction > 0, (method, before, after)


def test_rmu_step_moves_activations_toward_target_and_trains_only_mlp(random_lm):
    from t3unlearn.baselines.methods import Context, _rmu_setup, get_method
    from t3unlearn.baselines.trainer import train

    base, tok = random_lm
    model = copy.deepcopy(base)
    m = get_method("rmu")
    ctx = Context(model=model, ref=base, params=dict(m.defaults), extras={"seed": 0})
    _rmu_setup(ctx)
    rec = train("rmu", model, tok, FORGET, RETAIN,
                config={"lr": 2e-2, "epochs": 3, "batch_size": 2, "grad_accum": 1, "warmup_epochs": 0}, progress=False)
    assert rec["reference_model"] is True
    losses = [h["forget_loss"] for h in rec["history"]]
    assert losses[-1] < losses[0]
    changed = {n for (n, p), q in zip(model.named_parameters(), base.parameters()) if not torch.equal(p, q)}
    assert changed and all("mlp.down_proj" in n for n in changed)
    assert rec["trainable_params"] == sum(p.numel() for n, p in model.named_parameters() if n in changed)


def test_reference_model_only_for_methods_that_need_it(random_lm, monkeypatch):
    from t3unlearn.baselines import trainer as T

    base, tok = random_lm
    copies = []
    real = copy.deepcopy
    make_reference = T.make_reference

    def spy(model):
        copies.append(type(model).__name__)
        return make_reference(model)

    monkeypatch.setattr(T, "make_reference", spy)
    cfg = {"lr": 1e-4, "epochs": 1, "batch_size": 2, "grad_accum": 1, "max_steps": 1}
    expect = {"gradascent": False, "graddiff": False, "simnpo": False, "retrain": False, "npo": True, "idkdpo": True}
    for method, needs in expect.items():
        copies.clear()
        model = real(base)
        rec = T.train(method, model, tok, FORGET, RETAIN, config=cfg, progress=False)
        assert rec["reference_model"] is needs
        assert bool(copies) is needs, method
    copies.clear()
    rec = T.train("graddiff", real(base), tok, FORGET, RETAIN, params={"retain_loss": "kl"}, config=cfg, progress=False)
    assert rec["reference_model"] and copies


def test_training_is_deterministic_for_a_seed(random_lm):
    from t3unlearn.baselines.trainer import train

    base, tok = random_lm
    cfg = {"lr": 1e-3, "epochs": 2, "batch_size": 1, "grad_accum": 2, "seed": 3}
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    ra = train("npo", a, tok, FORGET, RETAIN, config=cfg, progress=False)
    rb = train("npo", b, tok, FORGET, RETAIN, config=cfg, progress=False)
    assert [h["loss"] for h in ra["history"]] == [h["loss"] for h in rb["history"]]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_bad_settings_are_user_errors(random_lm):
    from t3unlearn.baselines.trainer import train
    from t3unlearn.errors import T3Error

    base, tok = random_lm
    with pytest.raises(T3Error, match="no setting"):
        train("npo", copy.deepcopy(base), tok, FORGET, RETAIN, params={"betta": 1}, progress=False)
    with pytest.raises(T3Error, match="unknown key 'learning_rate'"):
        train("npo", copy.deepcopy(base), tok, FORGET, RETAIN, config={"learning_rate": 1}, progress=False)
    with pytest.raises(T3Error, match="unknown baseline"):
        train("sgd", copy.deepcopy(base), tok, FORGET, RETAIN, progress=False)


def test_unlearn_baseline_saves_safetensors(random_lm, tmp_path):
    import json

    from t3unlearn.baselines import UnlearnResult, unlearn_baseline
    from t3unlearn.lm import load_lm

    base, tok = random_lm
    res = unlearn_baseline("graddiff", copy.deepcopy(base), FORGET, RETAIN, tmp_path / "gd", tokenizer=tok,
                           config={"lr": 1e-3, "epochs": 1, "batch_size": 2, "grad_accum": 1}, progress=False)
    files = {p.name for p in (tmp_path / "gd").iterdir()}
    assert "model.safetensors" in files and "t3unlearn_baseline.json" in files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    assert isinstance(res, UnlearnResult) and res.method == "graddiff" and res.out == tmp_path / "gd"
    assert res.cost.wall_seconds > 0 and res.cost.peak_rss_mb > 100  # the process holds torch: > 100 MB
    assert res.cost.trainable_params == sum(p.numel() for p in base.parameters())
    assert res.report["steps"] == 1 and res.tokenizer is tok
    meta = json.loads((tmp_path / "gd" / "t3unlearn_baseline.json").read_text())
    assert meta["method"] == "graddiff" and meta["cost"]["trainable_params"] == res.cost.trainable_params
    lm = load_lm(str(tmp_path / "gd"))
    assert lm.generate(["Where was Ilse Varga born?"], max_new_tokens=3)


# ----------------------------------------------------------------------------- ULD


@pytest.fixture()
def uld_parts(random_lm, tmp_path):
    from t3unlearn.baselines.uld import make_assistant

    base, tok = random_lm
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    torch.manual_seed(1)
    asst = make_assistant(base, "half")
    with torch.no_grad():  # make the assistant differ from the base's first block
        for p in asst.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return base, asst, tok, tmp_path


def _direct_greedy(base, asst, alpha, ids, mask, steps):
    from t3unlearn.baselines.uld import uld_logits

    for _ in range(steps):
        with torch.no_grad():
            logits = uld_logits(base(input_ids=ids, attention_mask=mask).logits, asst(input_ids=ids, attention_mask=mask).logits, alpha)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return ids


def test_uld_forward_and_generate_match_direct_computation(uld_parts):
    from t3unlearn.baselines.uld import ULDForCausalLM

    base, asst, tok, tmp = uld_parts
    alpha = 0.7
    uld = ULDForCausalLM.from_models(base, asst, alpha=alpha, base_path=str(tmp / "base"))
    tok.padding_side = "left"
    batch = tok(["Question: Where was Ilse Varga born?\nAnswer:", "Question: capital?"], return_tensors="pt", padding=True)
    tok.padding_side = "right"
    with torch.no_grad():
        got = uld(**batch).logits
        b = torch.log_softmax(base(**batch).logits, -1)
        a = torch.log_softmax(asst(**batch).logits, -1)
    assert torch.allclose(got, torch.log_softmax(b - alpha * a, -1), atol=1e-5)
    assert torch.allclose(got.exp().sum(-1), torch.ones(got.shape[:2]), atol=1e-4)
    import warnings

    with warnings.catch_warnings():  # the cache goes by the name the installed transformers uses
        warnings.simplefilter("error", FutureWarning)
        gen = uld.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    direct = _direct_greedy(base, asst, alpha, batch["input_ids"], batch["attention_mask"], 6)
    assert gen.tolist() == direct.tolist()
    nocache = uld.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id, use_cache=False)
    assert nocache.tolist() == gen.tolist()


def test_uld_save_load_round_trip(uld_parts):
    from t3unlearn.baselines.uld import ULDForCausalLM
    from t3unlearn.lm import load_lm

    base, asst, tok, tmp = uld_parts
    uld = ULDForCausalLM.from_models(base, asst, alpha=0.5, base_path=str(tmp / "base"))
    uld.save_pretrained(tmp / "uld")
    names = {p.relative_to(tmp / "uld").as_posix() for p in (tmp / "uld").rglob("*") if p.is_file()}
    assert "uld_config.json" in names and "assistant/model.safetensors" in names
    lm = load_lm(str(tmp / "uld"))
    assert isinstance(lm.model, ULDForCausalLM) and lm.model.alpha == 0.5
    ids = tok(["Question: Where was Ilse Varga born?\nAnswer:"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(lm.model(**ids).logits, uld(**ids).logits, atol=1e-6)
    assert lm.generate(["Where was Ilse Varga born?"], max_new_tokens=4) == load_lm(str(tmp / "uld")).generate(
        ["Where was Ilse Varga born?"], max_new_tokens=4
    )


def test_saving_an_unlearned_model_never_replaces_the_base(uld_parts):
    """Both savers replace their directory whole: into the base model's own directory they would delete it. A
    non-empty directory that is no baseline output (or a file) is refused and left as it was; an earlier output of
    either kind is replaced."""
    from t3unlearn.baselines.api import save_model
    from t3unlearn.baselines.uld import ULDForCausalLM
    from t3unlearn.errors import T3Error

    base, asst, tok, tmp = uld_parts
    before = sorted(p.name for p in (tmp / "base").iterdir())
    uld = ULDForCausalLM.from_models(base, asst, alpha=0.5, base_path=str(tmp / "base"))
    for save in (lambda d: save_model(base, tok, d, {"method": "graddiff"}), uld.save_pretrained):
        with pytest.raises(T3Error, match=r"base is a non-empty directory that is not a baseline's output"):
            save(tmp / "base")
        assert sorted(p.name for p in (tmp / "base").iterdir()) == before and "model.safetensors" in before
    (tmp / "notes.txt").write_text("mine")
    with pytest.raises(T3Error, match=r"notes.txt is a file; give a directory"):
        save_model(base, tok, tmp / "notes.txt", {})
    assert (tmp / "notes.txt").read_text() == "mine"
    uld.save_pretrained(tmp / "out")
    save_model(base, tok, tmp / "out", {"method": "graddiff"})  # an earlier output (ULD's) is replaced
    assert (tmp / "out" / "t3unlearn_baseline.json").is_file() and not (tmp / "out" / "uld_config.json").exists()
    uld.save_pretrained(tmp / "out")  # and a baseline's output by ULD's
    assert (tmp / "out" / "uld_config.json").is_file()


def test_train_uld_end_to_end(random_lm, tmp_path):
    from t3unlearn.baselines import train_uld
    from t3unlearn.lm import load_lm

    base, tok = random_lm
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    res = train_uld(str(tmp_path / "base"), FORGET, RETAIN, tmp_path / "uld", params={"alpha": 0.8},
                    config={"lr": 1e-3, "epochs": 2, "batch_size": 2, "grad_accum": 1}, progress=False)
    assert res.report["assistant_layers"] == 1 and res.cost.trainable_params < sum(p.numel() for p in base.parameters())
    assert res.method == "uld" and res.model.alpha == 0.8 and res.report["steps"] == 2
    lm = load_lm(str(tmp_path / "uld"))
    assert lm.model.alpha == 0.8
    scores = lm.token_scores(lm.encode([FORGET[0]["question"]], [FORGET[0]["answer"]]))
    assert scores[0].logprob.shape[0] > 0


# ----------------------------------------------------------------------------- the Trainer underneath


def test_trainer_sees_the_seeded_pairing(random_lm):
    """Each epoch: the forget items in a seeded order, each with a seeded random retain partner, drawn in turn
    from one random.Random(seed) (the pairing the baselines have always used)."""
    import dataclasses
    import random

    from t3unlearn.baselines.methods import get_method
    from t3unlearn.baselines.trainer import train

    base, tok = random_lm
    forget = [{"question": f"Question {i}?", "answer": f"Answer {i}."} for i in range(5)]
    retain = [{"question": f"Keep {i}?", "answer": f"Kept {i}."} for i in range(3)]
    seen = []
    real = get_method("graddiff")

    def spy(ctx, batch):
        for part in ("forget", "retain"):
            seen.append((part, [tok.decode(ids, skip_special_tokens=True).split("?")[0].split()[-1]
                                for ids in batch[part]["input_ids"].tolist()]))
        return real.compute(ctx, batch)

    train(dataclasses.replace(real, compute=spy), copy.deepcopy(base), tok, forget, retain,
          config={"lr": 1e-4, "epochs": 3, "batch_size": 2, "grad_accum": 2, "seed": 7}, progress=False)
    rng, expect = random.Random(7), []
    for _ in range(3):
        order = list(range(5))
        rng.shuffle(order)
        partners = [rng.randrange(3) for _ in order]
        for s in range(0, 5, 2):
            expect.append(("forget", [str(i) for i in order[s : s + 2]]))
            expect.append(("retain", [str(j) for j in partners[s : s + 2]]))
    assert seen == expect


def test_trainer_uses_the_transformers_schedule(random_lm):
    """Linear warm-up from 0 over warmup_epochs, then linear decay (transformers' scheduler); the remainder
    micro-batch of an epoch makes its own optimizer step."""
    from t3unlearn.baselines.trainer import train

    base, tok = random_lm
    forget = FORGET * 3  # 6 items, batch 2: 3 micro-batches, 2 optimizer steps per epoch with grad_accum 2
    rec = train("gradascent", copy.deepcopy(base), tok, forget, RETAIN, progress=False,
                config={"lr": 1e-3, "epochs": 3, "batch_size": 2, "grad_accum": 2, "warmup_epochs": 1})
    lrs = [h["lr"] for h in rec["history"]]
    assert rec["steps"] == 6 and [h["epoch"] for h in rec["history"]] == [0, 0, 1, 1, 2, 2]
    assert lrs == pytest.approx([0.0, 5e-4, 1e-3, 7.5e-4, 5e-4, 2.5e-4])
    rec = train("gradascent", copy.deepcopy(base), tok, forget, RETAIN, progress=False,
                config={"lr": 1e-3, "epochs": 2, "batch_size": 2, "grad_accum": 2, "warmup_epochs": 0, "scheduler": "constant"})
    assert [h["lr"] for h in rec["history"]] == pytest.approx([1e-3] * 4)


def test_checkpoints_are_safetensors_without_pickles(random_lm, tmp_path):
    from transformers import AutoModelForCausalLM

    from t3unlearn.baselines.trainer import train

    base, tok = random_lm
    model = copy.deepcopy(base)
    train("npo", model, tok, FORGET, RETAIN, progress=False,
          config={"lr": 1e-3, "epochs": 2, "batch_size": 1, "grad_accum": 1, "checkpoint_dir": str(tmp_path / "ck"), "save_steps": 2})
    ckpts = sorted((tmp_path / "ck").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [p.name for p in ckpts] == ["checkpoint-2", "checkpoint-4"]
    files = {f.name for f in ckpts[-1].iterdir()}
    assert "model.safetensors" in files and "baseline_config.json" in files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files), files
    last = AutoModelForCausalLM.from_pretrained(ckpts[-1])
    assert all(torch.equal(p, q) for p, q in zip(last.parameters(), model.parameters()))
