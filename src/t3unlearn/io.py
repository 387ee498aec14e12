"""Small shared utilities: atomic writes, the cache home, fingerprints, seeding.

Every file or directory the package writes goes through :func:`atomic_write` or
:func:`atomic_dir`, so an interrupted run never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask_mode(base: int) -> int:
    """``base`` with the process umask applied (what ``open``/``mkdir`` would give)."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def cache_home() -> Path:
    """Where worlds, tiny models, feature caches and reference results are kept.

    ``$T3UNLEARN_HOME`` if set, else ``~/.cache/t3unlearn``.
    """
    root = os.environ.get("T3UNLEARN_HOME")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "t3unlearn"


def _temp_prefix(path: Path) -> str:
    """Temporary names beside ``path`` carry the writer's pid, so a later writer can tell the leftovers
    of a killed process (``kill -9``) from a live one's work in progress and remove them."""
    return f".{path.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Delete what killed writers left beside ``path``: temporary files or directories of
    :func:`atomic_write` / :func:`atomic_dir` and set-aside old copies, whose pid is no longer running."""
    path = Path(path)
    try:
        siblings = list(path.parent.glob(f".{glob.escape(path.name)}.*"))
    except OSError:
        return
    for p in siblings:
        rest = p.name[len(path.name) + 2 :]
        head = rest.split(".", 1)[0]
        if rest.startswith("old-"):
            head = rest[4:].split(".", 1)[0]
        elif not rest.endswith(".tmp"):
            continue
        if not head.isdigit() or _pid_alive(int(head)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _umask_mode(0o666))  # mkstemp makes 0600; give the usual permissions
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):  # disk full, ...: name the file being written
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def check_replaceable(path: str | os.PathLike, marker: str | tuple[str, ...], what: str, *, error=None,
                      option: str | None = None) -> None:
    """``path`` may be written whole (:func:`atomic_dir` replaces it): it is new, an empty directory, or an earlier
    output -- a directory holding the file ``marker`` (or one of several). A file, or a directory of anything else (a user's own files, a
    model beside which a head is saved), is refused with ``error`` (default :class:`~t3unlearn.errors.T3Error`),
    before any work and never deleted. ``what`` names what ``marker`` marks ("a T3 head")."""
    from t3unlearn.errors import T3Error

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise (error or T3Error)(f"{path} is a file; give a directory.", option=option)
    markers = (marker,) if isinstance(marker, str) else marker
    if path.is_dir() and not any((path / m).is_file() for m in markers) and any(path.iterdir()):
        raise (error or T3Error)(f"{path} is a non-empty directory that is not {what} (it would be replaced whole); "
                                 "choose a new or empty directory.", option=option)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = True, marker: str | tuple[str, ...] | None = None,
               what: str = "an earlier output",
               error=None) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only on success.

    With ``marker``, ``path`` must be new, empty or hold that file (:func:`check_replaceable`), so a user's
    directory is never replaced. Two processes writing the same ``path`` at once (two runs filling the same cache
    entry) both succeed: the last one's directory is what remains, whole.
    """
    path = Path(path)
    if marker is not None:
        check_replaceable(path, marker, what, error=error)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    os.chmod(tmp, _umask_mode(0o777))
    try:
        yield tmp
        _move_dir_into_place(tmp, path, overwrite)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc.filename, bytes):
            name = str(exc.filename) if exc.filename is not None else str(tmp)
            if name.startswith(str(tmp)):  # disk full, ...: name the entry being written, not its temporary
                raise OSError(exc.errno, exc.strerror or str(exc), str(path) + name[len(str(tmp)):]) from exc
        raise


def _move_dir_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    for _ in range(100):
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} already exists")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-{os.getpid()}.", dir=path.parent))
            try:
                os.replace(path, old / "entry")  # set the current one aside (another writer may race us)
            except FileNotFoundError:
                shutil.rmtree(old, ignore_errors=True)
                continue
            try:
                os.replace(tmp, path)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    os.replace(old / "entry", path)  # put the old one back
                    shutil.rmtree(old, ignore_errors=True)
                    raise
                shutil.rmtree(old, ignore_errors=True)
                continue  # another writer got there first: go round again
            shutil.rmtree(old, ignore_errors=True)
            return
        try:
            os.replace(tmp, path)
            return
        except OSError as exc:  # another writer created it since we looked
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise OSError(errno.EBUSY, f"could not move the new {path.name} into place (other writers keep replacing it)", str(path))


