"""Planning a batch: walk the inputs, pair every file with its output (:func:`plan`).

Nothing here reads a file's contents except :func:`looks_like_media` (16 bytes), and nothing is written.
"""
from __future__ import annotations

import mimetypes
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..api import default_output, media_kind
from ..errors import InputError
from ..paths import check_name_length, check_writes, require_regular_input, shown
from .manifest import _same, manifest_path

#: Photo/video/audio formats we cannot anonymize. ``--copy-other`` never copies these (they
#: would keep faces, voices and metadata); neither does it copy files whose bytes look like media.
_UNSUPPORTED_MEDIA = frozenset(
    # stills, incl. camera RAW
    ".tif .tiff .gif .bmp .avif .jxl .jp2 .j2k .psd .xcf .ico .svg .tga .dng .cr2 .cr3 .crw .nef .nrw .arw .srf"
    " .sr2 .raf .orf .rw2 .pef .srw .x3f .erf .kdc .mrw .3fr .iiq .thm"
    # video
    " .3gp .3g2 .mts .m2ts .ts .mpg .mpeg .m2v .vob .wmv .asf .flv .f4v .ogv .insv .lrv .mxf .dv .braw .r3d"
    " .rm .rmvb .qt .y4m"
    # audio (voices identify people)
    " .wav .m4a .mp3 .aac .amr .opus .ogg .oga .flac .3ga .caf .aif .aiff .wma .mka".split())


@dataclass(frozen=True)
class Job:
    """One input file and where its output goes."""

    src: Path  #: absolute input path
    dst: Path  #: absolute output path
    rel: str  #: manifest key: the path relative to the output folder (= the input's, mirrored)
    shown: str  #: the input as the user would write it (for messages and the report)
    shown_dst: str
    action: str  #: "anonymize" or "copy"
    kind: str  #: "photo", "video" or "other"
    size: int = 0


@dataclass
class Plan:
    jobs: list[Job]
    #: the output folder holding the manifest (None: outputs beside the inputs / one output file)
    out_dir: Path | None = None
    #: a folder was among the inputs: failures make exit code 8
    folder_mode: bool = False
    #: non-media files left out (no ``--copy-other``)
    not_copied: list[str] = field(default_factory=list)
    #: media we cannot anonymize, never copied
    refused: list[str] = field(default_factory=list)
    #: hidden files and folders, our own outputs and temporary files
    ignored: int = 0
    #: the input folders (absolute)
    roots: list[Path] = field(default_factory=list)
    #: the resume manifest (with ``out_dir``)
    manifest: Path | None = None


def looks_like_media(path: Path) -> bool:
    """True for photo/video/audio files other than the formats we process (by name or bytes)."""
    ext = path.suffix.lower()
    if ext in _UNSUPPORTED_MEDIA:
        return True
    mime = mimetypes.guess_type(path.name, strict=False)[0] or ""
    if mime.split("/")[0] in ("image", "video", "audio"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return (head.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"\x1a\x45\xdf\xa3", b"II*\x00", b"MM\x00*",
                             b"ID3", b"fLaC", b"OggS", b"#!AMR", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"))
            or (head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"AVI ", b"WAVE"))
            or head[4:8] == b"ftyp")


def _is_ours(name: str) -> bool:
    """Hidden files (incl. our manifest and ``.NAME.*.partial.EXT`` temporaries) and our outputs."""
    return name.startswith(".") or ".anonymized." in name


def _walk(root: Path, skip: Path | None) -> tuple[list[Path], int]:
    """Files under ``root`` (sorted, not following folder links, leaving out the folder ``skip``),
    and the count of ignored entries."""
    found: list[Path] = []
    ignored = 0
    for top, dirs, files in os.walk(root, followlinks=False):
        kept = []
        for d in dirs:
            full = Path(top, d)
            if d.startswith(".") or os.path.islink(full) or _same(full, skip):
                ignored += 1
            else:
                kept.append(d)
        dirs[:] = sorted(kept)
        for name in sorted(files):
            if _is_ours(name):
                ignored += 1
                continue
            full = Path(top, name)
            if full.is_file():
                found.append(full)
            else:
                ignored += 1  # broken link, socket, ...
    return found, ignored


def _is_dir_target(output: Path | str | None) -> bool:
    return output is not None and (os.path.isdir(output) or str(output).endswith(("/", os.sep)))


