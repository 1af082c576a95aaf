"""The shipped models: the Mask R-CNN weights and the evidence classifier, as package data.

They live in ``pipeline/models/`` and are installed with the package (a wheel or ``pip
install .`` carries them), found with :mod:`importlib.resources` wherever the package is,
and checked against ``pipeline/models/SHA256SUMS`` when loaded: a truncated or altered
file is an error naming it, never a silent fall-back to another detector. Files a user
gives (``detection.weights_path``, ``detection.evidence_path``) are not checksummed (they
are the user's), only loaded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path

#: the shipped files and what they are
MASKRCNN_FILE = "rts_maskrcnn.pt"
EVIDENCE_FILE = "evidence.json"
SUMS_FILE = "SHA256SUMS"


class ModelFileError(RuntimeError):
    """A shipped model file that is missing from its checksum list or does not match it."""


def models_dir() -> Path:
    """The folder of the shipped models inside the installed ``pipeline`` package."""
    return Path(str(resources.files("pipeline") / "models"))


def shipped(name: str) -> Path | None:
    """The shipped model file ``name`` (e.g. :data:`MASKRCNN_FILE`), or None if absent."""
    p = models_dir() / name
    return p if p.is_file() else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recorded_sums(folder: Path | None = None) -> dict[str, str]:
    """{file name: sha256} from the folder's ``SHA256SUMS`` (``sha256sum`` format)."""
    p = (folder or models_dir()) / SUMS_FILE
    if not p.is_file():
        return {}
    out = {}
    for line in p.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1].lstrip("*")] = parts[0]
    return out


def verify(path: Path) -> Path:
    """``path`` unchanged if it is not a shipped model, or a shipped one matching its
    recorded checksum; :class:`ModelFileError` (naming the file and both digests) if not."""
    path = Path(path)
    folder = models_dir()
    try:
        if path.resolve().parent != folder.resolve():
            return path
    except OSError:
        return path
    sums = recorded_sums(folder)
    want = sums.get(path.name)
    if want is None:
        raise ModelFileError(f"{path}: a shipped model without a checksum in {folder / SUMS_FILE}")
    got = _sha256(path)
    if got != want:
        raise ModelFileError(f"{path}: checksum mismatch (expected sha256 {want[:16]}…, file has {got[:16]}…, "
                             f"{path.stat().st_size:,} bytes): the file is corrupt or truncated; reinstall the "
                             "package or retrain (`rts train`, `rts train-evidence`)")
    return path


def record(path: Path) -> None:
    """After writing ``path`` into the shipped models folder: put its checksum into
    ``SHA256SUMS`` (atomically). Files written elsewhere are left alone."""
    path = Path(path)
    folder = path.resolve().parent
    if folder != models_dir().resolve():
        return
    sums = recorded_sums(folder)
    sums[path.name] = _sha256(path)
    text = "".join(f"{sums[n]}  {n}\n" for n in sorted(sums))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".sums-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, folder / SUMS_FILE)
