"""Command line: parse, call the API, map errors to exit codes. No logic of its own."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import batch
from .api import __version__
from .config import AUDIO, MARKS, MASK_SHAPES, ON_ERROR, Options
from .errors import AnonymizeError, InputError
from .signals import Terminated, handle_signals
from .video import QUALITY

log = logging.getLogger("anonymize")
D = Options()


EPILOG = """\
folders: 'anonymize IN_DIR -o OUT_DIR' mirrors the tree of IN_DIR into OUT_DIR (recursive; hidden
files and folders, *.anonymized.* files and our own temporary files are ignored). Files that are
not photos/videos are left out unless --copy-other. Finished files are recorded in a manifest,
.OUT_DIR_NAME.anonymize-manifest.jsonl beside OUT_DIR (not in it, so OUT_DIR holds only outputs;
the manifest names the inputs and holds their sizes, dates and hashes); running the same command
again skips files already done (same input, same settings, output unchanged) and redoes failed,
changed or missing ones, so an interrupted run (even kill -9) is resumed by running it again.

exit codes: 0 every file done (or already done); for one file, or a list of files, the code of
the (first) failure: 2 bad input (missing, unsupported, corrupt, would overwrite the input),
3 decode, 4 detect, 5 encode (incl. disk full), 6 model missing or sha256 mismatch, 7 no ffmpeg,
1 other; 8 some files of a folder batch failed (the others are written; see the summary, the
manifest and --report). 6 and 7 stop a batch. 130 interrupted.

report statuses: ok (anonymized), copied (--copy-other), skipped (already done), failed.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="anonymize",
        description="Irreversibly mask every face in videos and photos and strip metadata (offline).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
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
    p.add_argument("--edge-reach", type=float, default=D.edge_reach,
                   help="grow faces cut by the frame edge past it by this share of their size; "
                        f"0 = off (default {D.edge_reach})")
    p.add_argument("--video-margin", type=float, default=D.video_margin,
                   help="video: grow every face mask by this share of the frame's shorter side per side "
                        f"(boxes jitter between frames; 0 = off, default {D.video_margin})")
    p.add_argument("--edge-detect", type=float, default=D.edge_detect,
                   help="reflect the face detector's input by this many pixels per side, so faces cut by "
                        f"the frame edge look whole (e.g. 32; 0 = off, default {D.edge_detect})")
    p.add_argument("--detector", default=D.detector,
                   help=f"face detector: centerface; centerface-int8 (8-bit model, faster per frame, use with "
                        f"--threshold 0.08); centerface-tta (flip/scale/tile passes fused: slower, for photos) "
                        f"(default {D.detector})")
    p.add_argument("--photo-detector", default=D.photo_detector,
                   help=f"face detector for photos (default {D.photo_detector}: flipped and padded passes fused; "
                        "centerface-tta-int8: the same on the 8-bit model)")
    p.add_argument("--photo-threshold", type=float,
                   help="score threshold of the photo detector (default: its measured photo setting)")
    p.add_argument("--threshold", type=float, default=D.threshold,
                   help=f"detection threshold; lower masks more (default {D.threshold})")
    p.add_argument("--pad", type=float, default=D.pad,
                   help=f"grow every face box by this many detector pixels per side (default {D.pad})")
    p.add_argument("--detect-scale", type=float, default=D.detect_scale,
                   help="resize frames by this factor before detection (default 1.0 = full resolution)")
    p.add_argument("--detect-every", type=int, default=D.detect_every,
                   help="run the detector on every N-th video frame and on scene cuts; the tracker fills "
                        f"the rest (default {D.detect_every})")
    p.add_argument("--between-scale", type=float, default=D.between_scale,
                   help="with --detect-every > 1: resize factor of the cheap detection pass on the frames "
                        f"between (0 = none; default {D.between_scale})")
    p.add_argument("--hold-before", type=float, default=D.hold_before, help="seconds masked before a face appears")
    p.add_argument("--hold-after", type=float, default=D.hold_after, help="seconds masked after a face is lost")
    p.add_argument("--marks", default=",".join(D.marks),
                   help=f"what to mask, comma-separated from {','.join(MARKS)}: faces; heads (people seen from "
                        "behind or the side); persons (whole people); plates and text (legible text: signs, "
                        f"badges, plates; found by one text detector) (default {','.join(D.marks)})")
    p.add_argument("--marks-every", type=int, default=D.marks_every,
                   help="video: detect the marks other than faces on every N-th frame and on scene cuts; their "
                        f"masks are held and interpolated between (default {D.marks_every})")
    p.add_argument("--audio", choices=AUDIO, default=D.audio,
                   help="drop (default: voices identify people), keep (copied unchanged), or disguise (pitch and "
                        "formants shifted by a random factor: reduces, does not remove, the risk)")
    p.add_argument("--keep-audio", action="store_true", help="same as --audio keep")
    p.add_argument("--quality", choices=sorted(QUALITY), default=D.quality, help="video encoder preset")
    p.add_argument("--crf", type=int, help="override the encoder's CRF")
    p.add_argument("--preset", help="override the x264 preset")
    p.add_argument("--on-error", choices=ON_ERROR, default=D.on_error,
                   help="fail: stop and write nothing (default); mask-frame: mask frames whose detection fails")
    p.add_argument("--threads", type=int, default=D.threads, help="detector threads (0 = auto)")
    p.add_argument("-j", "--jobs", type=int, default=1,
                   help="files processed in parallel, each worker with its own model (default 1; 0 = one per "
                        "CPU core; at most one per core, the cores are split between the workers)")
    p.add_argument("--copy-other", action="store_true",
                   help="with -o OUT_DIR: copy files that are not photos/videos verbatim, so they KEEP THEIR "
                        "METADATA (documents, notes...). Photo/video/audio formats we cannot anonymize (RAW, "
                        "TIFF, GIF, 3GP, MTS, audio...) are never copied")
    p.add_argument("--manifest", type=Path,
                   help="with -o OUT_DIR: where to record finished files for resuming "
                        "(default: .OUT_DIR_NAME.anonymize-manifest.jsonl beside OUT_DIR)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars (the summary is still printed)")
    p.add_argument("--version", action="version", version=f"anonymize {__version__}")
    return p