def plan(inputs: list[Path], output: Path | str | None, copy_other: bool = False,
         manifest: Path | None = None) -> Plan:
    """Pair every input file with its output.

    One folder with ``-o OUT``: its tree is mirrored into OUT. Several inputs (or an output that
    is an existing folder): each file goes to ``OUT/NAME``, each folder to ``OUT/FOLDER/...``.
    An output given as a str ending in "/" is a folder (pathlib drops the slash, so the CLI passes
    a str). Without ``-o``: ``NAME.anonymized.EXT`` beside each input. With an output folder, progress is
    recorded in ``manifest`` (default :func:`manifest_path`). Raises InputError for missing
    inputs, inputs given directly that are not regular files (FIFOs, devices), two inputs that
    would write the same output, an output folder equal to an input, or an output (or the
    manifest) that is the same file as an input (also through links) or not a regular file.
    """
    inputs = [Path(i) for i in inputs]
    for item in inputs:
        try:
            st = os.stat(item)
        except FileNotFoundError:
            raise InputError(f"{shown(item)}: no such file or folder") from None
        except OSError as exc:  # e.g. a name too long to exist
            raise InputError(f"{shown(item)}: cannot read it ({exc.strerror or exc})") from None
        if not stat.S_ISDIR(st.st_mode):
            require_regular_input(item)  # stat only: a FIFO or /dev/zero named x.mp4 must not hang us
    if output is not None:
        check_name_length("-o", Path(output))  # before anything stats it (ENAMETOOLONG)
    folder_mode = any(i.is_dir() for i in inputs)
    several = len(inputs) > 1 or folder_mode or _is_dir_target(output)
    output = Path(output) if output is not None else None
    if copy_other and (output is None or not several):
        raise InputError("--copy-other needs an output folder (-o OUT_DIR)")
    out_dir = Path(os.path.abspath(output)) if (output is not None and several) else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{output}: exists and is not a folder (several inputs need an output folder)")
    result = Plan([], out_dir, folder_mode)
    if manifest is not None and out_dir is None:
        raise InputError("--manifest needs an output folder (-o OUT_DIR)")
    if out_dir is not None:
        result.manifest = Path(os.path.abspath(manifest)) if manifest is not None else manifest_path(out_dir)
    seen: dict[str, str] = {}

    def add(src: Path, rel: str | None, dst: Path, shown: str, shown_dst: str) -> None:
        kind = media_kind(src)
        action = "anonymize"
        if kind is None:
            if not copy_other:
                result.not_copied.append(shown)
                return
            if looks_like_media(src):
                result.refused.append(shown)
                return
            kind, action = "other", "copy"
        key = rel if rel is not None else str(dst)
        if key in seen:
            raise InputError(f"{seen[key]} and {shown} would both be written to {shown_dst}")
        seen[key] = shown
        try:
            size = src.stat().st_size
        except OSError:
            size = 0
        result.jobs.append(Job(Path(os.path.abspath(src)), Path(os.path.abspath(dst)), rel or src.name, shown,
                               shown_dst, action, kind, size))

    for item in inputs:
        if item.is_dir():
            root = Path(os.path.abspath(item))
            if out_dir is not None and (out_dir == root or _same(root, out_dir)):
                raise InputError(f"{output}: the output folder must not be the input folder")
            files, ignored = _walk(root, out_dir)
            result.ignored += ignored
            result.roots.append(root)
            prefix = "" if len(inputs) == 1 else (root.name + "/")
            for f in files:
                rel = prefix + f.relative_to(root).as_posix()
                label = str(item / f.relative_to(root))  # not `shown`: that name is the function used above
                if out_dir is not None:
                    dst = out_dir / rel
                    add(f, rel, dst, label, str(output / rel))
                elif media_kind(f):
                    add(f, None, default_output(f), label, str(default_output(item / f.relative_to(root))))
                else:
                    result.not_copied.append(label)
        else:
            if out_dir is not None:
                add(item, item.name, out_dir / item.name, str(item), str(output / item.name))
            else:
                dst = output if output is not None else default_output(item)
                add(item, None, dst, str(item), str(dst))
    # no output (nor the manifest) may be an input, e.g. `anonymize in/a.jpg -o in/`, or a hard link to one
    writes = [("output", Path(j.shown_dst)) for j in result.jobs]
    if result.manifest is not None:
        writes.append(("--manifest", result.manifest))
    check_writes([Path(j.shown) for j in result.jobs], writes)
    return result

