"""The session factory (anonymize/runtime.py): the device asked for, the fallback, the report."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from anonymize import runtime
from anonymize.cli import main as cli_main
from anonymize.config import DEVICES, Options, OptionError
from anonymize.detectors import create
from anonymize.models import model_path
from anonymize.regions import iou_matrix

CROWD = Path(__file__).resolve().parents[1] / "sample_media" / "crowd.jpg"


def test_cpu_is_onnxruntime_cpu():
    s = runtime.session(str(model_path("centerface")), threads=1, device="cpu")
    assert isinstance(s, runtime.OrtSession) and s.device == "onnxruntime-cpu"
    assert s._s.get_providers() == ["CPUExecutionProvider"]


def test_unknown_device_is_refused_before_any_model_loads():
    with pytest.raises(OptionError):
        Options(device="tpu")
    with pytest.raises(ValueError):
        runtime.session(str(model_path("centerface")), device="tpu")
    assert Options().device == "auto" and set(DEVICES) >= {"auto", "cpu", "cuda", "openvino"}


@pytest.mark.parametrize("device", ["cuda", "coreml", "directml"])
def test_missing_device_falls_back_to_the_cpu_with_one_log_line(device, caplog):
    if any(p in runtime.ort_providers() for p in runtime._ORT_PROVIDERS[device]):
        pytest.skip(f"{device} is installed here")
    runtime._logged.clear()
    with caplog.at_level(logging.INFO, logger="anonymize"):
        a = runtime.session(str(model_path("ssdlite-person")), threads=1, device=device)
        b = runtime.session(str(model_path("ssdlite-person")), threads=1, device=device)
    assert a.device == b.device == "onnxruntime-cpu"
    lines = [r for r in caplog.records if device in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING  # once per process, not per model
    assert "running on the CPU" in lines[0].getMessage()


def test_auto_picks_from_the_measured_order():
    s = runtime.session(str(model_path("centerface")), threads=1, device="auto")
    openvino = runtime.openvino_precision() == "bf16"
    cuda = "CUDAExecutionProvider" in runtime.ort_providers()
    if not cuda:
        assert isinstance(s, runtime.OpenVinoSession if openvino else runtime.OrtSession)


def test_report_records_the_device(tmp_path, astronaut_bgr):
    src, out, rep = tmp_path / "a.png", tmp_path / "o.png", tmp_path / "r.json"
    cv2.imwrite(str(src), astronaut_bgr)
    assert cli_main([str(src), "-o", str(out), "--report", str(rep), "-q", "--marks", "faces", "--device", "cpu"]) == 0
    data = json.loads(rep.read_text())
    assert data["settings"]["device"] == "cpu"
    assert data["models"] and all(m["device"] == "onnxruntime-cpu" for m in data["models"])


def _openvino():
    pytest.importorskip("openvino")
    return runtime.openvino_precision()


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_finds_the_same_faces_as_onnxruntime(precision):
    """OpenVINO's CPU plugin on the bundled crowd photo at 1080p: the heatmap within tolerance of
    onnxruntime fp32, the same faces (IoU >= 0.8 each way). bf16 keeps 8 bits of mantissa, so its
    tolerance is wider; it runs emulated (slowly, still correct) where the CPU lacks bf16 units."""
    _openvino()
    img = cv2.resize(cv2.imread(str(CROWD)), (1920, 1088))
    ref = create("centerface", threshold=0.1, threads=2, device="cpu")
    ov = create("centerface", threshold=0.1, threads=2, device="cpu")
    ov._session = runtime.OpenVinoSession(str(model_path("centerface")), 2, precision)
    blob = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)
    heat_ref = ref._session.run(["537"], {ref._input: blob})[0]
    for _ in range(runtime.OpenVinoSession.STATIC_AFTER):  # the first calls of a size run on onnxruntime
        heat_ov = ov._session.run(["537"], {ov._input: blob})[0]
    assert ov._session._compiled
    assert heat_ov.shape == heat_ref.shape
    assert float(np.abs(heat_ov - heat_ref).max()) < (1e-3 if precision == "f32" else 0.05)
    a = ref.detect(img)
    b = ov.detect(img)  # on the model compiled for this size
    assert len(a) >= 5 and len(a) == len(b)
    m = iou_matrix(a.boxes, b.boxes)
    assert (m.max(axis=1) >= 0.8).all() and (m.max(axis=0) >= 0.8).all()
    assert ov.models()[0]["device"] == f"openvino-cpu-{precision}"


def test_openvino_device_runs_every_model():
    """--device openvino builds every shipped model on OpenVINO (no silent CPU fallback): every
    size runs on a model compiled for it, from its first call."""
    precision = _openvino()
    frame = cv2.imread(str(CROWD))
    for name in ("centerface", "person", "head", "text"):
        det = create(name, threads=1, device="openvino")
        assert isinstance(det._session, runtime.OpenVinoSession), name
        det.detect(cv2.resize(frame, (320, 256)))
        assert det.models()[0]["device"] == f"openvino-cpu-{precision}", name


def test_openvino_results_depend_on_the_input_alone():
    """What a process finds must not depend on what it saw before: the bundled crowd photo gives
    the same boxes before and after other sizes went through the same detector, and as a fresh
    detector's first call. (With the first calls of a size on onnxruntime fp32 and later ones on
    OpenVINO bf16, the same photo gave 5 regions, then 4.)"""
    _openvino()
    img = cv2.imread(str(CROWD))
    det = create("centerface", threshold=0.1, threads=1, device="openvino")
    first = det.detect(img)
    for size in ((320, 256), (640, 480), (img.shape[1], img.shape[0])):
        det.detect(cv2.resize(img, size))
    again = det.detect(img)
    fresh = create("centerface", threshold=0.1, threads=1, device="openvino").detect(img)
    assert len(first) >= 5
    for other in (again, fresh):
        np.testing.assert_array_equal(first.boxes, other.boxes)
        np.testing.assert_array_equal(first.scores, other.scores)