def plan(inputs: list[Path], output: Path | None) -> list[tuple[Path, Path]]:
    """Pair each input photo/video with its output path (see :func:`anonymize.batch.plan`)."""
    return [(j.src, j.dst) for j in batch.plan(inputs, output).jobs]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; SIGTERM, SIGHUP and SIGINT stop it cleanly (exit 143, 129, 130)."""
    with handle_signals():
        try:
            return _main(argv)
        except Terminated as exc:  # raised outside batch.run, which handles its own
            print(f"anonymize: stopped by {exc.name}", file=sys.stderr)
            return exc.exit_code


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["audit"]:  # `anonymize audit OUT [--against IN]`
        from .audit import main as audit_main

        return audit_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="anonymize: %(message)s")
    try:
        if args.jobs < 0:
            raise InputError("--jobs must be >= 0")
        options = Options().updated(
            mask=args.mask, mask_scale=args.mask_scale, mask_shape=args.mask_shape, edge_reach=args.edge_reach, video_margin=args.video_margin, edge_detect=args.edge_detect, threshold=args.threshold,
            detector=args.detector, photo_detector=args.photo_detector, photo_threshold=args.photo_threshold, pad=args.pad, detect_scale=args.detect_scale, detect_every=args.detect_every, between_scale=args.between_scale,
            hold_before=args.hold_before, hold_after=args.hold_after,
            audio="keep" if args.keep_audio else args.audio, marks=args.marks, marks_every=args.marks_every,
            quality=args.quality, crf=args.crf, preset=args.preset, on_error=args.on_error, threads=args.threads)
        the_plan = batch.plan(args.inputs, args.output, copy_other=args.copy_other, manifest=args.manifest)
        if not the_plan.jobs:
            raise InputError("no video or photo files found")
    except (AnonymizeError, ValueError) as exc:
        print(f"anonymize: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    return batch.run(the_plan, options, jobs=args.jobs, report=args.report, quiet=args.quiet)
