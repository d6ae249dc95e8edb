"""The long fuzz run: tests/test_fuzz.py's properties with many random examples, and optionally
coverage-guided fuzzing with atheris (libFuzzer).

What is fuzzed (see tests/test_fuzz.py): the container walkers and the audit's byte scan
(``anonymize.containers``, ``anonymize.audit.scan_bytes``), the Matroska frame reader
(``anonymize.mkv.MkvFrameReader``), the photo reader (``anonymize.photo.read_photo``), the batch
manifest reader and the JSON report. Inputs are random bytes and real files made on the spot
(Pillow, pillow-heif, ffmpeg), truncated, flipped and given extreme size fields.

Usage::

    python bench/fuzz.py --examples 20000                 # hypothesis, random seeds, every property
    python bench/fuzz.py --examples 5000 -k mkv           # only the tests matching -k
    python bench/fuzz.py --atheris scan --runs 200000     # libFuzzer on one target (pip install atheris)

Hypothesis mode runs pytest on tests/test_fuzz.py with ``FUZZ_EXAMPLES=N`` (the costlier
properties get N/2 or N/4) and ``FUZZ_RANDOM=1`` (a new seed each run, unlike CI's derandomized
run); a failure prints the shrunk input. Atheris mode targets ``scan`` (walkers and byte scan),
``mkv``, ``photo-<jpg|png|webp|heic>`` or ``manifest``, seeded with the real files; any exception
other than the documented one (InputError, MkvError) is a crash, and libFuzzer writes the input
to ``crash-*`` in the current folder. ``--rss-mb`` bounds memory (libFuzzer's -rss_limit_mb).
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATHERIS_TARGETS = ("scan", "mkv", "photo-jpg", "photo-png", "photo-webp", "photo-heic", "manifest")


def run_hypothesis(examples: int, select: str | None, deadline_ms: int) -> int:
    env = {**os.environ, "FUZZ_EXAMPLES": str(examples), "FUZZ_RANDOM": "1", "FUZZ_DEADLINE_MS": str(deadline_ms),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_fuzz.py"),
           "--durations=10"] + (["-k", select] if select else [])
    return subprocess.call(cmd, cwd=ROOT, env=env)


def run_atheris(target: str, runs: int, rss_mb: int, max_len: int) -> int:
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install atheris (or use --examples, which needs only hypothesis)",
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["anonymize"]):
        from anonymize import containers
        from anonymize.audit import scan_bytes
        from anonymize.batch import read_manifest
        from anonymize.errors import InputError
        from anonymize.mkv import MkvError, MkvFrameReader
        from anonymize.photo import read_photo
    from PIL import Image

    from tests.test_fuzz import make_real_files

    Image.MAX_IMAGE_PIXELS = 1 << 20  # a mutated header must not make one input a gigapixel decode
    work = Path(tempfile.mkdtemp(prefix="anonymize-fuzz-"))
    seeds = make_real_files(work)
    corpus = work / "corpus"
    corpus.mkdir()
    kind = target.split("-", 1)[1] if target.startswith("photo-") else None
    picks = {"scan": list(seeds), "mkv": ["rawmkv"], "manifest": []}.get(target, [kind])
    for name in picks:
        (corpus / name).write_bytes(seeds[name])
    if target == "manifest":
        (corpus / "m").write_bytes(b'{"input": "a", "size": 1}\n[[[\n{"input": "b"}\n')
    scratch = work / f"input.{kind or 'bin'}"

    def one_input(data: bytes) -> None:
        if target == "scan":
            f = io.BytesIO(data)
            for walk in (containers.png_chunks(f, len(data)), containers.riff_chunks(f, len(data)),
                         containers.bmff_boxes(f, 0, len(data)), containers.ebml_elements(f, 0, len(data)),
                         containers.jpeg_segments(data)):
                for part in walk:
                    assert 0 <= part.start < part.end <= len(data), part
            scratch.write_bytes(data)
            scan_bytes(scratch)
        elif target == "mkv":
            try:
                for _ in MkvFrameReader(io.BytesIO(data)):
                    pass
            except MkvError:
                pass
        elif target == "manifest":
            scratch.write_bytes(data)
            assert all(isinstance(r, dict) and "input" in r for r in read_manifest(scratch))
        else:
            scratch.write_bytes(data)
            try:
                read_photo(scratch)
            except InputError:
                pass

    args = [sys.argv[0], str(corpus), f"-runs={runs}", f"-rss_limit_mb={rss_mb}", f"-max_len={max_len}",
            "-timeout=20"]
    atheris.Setup(args, one_input)
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=5000, help="hypothesis examples per property (default 5000)")
    p.add_argument("-k", dest="select", help="only the tests of tests/test_fuzz.py matching this (pytest -k)")
    p.add_argument("--deadline-ms", type=int, default=5000, help="per-example deadline (default 5000)")
    p.add_argument("--atheris", choices=ATHERIS_TARGETS, help="coverage-guided fuzzing of one target instead")
    p.add_argument("--runs", type=int, default=100_000, help="atheris: inputs to run (default 100000)")
    p.add_argument("--rss-mb", type=int, default=2048, help="atheris: memory limit (default 2048 MB)")
    p.add_argument("--max-len", type=int, default=65536, help="atheris: longest input (default 65536 bytes)")
    a = p.parse_args(argv)
    if a.atheris:
        return run_atheris(a.atheris, a.runs, a.rss_mb, a.max_len)
    return run_hypothesis(a.examples, a.select, a.deadline_ms)


if __name__ == "__main__":
    sys.exit(main())
