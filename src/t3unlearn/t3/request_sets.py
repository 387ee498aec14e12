"""The data sets of a head's deletion requests: a request's items (:class:`DataSet`), its id and fingerprint,
the overlap checks between requests and the retain set, and their features (from the cache, or read again
from a request's recorded source and extracted). Used by :func:`t3unlearn.t3.train.unlearn` (a head's first
request) and :mod:`t3unlearn.t3.requests` (the ones after it).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from t3unlearn.errors import DataError, T3Error

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def check_id(rid: str) -> str:
    rid = str(rid)
    if not _ID_RE.match(rid):
        raise T3Error(f"request id {rid!r} is not valid; use letters, digits, '.', '_' or '-' (at most 64, e.g. req-17).")
    return rid


def text_fingerprint(questions: Sequence[str], answers: Sequence[str]) -> str:
    """Hash of a data set's items as text (questions and answers, in order): the request's fingerprint."""
    from t3unlearn.io import fingerprint

    return fingerprint("qa-v1", list(questions), list(answers))


@dataclass
class DataSet:
    """One data set on its way into a head: a deletion request or the retain set."""

    id: str | None
    questions: list[str]
    answers: list[str]
    source: str | None
    examples: list = field(default_factory=list)  # QAExample, filled by encode()
    record: dict = field(default_factory=dict)  # the record kept in t3_config.json

    @classmethod
    def load(cls, data, *, what: str, rid: str | None = None) -> "DataSet":
        """From a data source (``DIR:CONFIG``, a .jsonl file, ``tofu:forget10``, ...) or a loaded set."""
        from t3unlearn.data import load_qa, validate_qa

        source = None
        if isinstance(data, (str, Path)):
            source = str(data)
            data = load_qa(source, what=what)
            if Path(source).expanduser().is_file():  # recorded absolute: read again from anywhere (calibrate, update)
                source = str(Path(source).expanduser().resolve())
        elif hasattr(data, "column_names"):
            validate_qa(data, label=what)
        else:
            raise DataError(f"{what}: give a data source (DIR:CONFIG, FILE.jsonl, tofu:CONFIG) or a datasets.Dataset.")
        return cls(rid, _column(data, "question"), _column(data, "answer"), source)

    def encode(self, fmt) -> "DataSet":
        """Tokenize the items with ``fmt`` (:class:`~t3unlearn.t3.feature_cache.LazyExamples`: a chunk at a time, so a
        large set never sits in memory as token lists)."""
        from t3unlearn.t3.feature_cache import LazyExamples

        self.examples = LazyExamples(fmt, self.questions, self.answers)
        return self

    @property
    def fingerprint(self) -> str:
        return text_fingerprint(self.questions, self.answers)

    def make_record(self, feature_key: str, *, added: str | None = None, update: str | None = None) -> dict:
        from t3unlearn.t3.feature_cache import answer_token_counts

        rec = {"id": self.id} if self.id is not None else {}
        rec.update(items=len(self.questions), tokens=sum(answer_token_counts(self.examples)),
                   added=added or now(), fingerprint=self.fingerprint, feature_key=feature_key or None, source=self.source)
        if update is not None:
            rec["update"] = update
        self.record = rec
        return rec


def _column(ds, name: str) -> list:
    col = ds[name]
    try:
        return list(col[:])
    except TypeError:
        return list(col)


def check_new_items(new: Sequence[tuple["DataSet", list]], kept: Sequence[tuple[str, list]], retain: list | None) -> None:
    """No question in two requests, none in a request and the retain set. ``new``: ``(set, prompt hashes)``
    of the sets being added; ``kept``: ``(request id, prompt hashes)`` of the requests the head keeps;
    ``retain``: the retain set's prompt hashes (None: unknown, not checked)."""
    owner = {h: rid for rid, hashes in kept for h in (hashes or ())}
    retain_h = set(retain or ())
    for s, hashes in new:
        for h, q in zip(hashes, s.questions):
            if h in retain_h:
                raise DataError(f"request {s.id} and the retain set share the question {q!r}; remove it from the retain "
                                "set (an item cannot be both forgotten and kept).")
            if h in owner and owner[h] != s.id:
                raise DataError(f"request {s.id} repeats a question of request {owner[h]} ({q!r}); a request may not "
                                "overlap one the head covers: withdraw that one first or drop the question.")
            owner[h] = s.id


