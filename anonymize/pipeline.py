"""The one pipeline behind the CLI and the Python API: decode -> regions -> mask -> encode.

The regions of each frame come from a :class:`~anonymize.regions_source.RegionSource`: live
(detect -> track, :class:`~anonymize.regions_source.LiveRegions`) for the one-shot run and
``detect``, or a plan file (:class:`~anonymize.regions_source.PlanRegions`) for ``render``. Mask
geometry is pure (:func:`anonymize.masks.mask_regions`), and the mask noise belongs to the file
(:class:`~anonymize.masks.MaskNoise`, seeded per file and recorded in the report).

Video stages run concurrently: a thread decodes (ffmpeg), the calling thread gets the regions and
grows them, and a thread masks and encodes (ffmpeg), with bounded queues between them so memory
stays flat in video length. Any stage that fails sets a stop event; the others wind down, the
encoder is killed and the partial output deleted, and the error is raised in the caller (fail
closed). ``detect`` runs the same loop with no encoder.

Frames are BGR (what the detectors take), except in ``render`` of a :func:`~anonymize.video.yuv_ready`
source, which needs no detector: there the frames stay the source's yuv420p planes from decoder to
encoder and the masks are drawn on the planes (:mod:`anonymize.masks_yuv`): half the bytes through
the pipes and no colour conversion (bench/review.py speed).
"""
from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .atomic import atomic_output
from .config import Options
from .detectors import DETECTORS, Detector, create as create_detector
from .detectors.tta import PHOTO, CenterFaceTTA
from .errors import AnonymizeError, DetectError, InputError, ModelError
from .ffmpeg_tools import Probe, probe
from . import masks_yuv
from .masks import BOX_KINDS, MaskNoise, MaskStyle, create_mask, draw, mask_regions, region_shapes
from .photo import read_photo, write_photo
from .plan import Geometry
from .regions import Regions
from .regions_source import LiveRegions, PlanRegions, RegionSource, photo_regions
from .report import FileReport
from .rotation import photo_mode, photo_turned
from .video import EncodeSettings, VideoDecoder, VideoEncoder, color_matrix, damage_warning, yuv_ready

log = logging.getLogger("anonymize")

_QUEUE_FRAMES = 8
_DONE = object()

#: Metadata keys that only describe the container format, not the recording.
_TECHNICAL_TAGS = {"major_brand", "minor_version", "compatible_brands", "handler_name", "vendor_id", "language",
                   "duration", "DURATION", "_STATISTICS_TAGS", "BPS", "NUMBER_OF_FRAMES", "NUMBER_OF_BYTES"}


#: The detector (registry name) that finds each mark other than faces. Plates are found as text:
#: no plate detector with a permissive licence ships its weights, and a plate is legible text.
MARK_DETECTORS = {"heads": "head", "persons": "person", "plates": "text", "text": "text"}


