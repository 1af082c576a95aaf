"""The package as users install it: a wheel carrying the models, found and verified from an
installed copy (not the repository), and a Dockerfile that installs that wheel alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                        "-w", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("rts_volumetrics-*.whl")
    return whl, r.stdout + r.stderr


def test_the_wheel_carries_the_models_and_no_scaffolding(wheel):
    whl, log = wheel
    names = set(zipfile.ZipFile(whl).namelist())
    for f in ("pipeline/models/rts_maskrcnn.pt", "pipeline/models/evidence.json", "pipeline/models/SHA256SUMS",
              "dashboard/asgi.py", "dashboard/views/map.py", "data_products/arctic_land.geojson"):
        assert f in names, f
    assert not [n for n in names if n.startswith(("tests/", "runs/", "benchmarks/", "dashboard/static/cache/"))]
    meta = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
    assert re.search(r"^License-Expression: MIT$", meta, re.M)
    assert any(n.endswith("dist-info/licenses/LICENSE") for n in names)
    assert "deprecat" not in log.lower(), log  # the build (as make setup's) warns of nothing


def _installed(tmp_path: Path, whl: Path) -> Path:
    site = tmp_path / "site"
    zipfile.ZipFile(whl).extractall(site)  # a wheel is installed by unpacking it
    return site


def _py(site: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_an_installed_copy_finds_and_loads_its_own_weights(wheel, tmp_path):
    site = _installed(tmp_path, wheel[0])
    r = _py(site, """
import json, pipeline
from pipeline.detection import maskrcnn
from pipeline.detection import weights
from pipeline.config import DetectionConfig
from pipeline.detection.detect import load_detector
from pipeline.detection.evidence import EvidenceModel
p = maskrcnn.weights_file()
det = load_detector(DetectionConfig(method="maskrcnn"))
ev = EvidenceModel.load()
print(json.dumps({"package": pipeline.__file__, "weights": str(p), "detector": type(det).__name__,
                  "chip_px": det.chip_px, "evidence": len(ev.features)}))
""", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["package"].startswith(str(site)), out  # the installed copy, not the repository
    assert out["weights"] == str(site / "pipeline" / "models" / "rts_maskrcnn.pt")
    assert out["detector"] == "Detector" and out["chip_px"] == 256 and out["evidence"] > 5


def test_a_corrupt_shipped_model_is_an_error_naming_it(wheel, tmp_path):
    site = _installed(tmp_path, wheel[0])
    pt = site / "pipeline" / "models" / "rts_maskrcnn.pt"
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])  # truncated, as by an interrupted copy
    ev = site / "pipeline" / "models" / "evidence.json"
    ev.write_text(ev.read_text().replace('"threshold"', '"threshold_"', 1) + " ")
    r = _py(site, """
from pipeline.detection import maskrcnn
from pipeline.detection.evidence import EvidenceModel
for load in (lambda: maskrcnn.Detector.load(maskrcnn.weights_file()), EvidenceModel.load):
    try:
        load()
        print("loaded")
    except Exception as exc:
        print(type(exc).__name__, exc)
""", tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("ModelFileError") and "rts_maskrcnn.pt: checksum mismatch" in lines[0]
    assert "corrupt or truncated" in lines[0]
    assert lines[1].startswith("ModelFileError") and "evidence.json: checksum mismatch" in lines[1]


def test_the_recorded_checksums_match_the_shipped_files():
    from pipeline.detection import weights

    sums = weights.recorded_sums()
    assert {"rts_maskrcnn.pt", "evidence.json"} <= set(sums)
    for name in sums:
        assert weights.verify(weights.models_dir() / name)


def test_pyproject_gives_the_licence_as_spdx():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT" and meta["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_the_dockerfile_installs_the_wheel_alone_as_a_user_without_root():
    text = (REPO / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):]  # the runtime stage
    assert "-m build --wheel" in text and re.search(r"pip install [^\n]*\*\.whl", final)
    assert "[dev]" not in text and "make setup" not in final
    assert not re.search(r"^COPY (tests|runs|benchmarks|\.)\b", text, re.M)
    user = re.findall(r"^USER (\S+)", final, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*_stcore/health", final, re.M)
    assert "EXPOSE 8501" in final