def check_retain_items(retain: "DataSet", hashes: list, kept: Sequence[tuple[str, list]]) -> None:
    """A new retain set shares no question with the requests the head covers."""
    owner = {h: rid for rid, hs in kept for h in (hs or ())}
    for h, q in zip(hashes, retain.questions):
        if h in owner:
            raise DataError(f"the retain set holds a question of request {owner[h]} ({q!r}); remove it from the retain "
                            "set (an item cannot be both forgotten and kept).")


# --------------------------------------------------------------------------- features of several sets


def gather_parts(model, sets: Sequence[DataSet], *, pad_id: int, model_fp: str | None, cache: bool = True,
                 cache_dir=None, batch_size: int = 32, shard_mb: float | None = None, device=None,
                 progress: bool = False) -> list:
    """One :class:`~t3unlearn.t3.feature_cache.Part` per encoded data set: from the cache, or extracted (streamed) once."""
    from t3unlearn.t3.feature_cache import DEFAULT_SHARD_MB, extract_part

    out = []
    for s in sets:
        desc = f"features {s.id}" if s.id else "retain features"
        out.append(extract_part(model, s.examples, pad_id=pad_id, cache=cache, cache_dir=cache_dir, model_fp=model_fp,
                                batch_size=batch_size, shard_mb=shard_mb or DEFAULT_SHARD_MB, device=device,
                                progress=progress, desc=desc))
    return out


def read_again(rec: dict, *, rid: str | None, name: str, why: str, remedy: str) -> "DataSet":
    """The items of a recorded request (or retain set) read again from its recorded source and checked
    against its fingerprint. ``why`` starts the error messages ("the features of request r2 are not cached
    and"); ``remedy`` ends them."""
    src = rec.get("source")
    if not src:
        raise T3Error(f"{why} its items were given in memory (no source recorded), so they cannot be read again; {remedy}.")
    try:
        ds = DataSet.load(src, what=name, rid=rid)
    except T3Error as exc:
        raise T3Error(f"{why} its source {src} cannot be read again ({exc}); {remedy}.") from None
    if ds.fingerprint != rec.get("fingerprint"):
        raise T3Error(f"{name}'s source {src} no longer holds the items recorded in the head (fingerprint "
                      f"{rec.get('fingerprint')}); restore it, or {remedy}.")
    return ds


def stored_part(model, rec: dict, *, rid: str | None, fmt, model_fp, cache, cache_dir, **kw):
    """``(DataSet, Part)`` of a recorded request (or retain set): the part from the feature cache when it is
    there (the record is all that is needed), else from the items re-read from the recorded source, checked
    against the record (same items, same base, same token ids) and extracted again."""
    from t3unlearn.t3.feature_cache import cache_enabled, load_part, part_key

    key = rec.get("feature_key")
    name = f"request {rid}" if rid else "the retain set"
    if cache_enabled(cache) and key:
        part = load_part(key, cache_dir, kw.get("device"))
        if part is not None:
            ds = DataSet(rid, [], [], rec.get("source"))
            ds.record = dict(rec)
            return ds, part
    remedy = "withdraw the request and add it again" if rid else "give the retain set again (--retain)"
    ds = read_again(rec, rid=rid, name=name, why=f"the features of {name} are not cached and", remedy=remedy).encode(fmt)
    if model_fp and key and part_key(model_fp, ds.examples) != key:
        raise T3Error(f"{name}'s source {rec.get('source')} no longer holds the items recorded in the head (its tokens "
                      f"differ from feature key {key}); restore it, or {remedy}.")
    ds.record = dict(rec)
    return ds, gather_parts(model, [ds], pad_id=fmt.pad_id, model_fp=model_fp, cache=cache, cache_dir=cache_dir, **kw)[0]