class Engine:
    """Detectors and mask, built once and reused for every file of a run."""

    def __init__(self, options: Options):
        self.options = options
        self.detector = None
        if "faces" in options.marks:
            self.detector = create_detector(options.detector, threshold=options.threshold,
                                            scale=options.detect_scale, threads=options.threads, pad=options.pad,
                                            edge=options.edge_detect, device=options.device)
        # cheap pass for the frames between full detections (video with detect_every > 1)
        self.between = None
        if self.detector is not None and options.detect_every > 1 and options.between_scale > 0:
            self.between = create_detector(options.detector, threshold=options.threshold,
                                           scale=options.detect_scale * options.between_scale, threads=options.threads,
                                           pad=options.pad, edge=options.edge_detect, device=options.device)
        #: detectors of the other marks, by registry name (one text detector serves plates and text)
        self.mark_detectors: dict[str, Detector] = {}
        for mark in options.marks:
            name = MARK_DETECTORS.get(mark)
            if name is None or name in self.mark_detectors:
                continue
            if name not in DETECTORS:
                raise ModelError(f"--marks {mark}: the {name!r} detector is not installed")
            self.mark_detectors[name] = create_detector(name, threads=options.threads, device=options.device)
        self.mask = create_mask(options.mask, seed=options.seed)
        self._photo_detector: Detector | None = None

    @property
    def photo_detector(self) -> Detector | None:
        """The face detector for photos (built on first use: a video-only batch never pays for it)."""
        o = self.options
        if self.detector is None or (o.photo_detector == o.detector and o.photo_threshold is None):
            return self.detector  # the same detector with the same settings: share it
        if self._photo_detector is None:
            kwargs = dict(threshold=o.threshold, pad=o.pad)
            factory = DETECTORS.get(o.photo_detector)
            if isinstance(factory, type) and issubclass(factory, CenterFaceTTA):  # any weights: the photo setting
                kwargs = dict(PHOTO, pad=o.pad)
            if o.photo_threshold is not None:
                kwargs["threshold"] = o.photo_threshold
                if kwargs.get("vote", 0) > o.photo_threshold:  # the vote looks at scores below the threshold
                    kwargs["vote"] = o.photo_threshold
            self._photo_detector = create_detector(o.photo_detector, scale=o.detect_scale, threads=o.threads,
                                                   edge=o.edge_detect, device=o.device, **kwargs)
        return self._photo_detector

    def models(self) -> list[dict]:
        found = self.detector.models() if self.detector else []
        if self._photo_detector is not None:  # built once a photo was processed; may use other weights
            found += [m for m in self._photo_detector.models() if m not in found]
        for det in self.mark_detectors.values():
            found += [m for m in det.models() if m not in found]
        return found

    def detect(self, image: np.ndarray, full: bool = True, marks: bool = True, photo: bool = False) -> Regions:
        """Detect on one frame: faces (``full=False``: the cheap between-frames pass, or nothing;
        ``photo``: with the photo detector) and, when ``marks``, the other marks.

        With ``on_error="mask-frame"`` a failure masks the whole frame.
        """
        detectors = [self.photo_detector if photo else self.detector if full else self.between]
        if marks:
            detectors += list(self.mark_detectors.values())
        try:
            return Regions.merge([d.detect(image) for d in detectors if d is not None])
        except Exception as exc:  # any detector failure must fail closed
            if self.options.on_error != "mask-frame":
                raise DetectError(f"detection failed: {exc!r}") from exc
            log.warning("detection failed (%r); masking the whole frame", exc)
            h, w = image.shape[:2]
            return Regions(np.array([[0, 0, w, h]], np.float32), kinds=["frame"])

    def geometry(self, kind: str, width: int, height: int) -> Geometry:
        """The mask geometry of a file (its pixel margin depends on the frame size)."""
        return geometry(self.options, kind, width, height)


def geometry(options: Options, kind: str, width: int, height: int) -> Geometry:
    """The mask geometry ``options`` give a ``kind`` file of this size (video: a margin in pixels)."""
    margin = options.video_margin * min(width, height) if kind == "video" else 0.0
    return Geometry(options.mask, options.mask_shape, options.mask_scale, options.edge_reach, float(margin))


def grow(raw: Regions, width: int, height: int, g: Geometry) -> Regions:
    """Raw boxes -> masked regions (pure: :func:`anonymize.masks.mask_regions`)."""
    return mask_regions(raw, width, height, scale=g.mask_scale, edge_reach=g.edge_reach, margin=g.margin)


def _record_plan(report: FileReport, g: Geometry, noise: MaskNoise) -> None:
    report.geometry = g.as_dict()
    report.noise_seed = noise.seed


def process_photo(src: Path, dst: Path | None, engine: Engine, report: FileReport, noise: MaskNoise) -> None:
    """Detect and mask one photo (``dst`` None: detect only, write nothing)."""
    image, info = read_photo(src)
    h, w = image.shape[:2]
    found = engine.detect(image, photo=True)
    if engine.detector is not None:  # faces shown sideways or upside down (anonymize/rotation.py)
        found = Regions.merge([found, photo_turned(lambda img: engine.detect(img, marks=False),
                                                   lambda img: engine.detect(img, marks=False, photo=True),
                                                   image, found, photo_mode(engine.options.rotated_faces))])
    raw = photo_regions(found)
    g = engine.geometry("photo", w, h)
    _photo_out(image, info, raw, g, engine.mask, noise, dst, report)


def render_photo(src: Path, dst: Path, source: PlanRegions, style: MaskStyle, noise: MaskNoise,
                 report: FileReport) -> None:
    """Mask one photo with the regions of a plan."""
    image, info = read_photo(src)
    h, w = image.shape[:2]
    e = source.entry
    if (w, h) != (e.width, e.height) or e.frame_count != 1:
        raise InputError(f"{src}: the photo is {w}x{h}, the plan's {e.width}x{e.height} ({e.frame_count} frames)")
    _photo_out(image, info, source.at(0, w, h), e.geometry, style, noise, dst, report)


