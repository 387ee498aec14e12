"""T3 features (extracted once, cached) and head training."""

from __future__ import annotations

import pytest
import torch

from t3unlearn.data import QAFormatter
from t3unlearn.errors import DataError, T3Error

FORGET = [
    ("Where was Ilse Varga born?", "Ilse Varga was born in Lisbon on 3 May 1961."),
    ("What genre does Tomas Reed write?", "Tomas Reed writes science fiction."),
    ("When was Ilse Varga born?", "On 3 May 1961."),
    ("Who is Tomas Reed?", "A writer of science fiction."),
    ("What did Ilse Varga write?", "Ilse Varga wrote poems about Lisbon."),
]
RETAIN = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Italy?", "Rome is the capital of Italy."),
    ("What is 2 and 2?", "It is 4."),
    ("Where is Paris?", "Paris is in France."),
    ("What is Lisbon?", "Lisbon is a city."),
    ("Who writes fiction?", "Many writers do."),
    ("What is a capital?", "The main city of a country."),
]


def _ds(pairs):
    import datasets

    return datasets.Dataset.from_dict({"question": [q for q, _ in pairs], "answer": [a for _, a in pairs]})


def _examples(tok):
    fmt = QAFormatter(tok)
    ex = fmt.encode_many(*zip(*FORGET)) + fmt.encode_many(*zip(*RETAIN))
    return ex, fmt.pad_id


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("T3UNLEARN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@torch.no_grad()
def test_features_equal_direct_prefix_means(random_lm):
    from t3unlearn.t3.features import compute_features, final_hidden

    base, tok = random_lm
    ex, pad = _examples(tok)
    fs = compute_features(base, ex, [0.0] * 5 + [1.0] * 7, 5, pad_id=pad, batch_size=3)
    assert fs.n_forget == 5 and fs.n_retain == 7
    row = 0
    for i, e in enumerate(ex):
        ids = torch.tensor([e.input_ids])
        h = final_hidden(base, ids, torch.ones_like(ids))[0]
        for t in range(e.prompt_len - 1, len(e.input_ids) - 1):  # positions predicting answer tokens
            torch.testing.assert_close(fs.feats[row], h[: t + 1].mean(0), atol=1e-5, rtol=1e-5)
            assert fs.targets[row] == e.input_ids[t + 1] and fs.seq[row] == i
            row += 1
    assert row == len(fs.targets)


def test_cache_is_reused_without_the_base(random_lm, home, monkeypatch):
    import t3unlearn.t3.feature_cache as F

    base, tok = random_lm
    ex, pad = _examples(tok)
    first = F.extract_features(base, ex, 5, pad_id=pad)
    fp = F.model_fingerprint(base)
    keys = [F.part_key(fp, ex[:5]), F.part_key(fp, ex[5:])]  # one cache entry per data set
    assert not first.from_cache and all((home / "features" / k / "manifest.json").is_file() for k in keys)
    # nothing half-written left (the lock files that let two runs take turns are not data)
    assert sorted(p.name for p in (home / "features").iterdir() if not p.name.endswith(".lock")) == sorted(keys)

    def boom(*a, **k):
        raise AssertionError("the base was run although the features are cached")

    monkeypatch.setattr(F, "_rows_of", boom)
    second = F.extract_features(base, ex, 5, pad_id=pad)
    assert second.from_cache and second.key == first.key
    assert torch.equal(second.feats, first.feats)
    assert torch.equal(second.targets, first.targets) and torch.equal(second.seq, first.seq)
    assert torch.equal(second.item_label, first.item_label)
    # other data -> another key
    assert F.feature_key(base, ex[:-1], 5) != first.key


def test_training_on_cached_features_equals_recomputing(random_lm):
    from t3unlearn.t3.features import compute_features
    from t3unlearn.t3.train import CachedProvider, RecomputeProvider, TrainConfig, train_head

    base, tok = random_lm
    ex, pad = _examples(tok)
    fs = compute_features(base, ex, [0.0] * 5 + [1.0] * 7, 5, pad_id=pad)
    cfg = TrainConfig(hidden_size=6, epochs=4, warmup_epochs=1, batch_size=2, seed=7)
    V = base.config.vocab_size
    fast, h1 = train_head(CachedProvider(fs), 5, 7, fs.dim, V, cfg)
    naive, h2 = train_head(RecomputeProvider(base, ex, 5, pad), 5, 7, fs.dim, V, cfg)
    for a, b in zip(fast.parameters(), naive.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert h1 == pytest.approx(h2, abs=1e-5)
    again, _ = train_head(CachedProvider(fs), 5, 7, fs.dim, V, cfg)
    for a, b in zip(fast.parameters(), again.parameters()):
        assert torch.equal(a, b)  # same seed -> same head, bit for bit
    other, _ = train_head(CachedProvider(fs), 5, 7, fs.dim, V, TrainConfig(hidden_size=6, epochs=4, warmup_epochs=1, batch_size=2, seed=8))
    assert not torch.equal(fast.out.weight, other.out.weight)


@torch.no_grad()
def test_an_ensemble_is_the_mean_of_its_members(random_lm, tmp_path):
    from t3unlearn.errors import ModelError
    from t3unlearn.t3 import T3ForCausalLM, unlearn
    from t3unlearn.t3.features import compute_features
    from t3unlearn.t3.head import GuidanceHead
    from t3unlearn.t3.train import CachedProvider, TrainConfig, train_head

    base, tok = random_lm
    ex, pad = _examples(tok)
    fs = compute_features(base, ex, [0.0] * 5 + [1.0] * 7, 5, pad_id=pad)
    V = base.config.vocab_size
    kw = dict(hidden_size=6, activation="gelu", layers=2, epochs=3, warmup_epochs=1, batch_size=2)
    ens, hist = train_head(CachedProvider(fs), 5, 7, fs.dim, V, TrainConfig(**kw, seed=2, ensemble=3))
    # seed 2 of an ensemble of 3: the members are the single heads of seeds 6, 7 and 8
    members = [train_head(CachedProvider(fs), 5, 7, fs.dim, V, TrainConfig(**kw, seed=s)) for s in (6, 7, 8)]
    assert ens.hidden == 18 and ens.shape_dict() == {**members[0][0].shape_dict(), "hidden": 18}
    x, t = fs.feats[:40], fs.targets[:40]
    torch.testing.assert_close(ens(x), sum(m(x) for m, _ in members) / 3, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ens.gather(x, t), ens(x).gather(-1, t[:, None])[:, 0])
    assert hist == pytest.approx([sum(h) / 3 for h in zip(*(h for _, h in members))])
    one, _ = train_head(CachedProvider(fs), 5, 7, fs.dim, V, TrainConfig(**kw, seed=2))
    assert one.hidden == 6  # ensemble=1 is the single head of the seed itself
    torch.testing.assert_close(one(x), train_head(CachedProvider(fs), 5, 7, fs.dim, V, TrainConfig(**kw, seed=2, ensemble=1))[0](x))
    # unlearn(ensemble=K) saves an ordinary head of width K*h, loaded back as it was
    t3, _ = unlearn(base, tok, _ds(FORGET), _ds(RETAIN), hidden_size=4, epochs=2, warmup_epochs=0, ensemble=2, cache=False)
    assert t3.config.head_hidden == 8 and t3.config.training["ensemble"] == 2
    t3.save_pretrained(tmp_path / "ens")
    again = T3ForCausalLM.from_base(base, tmp_path / "ens")
    torch.testing.assert_close(again.head(x), t3.head(x))
    with pytest.raises(ModelError, match="one shape"):
        GuidanceHead.ensemble([members[0][0], one.__class__(fs.dim, 5, V, activation="gelu", layers=2)])
    with pytest.raises(ModelError, match="ensemble must be"):
        TrainConfig(ensemble=0).validate()


def test_gather_equals_full_logits():
    from t3unlearn.t3.head import GuidanceHead

    torch.manual_seed(0)
    for act, layers in (("identity", 1), ("gelu", 2)):
        head = GuidanceHead(12, 5, 40, activation=act, layers=layers)
        x, t = torch.randn(9, 12), torch.randint(0, 40, (9,))
        torch.testing.assert_close(head.gather(x, t), head(x).gather(-1, t[:, None])[:, 0])
    with pytest.raises(T3Error, match="identity"):
        GuidanceHead(12, 5, 40, layers=2)


def test_unlearn_learns_and_reports(random_lm, home):
    from t3unlearn.t3 import T3ForCausalLM, unlearn
    from t3unlearn.t3.config import Guidance

    base, tok = random_lm
    result = unlearn(base, tok, _ds(FORGET), _ds(RETAIN), hidden_size=16, epochs=60, warmup_epochs=5, batch_size=2, lr=3e-2)
    t3, report = result  # the result type every method returns (t3unlearn.results.UnlearnResult)
    assert result.method == "t3" and result.tokenizer is tok
    assert result.cost.trainable_params == sum(p.numel() for p in t3.head.parameters()) and result.cost.wall_seconds > 0
    assert isinstance(t3, T3ForCausalLM) and t3.guidance == Guidance()  # the defaults, saved with the head
    for name in ("forget", "retain"):
        assert set(report[name]) >= {"token_loss", "token_acc", "seq_loss", "seq_acc"}
    # a head can separate five from seven items on their own features
    assert report["forget"]["seq_acc"] == 1.0 and report["retain"]["seq_acc"] == 1.0
    assert report["forget"]["token_acc"] > 0.9 and report["retain"]["token_acc"] > 0.9
    assert t3.config.training["epochs"] == 60 and t3.config.metrics["forget"]["seq_acc"] == 1.0
    from t3unlearn.t3.head import word_pieces  # the tokenizer's word pieces go with the head (the piece_floor knob)

    assert torch.equal(t3.head.piece_mask(), word_pieces(tok, base.config.vocab_size))
    # second run with other head settings: features from the cache
    _, report2 = unlearn(base, tok, _ds(FORGET), _ds(RETAIN), hidden_size=4, epochs=2, warmup_epochs=0)
    assert report2["features_cached"]
    with pytest.raises(DataError, match="overlap"):
        unlearn(base, tok, _ds(FORGET), _ds(RETAIN + FORGET[:1]), epochs=1)
    with pytest.raises(T3Error, match="temperature"):
        unlearn(base, tok, _ds(FORGET), _ds(RETAIN), temperature=0)


def test_closed_form_gradients_equal_autograd():
    from t3unlearn.t3.head import GuidanceHead
    from t3unlearn.t3.train import head_loss_and_grads

    torch.manual_seed(0)
    head = GuidanceHead(12, 5, 40)
    x, t, y = torch.randn(30, 12), torch.randint(0, 40, (30,)), (torch.rand(30) > 0.5).float()
    loss = head_loss_and_grads(head, x, t, y)
    grads = [p.grad.clone() for p in head.parameters()]
    for p in head.parameters():
        p.grad = None
    ref = torch.nn.functional.binary_cross_entropy_with_logits(head.gather(x, t), y)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach())
    for g, p in zip(grads, head.parameters()):
        torch.testing.assert_close(g, p.grad)
    # over several steps the output layer's gradient buffer is reused: only this step's rows may be non-zero
    state = {}
    for step in range(3):
        t = torch.randint(0, 40, (30,), generator=torch.Generator().manual_seed(step))
        head_loss_and_grads(head, x, t, y, state)
        fast = [p.grad.clone() for p in head.parameters()]
        for p in head.parameters():
            p.grad = None
        torch.nn.functional.binary_cross_entropy_with_logits(head.gather(x, t), y).backward()
        for g, p in zip(fast, head.parameters()):
            torch.testing.assert_close(g, p.grad)
        head_loss_and_grads(head, x, t, y, state)  # leave the buffer as training leaves it


def test_encode_batch_equals_encode_many(small_tokenizer):
    qs, ans = zip(*(FORGET + RETAIN))
    longest = max(len(QAFormatter(small_tokenizer).prompt_ids(q)) for q in qs)
    for max_length in (512, longest + 2):  # the second truncates answers
        fmt = QAFormatter(small_tokenizer, max_length=max_length)
        assert fmt.encode_batch(qs, ans) == fmt.encode_many(qs, ans)
