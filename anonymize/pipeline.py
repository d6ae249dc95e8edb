"""The one pipeline behind the CLI and the Python API: decode -> detect -> track -> mask -> encode.

Video stages run concurrently: a thread decodes (ffmpeg), the calling thread detects, tracks and
masks, and a thread encodes (ffmpeg), with bounded queues between them so memory stays flat in
video length. Any stage that fails sets a stop event; the others wind down, the encoder is
killed and the partial output deleted, and the error is raised in the caller (fail closed).
"""
from __future__ import annotations

import logging
import queue
from dataclasses import replace
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .atomic import atomic_output
from .config import Options
from .detectors import create as create_detector
from .errors import AnonymizeError, DetectError
from .ffmpeg_tools import Probe, probe
from .masks import create_mask, head_boxes
from .photo import read_photo, write_photo
from .regions import Regions
from .report import FileReport
from .schedule import DetectionSchedule
from .track import Tracker, TrackerSettings
from .video import EncodeSettings, Frame, VideoDecoder, VideoEncoder

log = logging.getLogger("anonymize")

_QUEUE_FRAMES = 8
_DONE = object()

#: Metadata keys that only describe the container format, not the recording.
_TECHNICAL_TAGS = {"major_brand", "minor_version", "compatible_brands", "handler_name", "vendor_id", "language",
                   "duration", "DURATION", "_STATISTICS_TAGS", "BPS", "NUMBER_OF_FRAMES", "NUMBER_OF_BYTES"}


class Engine:
    """Detector and mask, built once and reused for every file of a run."""

    def __init__(self, options: Options):
        self.options = options
        self.detector = create_detector(options.detector, threshold=options.threshold, scale=options.detect_scale,
                                        threads=options.threads)
        # cheap pass for the frames between full detections (video with detect_every > 1)
        self.between = None
        if options.detect_every > 1 and options.between_scale > 0:
            self.between = create_detector(options.detector, threshold=options.threshold,
                                           scale=options.detect_scale * options.between_scale, threads=options.threads)
        self.mask = create_mask(options.mask, seed=options.seed)

    def models(self) -> list[dict]:
        return self.detector.models()

    def detect(self, image: np.ndarray, full: bool = True) -> Regions:
        """Detect on one frame (``full=False``: the cheap between-frames pass, or nothing).

        With ``on_error="mask-frame"`` a failure masks the whole frame.
        """
        detector = self.detector if full else self.between
        if detector is None:
            return Regions.empty()
        try:
            return detector.detect(image)
        except Exception as exc:  # any detector failure must fail closed
            if self.options.on_error != "mask-frame":
                raise DetectError(f"detection failed: {exc!r}") from exc
            log.warning("detection failed (%r); masking the whole frame", exc)
            h, w = image.shape[:2]
            return Regions(np.array([[0, 0, w, h]], np.float32), kinds=["frame"])

    def mask_regions(self, regions: Regions, width: int, height: int) -> Regions:
        """Face boxes -> the head-sized regions that get masked.

        Boxes are *not* clipped to the frame: an ellipse redrawn inside a clipped box would be
        smaller than the true one and leave part of an edge face visible. The masks clip while
        drawing; regions wholly outside the frame are dropped.
        """
        heads = head_boxes(regions, self.options.mask_scale)
        b = heads.boxes
        inside = (b[:, 2] > 0) & (b[:, 3] > 0) & (b[:, 0] < width) & (b[:, 1] < height)
        return heads[inside]

    def apply(self, image: np.ndarray, masked: Regions) -> np.ndarray:
        shape = self.options.mask_shape
        whole = masked[masked.kinds == "frame"]
        if len(whole):
            self.mask.apply(image, whole, shape="box")
        return self.mask.apply(image, masked[masked.kinds != "frame"], shape=shape)