def _photo_out(image, info, raw: Regions, g: Geometry, style: MaskStyle, noise: MaskNoise, dst: Path | None,
               report: FileReport) -> None:
    h, w = image.shape[:2]
    masked = grow(raw, w, h, g)
    if dst is not None:
        draw(image, masked, style, g.mask_shape, noise)
        write_photo(image, dst, info)
    report.width, report.height = w, h
    report.removed = list(info.removed)
    _record_plan(report, g, noise)
    report.add_frame(0, 0.0, masked, region_shapes(masked, g.mask_shape), raw=raw)


def removed_from_video(p: Probe, audio: str) -> list[str]:
    """Kinds of identifying data in a video that the output will not carry (``audio``: the policy)."""
    removed = sorted({f"tag:{k}" for k in p.format_tags if k not in _TECHNICAL_TAGS})
    for s in p.streams:
        removed += sorted({f"stream{s.index}:tag:{k}" for k in s.tags if k not in _TECHNICAL_TAGS})
        if s.kind in ("subtitle", "data", "attachment") or s.attached_pic:
            removed.append(f"stream{s.index}:{'cover picture' if s.attached_pic else s.kind} ({s.codec})")
        if s.kind == "audio" and audio != "keep":
            first = s is p.audio[0]
            if audio == "disguise" and first:
                removed.append(f"stream{s.index}:voices (audio disguised)")
            else:
                removed.append(f"stream{s.index}:audio ({s.codec})")
    if p.chapters:
        removed.append(f"chapters ({p.chapters})")
    return removed


def check_video_streams(src: Path, info: Probe) -> None:
    """Refuse (:class:`InputError`) a "video" without a real video stream (audio only, a cover
    picture only, no streams at all) or with more than one (cover pictures do not count)."""
    videos = [s for s in info.streams if s.kind == "video" and not s.attached_pic]
    if len(videos) > 1:
        # we would mask and keep only the first: the others would silently disappear
        raise InputError(f"{src}: has {len(videos)} video streams; only single-video files are supported "
                         "(extract one with ffmpeg -i IN -map 0:v:N -c copy OUT)")
    if info.video is not None:
        return
    if not info.streams:
        what = "the file has no streams at all"
    elif any(s.attached_pic for s in info.streams):
        what = "only a cover picture" + (" and audio" if info.audio else "")
    elif info.audio:
        what = "audio-only file"
    else:
        what = "only " + ", ".join(sorted({s.kind or "unknown" for s in info.streams})) + " streams"
    raise InputError(f"{src}: no video stream: {what}")


def process_video(src: Path, dst: Path | None, engine: Engine, report: FileReport, noise: MaskNoise,
                  on_frame: Callable[[int], None] | None = None) -> None:
    """Detect, track and mask one video (``dst`` None: detect only, no encoder, nothing written)."""
    info = probe(src)
    check_video_streams(src, info)  # before the tracker reads the stream's frame rate
    source = LiveRegions(engine, engine.options, float(info.video.fps or 30), info.video.rotation)
    run_video(src, dst, info, source, lambda w, h: engine.geometry("video", w, h), engine.mask, noise,
              engine.options, report, on_frame)


def render_video(src: Path, dst: Path, info: Probe, source: PlanRegions, style: MaskStyle, noise: MaskNoise,
                 options: Options, report: FileReport, on_frame: Callable[[int], None] | None = None) -> None:
    """Mask one video with the regions of a plan (no detector runs); on the source's own yuv420p
    planes when it has them and the style can be drawn there, else on BGR frames."""
    planar = yuv_ready(info) and masks_yuv.supports(style)
    run_video(src, dst, info, source, lambda w, h: source.entry.geometry, style, noise, options, report, on_frame,
              pixel_format="yuv420p" if planar else "bgr24")


