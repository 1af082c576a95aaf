"""Product files are streamed by signed links (dashboard.files): only a valid, unexpired
signature for a published file inside the products folder opens one."""

from __future__ import annotations

import time
import urllib.parse

import pytest

from dashboard import files
from data_products import schema


def _parts(url: str) -> tuple[str, str, str]:
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qs(u.query)
    assert u.path.startswith(f"/{files.ROUTE}/")
    return urllib.parse.unquote(u.path[len(files.ROUTE) + 2:]), q["expires"][0], q["sig"][0]


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / schema.INVENTORY).write_bytes(b"PAR1")
    (tmp_path / "jobs.sqlite").write_bytes(b"queue")
    (tmp_path / "tiles" / "37_22_2_1_15_14").mkdir(parents=True)
    (tmp_path / "tiles" / "37_22_2_1_15_14" / "dh.tif").write_bytes(b"II*")
    return tmp_path


def test_a_signed_link_opens_its_published_file(folder):
    for rel in (schema.INVENTORY, "tiles/37_22_2_1_15_14/dh.tif"):
        assert files.resolve(folder, *_parts(files.signed_url(rel))) == (folder / rel).resolve()


def test_a_tampered_or_expired_link_is_refused_with_403(folder):
    rel, exp, sig = _parts(files.signed_url(schema.INVENTORY))
    for args in [(rel, exp, "0" * 64), (rel, str(int(exp) + 1), sig), ("jobs.sqlite", exp, sig), (rel, "soon", sig),
                 (rel, exp, None)]:
        with pytest.raises(files.FileRefused) as e:
            files.resolve(folder, *args)
        assert e.value.status == 403
    with pytest.raises(files.FileRefused, match="expired") as e:
        files.resolve(folder, rel, exp, sig, now=time.time() + files.LINK_LIFETIME_S + 5)
    assert e.value.status == 403


@pytest.mark.parametrize("rel", ["jobs.sqlite", "../outside.parquet", "/etc/passwd", "missing.parquet",
                                 "tiles/not_a_cell/dh.tif"])
def test_a_signed_link_never_opens_what_is_not_published(folder, rel):
    (folder.parent / "outside.parquet").write_bytes(b"x")
    with pytest.raises(files.FileRefused) as e:
        files.resolve(folder, *_parts(files.signed_url(rel)))
    assert e.value.status == 404