def save_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON atomically; returns the path."""
    with atomic_write(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent, sort_keys=False, ensure_ascii=False)
        fh.write("\n")
    return Path(path)


def load_json(path: str | os.PathLike) -> Any:
    """Read JSON, turning a missing or corrupt file into a clear :class:`T3Error`."""
    from t3unlearn.errors import T3Error

    path = Path(path)
    if not path.is_file():
        raise T3Error(f"{path} does not exist; check the path.")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise T3Error(f"{path} is not valid JSON ({exc}); the file is corrupt, recreate it.") from None


def fingerprint(*parts: Any, length: int = 16) -> str:
    """A stable short hash of JSON-serializable parts (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def file_fingerprint(path: str | os.PathLike, length: int = 16) -> str:
    """sha256 of a file's bytes (or of every file under a directory, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:length]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def choose_threads(setting: str | int | None = "auto") -> tuple[int | None, str]:
    """Torch CPU threads for ``--threads``: ``(n or None for torch's default, reason)``.

    ``auto`` never oversubscribes the machine: ``cores - int(load)`` threads, at least one, where
    ``load`` is the 1-minute load average. On a shared machine torch's threads spin waiting for each
    other at every operation; measured on 2 busy cores, one thread scored and generated 4-15x faster
    than two. ``0`` means torch's own default.
    """
    from t3unlearn.errors import T3Error

    if setting is None or str(setting) == "auto":
        cores = os.cpu_count() or 1
        try:
            load = os.getloadavg()[0]
        except OSError:  # pragma: no cover - not on every platform
            return None, "default"
        n = max(1, min(cores, cores - int(load)))
        if n < cores:
            return n, f"machine busy (load {load:.1f} on {cores} cores): {n} torch thread(s); --threads to override"
        return n, f"{n} torch threads ({cores} cores, load {load:.1f})"
    try:
        n = int(setting)
    except (TypeError, ValueError):
        raise T3Error(f"must be a number, 0 (torch's default) or auto, not {setting!r}.", option="threads") from None
    if n < 0:
        raise T3Error(f"must be >= 1 (or 0 for torch's default, or auto), not {n}.", option="threads")
    return (None, "torch's default") if n == 0 else (n, "--threads")


@contextlib.contextmanager
def torch_threads(setting: str | int | None = "auto", *, log=None) -> Iterator[int]:
    """Run the block with torch's CPU thread count chosen by :func:`choose_threads`; the previous
    count is restored afterwards. Yields the count in effect. ``log`` (e.g. ``print``) gets one line
    saying what was chosen and why. Commands own this; library functions never change threads."""
    import torch

    n, why = choose_threads(setting)
    saved = torch.get_num_threads()
    if n is not None and n != saved:
        torch.set_num_threads(n)
    if log is not None:
        log(f"torch threads: {torch.get_num_threads()} ({why})")
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != saved:
            torch.set_num_threads(saved)


def replace_section(text: str, begin: str, end: str, block: str) -> str:
    """``text`` with the section from the marker ``begin`` to ``end`` replaced by ``block`` (which carries
    both markers), or with ``block`` appended when the markers are not there: generated sections of docs.
    A marker without its partner, or the end before the beginning, is refused (a ``ValueError``): replacing
    from a stray marker would delete the hand-written text after it."""
    has_begin, has_end = begin in text, end in text
    if has_begin != has_end or (has_begin and text.index(end) < text.index(begin)):
        there, missing = (begin, end) if has_begin else (end, begin)
        raise ValueError(f"has the marker {there!r} without {missing!r} after it; restore the missing marker "
                         "or delete the stray one, then rerun")
    if has_begin:
        pre, rest = text.split(begin, 1)
        _, post = rest.split(end, 1)
        return pre + block + post
    return text.rstrip() + "\n\n" + block + "\n"