def run_video(src: Path, dst: Path | None, info: Probe, source: RegionSource,
              geometry_of: Callable[[int, int], Geometry], style: MaskStyle, noise: MaskNoise, opts: Options,
              report: FileReport, on_frame: Callable[[int], None] | None = None,
              pixel_format: str = "bgr24") -> None:
    """decode -> ``source``'s raw regions -> mask geometry -> report, and with a ``dst``: draw -> encode.

    One decode, streamed; the output appears under ``dst`` only once every frame is written.
    ``pixel_format``: the frames' layout, ``"yuv420p"`` only for a source that needs no BGR
    (a plan) and a :func:`~anonymize.video.yuv_ready` video."""
    check_video_streams(src, info)
    if pixel_format != "bgr24" and not isinstance(source, PlanRegions):
        raise ValueError("only a plan's regions can be drawn on yuv420p frames: detectors take BGR")
    decoder = VideoDecoder(src, info, threads=opts.ffmpeg_threads, pixel_format=pixel_format, hwaccel=opts.hwaccel)
    matrix = color_matrix(info)
    settings = EncodeSettings(opts.quality, opts.crf, opts.preset, opts.audio, threads=opts.ffmpeg_threads,
                              seed=opts.seed)
    if dst is not None:
        report.audio = "none" if not info.audio else {"keep": "kept", "drop": "dropped",
                                                      "disguise": "disguised"}[opts.audio]
    report.removed = removed_from_video(info, opts.audio)

    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(_QUEUE_FRAMES)
    masked_q: queue.Queue = queue.Queue(_QUEUE_FRAMES)
    errors: list[BaseException] = []
    g: Geometry | None = None

    def decode() -> None:
        frames = decoder.frames()
        try:
            for frame in frames:
                if not _put(decoded, frame, stop):
                    return
        except BaseException as exc:
            errors.append(exc)
            stop.set()
        finally:
            frames.close()  # kills ffmpeg if we stopped early
            _put(decoded, _DONE, stop)

    def encode(encoder: VideoEncoder) -> None:
        try:
            with encoder:
                for item, masked in _drain(masked_q, stop):
                    # Masks are drawn here, in the encoder's thread, so that drawing them overlaps
                    # the next frames' detection; a frame is written only after its masks are.
                    if item.yuv is not None:
                        pixels = masks_yuv.draw_yuv(item.yuv, masked, style, g.mask_shape, noise, matrix)
                    else:
                        pixels = draw(item.image, masked, style, g.mask_shape, noise)
                    encoder.write(item.pts, pixels)
                if stop.is_set():
                    raise AnonymizeError("stopped")  # makes the encoder kill ffmpeg, not finish the file
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    decoder_thread = threading.Thread(target=decode, name="decode", daemon=True)
    decoder_thread.start()
    encoder_thread: threading.Thread | None = None
    try:
        with atomic_output(dst) if dst is not None else _no_output() as tmp:
            for item, raw in source.regions(_drain(decoded, stop)):
                w, h = item.size
                if g is None:
                    g = geometry_of(w, h)  # fixed for the file
                    report.width, report.height = w, h
                    _record_plan(report, g, noise)
                    if tmp is not None:
                        encoder = VideoEncoder(tmp, src, info, w, h, settings, pixel_format)
                        encoder_thread = threading.Thread(target=encode, args=(encoder,), name="encode",
                                                          daemon=True)
                        encoder_thread.start()
                masked = grow(raw, w, h, g)
                report.add_frame(item.index, item.pts, masked, region_shapes(masked, g.mask_shape), raw=raw)
                if tmp is not None and not _put(masked_q, (item, masked), stop):
                    break
                if on_frame:
                    on_frame(1)
            if not errors:
                _put(masked_q, _DONE, stop)
            if encoder_thread is not None:
                encoder_thread.join()
            decoder_thread.join(timeout=10)
            if errors:
                raise errors[0]
            if stop.is_set():
                raise AnonymizeError("stopped")
            if g is None:
                raise AnonymizeError(f"{src}: no frames decoded")
            warning = damage_warning(decoder)
            if warning:
                report.warnings.append(warning)
                log.warning("%s: %s", src, warning)
    except BaseException:
        stop.set()
        if encoder_thread is not None:
            encoder_thread.join(timeout=30)
        decoder_thread.join(timeout=10)
        raise


class _no_output:
    """Stands in for :func:`atomic_output` when nothing is written (``detect``)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put with a stop check, so a stage never blocks forever on a dead neighbour."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(q: queue.Queue, stop: threading.Event) -> Iterator:
    while not stop.is_set():
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            continue
        if item is _DONE:
            return
        yield item
