"""Command line: parse, call the API, map errors to exit codes. No logic of its own."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .api import Anonymizer, __version__, default_output, media_kind
from .config import MASK_SHAPES, ON_ERROR, Options
from .errors import AnonymizeError, InputError
from .video import QUALITY

log = logging.getLogger("anonymize")
D = Options()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anonymize",
        description="Irreversibly mask every face in videos and photos and strip metadata (offline).",
        epilog="Exit codes: 0 ok, 2 bad input, 3 decode, 4 detect, 5 encode, 6 model, 7 no ffmpeg, 1 other.",
    )
    p.add_argument("inputs", nargs="+", type=Path, help="video/photo files or folders (searched recursively)")
    p.add_argument("-o", "--output", type=Path,
                   help="output file (one input) or folder (several inputs / a folder); "
                        "default: NAME.anonymized.EXT beside each input")
    p.add_argument("--report", type=Path, help="write a JSON report of every masked region here")
    p.add_argument("--mask", default=D.mask, help=f"mask style: blur, pixelate, solid (default {D.mask})")
    p.add_argument("--mask-scale", type=float, default=D.mask_scale,
                   help=f"head region size relative to the face box (default {D.mask_scale})")
    p.add_argument("--mask-shape", choices=MASK_SHAPES, default=D.mask_shape)
    p.add_argument("--threshold", type=float, default=D.threshold,
                   help=f"detection threshold; lower masks more (default {D.threshold})")
    p.add_argument("--detect-scale", type=float, default=D.detect_scale,
                   help="resize frames by this factor before detection (default 1.0 = full resolution)")
    p.add_argument("--detect-every", type=int, default=D.detect_every,
                   help="run the detector on every N-th video frame and on scene cuts; the tracker fills "
                        f"the rest (default {D.detect_every})")
    p.add_argument("--hold-before", type=float, default=D.hold_before, help="seconds masked before a face appears")
    p.add_argument("--hold-after", type=float, default=D.hold_after, help="seconds masked after a face is lost")
    p.add_argument("--keep-audio", action="store_true", help="copy audio unchanged (default: drop it; voices identify)")
    p.add_argument("--quality", choices=sorted(QUALITY), default=D.quality, help="video encoder preset")
    p.add_argument("--crf", type=int, help="override the encoder's CRF")
    p.add_argument("--preset", help="override the x264 preset")
    p.add_argument("--on-error", choices=ON_ERROR, default=D.on_error,
                   help="fail: stop and write nothing (default); mask-frame: mask frames whose detection fails")
    p.add_argument("--threads", type=int, default=D.threads, help="detector threads (0 = auto)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--version", action="version", version=f"anonymize {__version__}")
    return p


def plan(inputs: list[Path], output: Path | None) -> list[tuple[Path, Path]]:
    """Pair each input file with its output path."""
    pairs: list[tuple[Path, Path]] = []
    several = len(inputs) > 1 or any(i.is_dir() for i in inputs)
    for item in inputs:
        if item.is_dir():
            for f in sorted(p for p in item.rglob("*") if p.is_file() and media_kind(p)):
                if ".anonymized." in f.name or f.name.startswith("."):
                    continue
                rel = f.relative_to(item)
                pairs.append((f, output / rel if output else default_output(f)))
        elif not item.exists():
            raise InputError(f"{item}: no such file or folder")
        else:
            if output is None:
                dst = default_output(item)
            elif several:
                dst = output / item.name
            else:
                dst = output
            pairs.append((item, dst))
    return pairs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["audit"]:  # `anonymize audit OUT [--against IN]`
        from .audit import main as audit_main

        return audit_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="anonymize: %(message)s")
    try:
        pairs = plan(args.inputs, args.output)
        if not pairs:
            raise InputError("no video or photo files found")
        runner = Anonymizer(
            mask=args.mask, mask_scale=args.mask_scale, mask_shape=args.mask_shape, threshold=args.threshold,
            detect_scale=args.detect_scale, detect_every=args.detect_every, hold_before=args.hold_before, hold_after=args.hold_after,
            keep_audio=args.keep_audio, quality=args.quality, crf=args.crf, preset=args.preset,
            on_error=args.on_error, threads=args.threads)
    except (AnonymizeError, ValueError) as exc:
        print(f"anonymize: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    return run_batch(runner, pairs, args.report, quiet=args.quiet)


def run_batch(runner: Anonymizer, pairs: list[tuple[Path, Path]], report: Path | None, quiet: bool) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .ffmpeg_tools import probe
    from .report import FileReport

    results: list[FileReport] = []
    exit_code = 0
    with logging_redirect_tqdm():
        batch = tqdm(pairs, unit="file", disable=quiet or len(pairs) < 2, desc="files")
        for src, dst in batch:
            total = None
            if media_kind(src) == "video":
                try:
                    total = probe(src).estimated_frames()
                except AnonymizeError:
                    pass
            with tqdm(total=total, unit="frame", desc=src.name[:40], disable=quiet, leave=len(pairs) < 2) as bar:
                try:
                    results.append(runner.file(src, dst, on_frame=bar.update))
                except AnonymizeError as exc:
                    log.error("%s: %s", src, exc)
                    results.append(FileReport(str(src), str(dst), media_kind(src) or "?", status="failed",
                                              error=str(exc)))
                    exit_code = exit_code or exc.exit_code
    if report:
        runner.write_report(report, results)
    if not quiet:
        done = sum(r.status == "ok" for r in results)
        regions = sum(r.region_count for r in results)
        print(f"anonymize: {done}/{len(results)} files written, {regions} regions masked", file=sys.stderr)
    return exit_code