def process_photo(src: Path, dst: Path, engine: Engine, report: FileReport) -> None:
    image, info = read_photo(src)
    h, w = image.shape[:2]
    masked = engine.mask_regions(engine.detect(image), w, h)
    engine.apply(image, masked)
    write_photo(image, dst, info)
    report.width, report.height = w, h
    report.removed = list(info.removed)
    report.add_frame(0, 0.0, masked, engine.options.mask_shape)


def removed_from_video(p: Probe, keep_audio: bool) -> list[str]:
    """Kinds of identifying data in a video that the output will not carry."""
    removed = sorted({f"tag:{k}" for k in p.format_tags if k not in _TECHNICAL_TAGS})
    for s in p.streams:
        removed += sorted({f"stream{s.index}:tag:{k}" for k in s.tags if k not in _TECHNICAL_TAGS})
        if s.kind in ("subtitle", "data", "attachment") or s.attached_pic:
            removed.append(f"stream{s.index}:{'cover picture' if s.attached_pic else s.kind} ({s.codec})")
        if s.kind == "audio" and not keep_audio:
            removed.append(f"stream{s.index}:audio ({s.codec})")
    if p.chapters:
        removed.append(f"chapters ({p.chapters})")
    return removed


def process_video(src: Path, dst: Path, engine: Engine, report: FileReport,
                  on_frame: Callable[[int], None] | None = None) -> None:
    opts = engine.options
    info = probe(src)
    if info.video is None:
        raise AnonymizeError(f"{src}: no video stream")
    fps = float(info.video.fps or 30)
    settings = TrackerSettings.from_seconds(fps, opts.hold_before, opts.hold_after, opts.max_gap)
    # a track must survive the frames on which no detection runs
    settings = replace(settings, max_gap=max(settings.max_gap, 2 * opts.detect_every),
                       hold_after=max(settings.hold_after, opts.detect_every))
    tracker: Tracker[Frame] = Tracker(settings)
    decoder = VideoDecoder(src, info, threads=opts.ffmpeg_threads)
    settings = EncodeSettings(opts.quality, opts.crf, opts.preset, opts.keep_audio, threads=opts.ffmpeg_threads)
    report.audio = "none" if not info.audio else ("kept" if opts.keep_audio else "dropped")
    report.removed = removed_from_video(info, opts.keep_audio)

    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(_QUEUE_FRAMES)
    masked_q: queue.Queue = queue.Queue(_QUEUE_FRAMES)
    errors: list[BaseException] = []

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
                for item in _drain(masked_q, stop):
                    encoder.write(item.pts, item.image)
                if stop.is_set():
                    raise AnonymizeError("stopped")  # makes the encoder kill ffmpeg, not finish the file
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    decoder_thread = threading.Thread(target=decode, name="decode", daemon=True)
    decoder_thread.start()
    encoder_thread: threading.Thread | None = None
    try:
        with atomic_output(dst) as tmp:
            for item, regions in _tracked(tracker, _drain(decoded, stop), engine):
                h, w = item.image.shape[:2]
                if encoder_thread is None:
                    encoder = VideoEncoder(tmp, src, info, w, h, settings)
                    encoder_thread = threading.Thread(target=encode, args=(encoder,), name="encode", daemon=True)
                    encoder_thread.start()
                    report.width, report.height = w, h
                masked = engine.mask_regions(regions, w, h)
                engine.apply(item.image, masked)
                report.add_frame(item.index, item.pts, masked, opts.mask_shape)
                if not _put(masked_q, item, stop):
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
            if encoder_thread is None:
                raise AnonymizeError(f"{src}: no frames decoded")
    except BaseException:
        stop.set()
        if encoder_thread is not None:
            encoder_thread.join(timeout=30)
        decoder_thread.join(timeout=10)
        raise


def _tracked(tracker: Tracker, frames: Iterator[Frame], engine: Engine) -> Iterator[tuple[Frame, Regions]]:
    schedule = DetectionSchedule(engine.options.detect_every)
    for frame in frames:
        detections = engine.detect(frame.image, full=schedule.due(frame.image))
        yield from tracker.push(frame, detections)
    yield from tracker.flush()


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
