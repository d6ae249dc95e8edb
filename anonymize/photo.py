"""Read a photo as upright sRGB pixels, and write a brand-new file from the pixels alone.

Metadata is never copied or edited: :func:`write_photo` encodes a fresh image that has no EXIF
(GPS, camera make/model/serial, dates), XMP, IPTC, ICC profile, comments, thumbnails or PNG text,
so nothing can be forgotten. :func:`read_photo` only *names* what the input carried
(:attr:`PhotoInfo.removed`, for the report); it never keeps the values.

Reading bakes into the pixels what the metadata would otherwise be needed for: the EXIF orientation
(the photo stays upright) and the ICC profile (colours are converted to sRGB, the default that
viewers assume once the profile is gone).
"""
from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

from .atomic import atomic_output
from .containers import file_size, png_chunks, riff_chunks
from .errors import DiskFull, EncodeError, InputError, is_disk_full

pillow_heif.register_heif_opener()

PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"})
#: Pillow format names we read and write; MPO (multi-picture JPEG from many cameras) reads as JPEG.
_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WEBP", "HEIF": "HEIF"}

#: EXIF tags (IFD0 or the Exif sub-IFD) worth naming in the report, by label.
_EXIF_TAGS = {
    0x010F: "exif:make", 0x0110: "exif:model", 0xA433: "exif:lens", 0xA434: "exif:lens",
    0x0132: "exif:datetime", 0x9003: "exif:datetime", 0x9004: "exif:datetime",
    0x9010: "exif:datetime", 0x9011: "exif:datetime", 0x9012: "exif:datetime",
    0xA431: "exif:serial", 0xA435: "exif:serial", 0xA430: "exif:owner", 0x013B: "exif:artist",
    0x8298: "exif:copyright", 0x9C9D: "exif:artist", 0xA420: "exif:unique-id",
    0x0131: "exif:software", 0x010E: "exif:description", 0x9286: "exif:comment",
    0x9C9C: "exif:comment", 0x927C: "exif:makernote",
}
#: JPEG APPn segments that are part of the format, not metadata.
_HARMLESS_APP = ((b"JFIF\0", "APP0"), (b"Adobe", "APP14"))


@dataclass(frozen=True, eq=False)
class PhotoInfo:
    """What :func:`write_photo` needs to write the same kind of file, plus the report's list."""

    format: str  # "JPEG", "PNG", "WEBP" or "HEIF"
    size: tuple[int, int]  # (width, height), upright
    removed: list[str] = field(default_factory=list)  # kinds of identifying metadata, no values
    alpha: np.ndarray | None = None  # (h, w) uint8, kept so transparent PNG/WebP round-trip
    lossless: bool = False  # a lossless WebP stays lossless


def read_photo(path: Path) -> tuple[np.ndarray, PhotoInfo]:
    """Decode ``path`` to upright sRGB BGR uint8 pixels and a :class:`PhotoInfo`.

    Raises :class:`InputError` for a missing, unsupported, truncated or corrupt file.
    """
    path = Path(path)
    if path.suffix.lower() not in PHOTO_EXTENSIONS:
        raise InputError(f"{path}: not a supported photo type ({', '.join(sorted(PHOTO_EXTENSIONS))})")
    try:
        with Image.open(path) as im:
            fmt = _FORMATS.get(im.format or "")
            if fmt is None:
                raise InputError(f"{path}: {im.format} images are not supported")
            frames = getattr(im, "n_frames", 1)
            if fmt in ("PNG", "WEBP") and frames > 1:  # APNG, animated WebP: every frame may show faces
                raise InputError(f"{path}: animated images are not supported ({frames} frames); "
                                 "convert to a video")
            im.load()  # decode now: truncated/corrupt data fails here, not later
            removed = _identifying_metadata(im, path)
            lossless = fmt == "WEBP" and _webp_is_lossless(path)
            icc = im.info.get("icc_profile")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # odd EXIF: still transpose what can be read
                upright = ImageOps.exif_transpose(im)
            rgb, alpha = _to_srgb(upright, icc)
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from exc
    except OSError as exc:
        if exc.errno is not None:  # the file system refused (permissions, a folder, ...)
            raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
        raise InputError(f"{path}: corrupt or truncated image ({exc})") from exc
    except (SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise InputError(f"{path}: corrupt image ({exc})") from exc
    except RuntimeError as exc:  # pillow-heif: libheif's errors, e.g. a size past its security limits
        raise InputError(f"{path}: corrupt or unsupported image ({exc})") from exc
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    info = PhotoInfo(fmt, (bgr.shape[1], bgr.shape[0]), removed, alpha, lossless)
    return bgr, info


def write_photo(bgr: np.ndarray, path: Path, info: PhotoInfo, quality: int = 92) -> None:
    """Write ``bgr`` to ``path`` as a new ``info.format`` file carrying no metadata at all.

    The format is the input's (``info.format``), whatever ``path``'s extension says. PNG (and
    lossless WebP) stay lossless; ``quality`` applies to JPEG, lossy WebP and HEIF. Only the main
    image is written (no thumbnails, previews or depth maps). The file appears under ``path`` only
    once complete. Raises :class:`EncodeError` on failure.
    """
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected BGR uint8 pixels (h, w, 3), got {bgr.dtype} {bgr.shape}")
    pixels = bgr[:, :, ::-1]
    if info.alpha is not None and info.format != "JPEG":
        if info.alpha.shape != bgr.shape[:2]:
            raise ValueError(f"alpha {info.alpha.shape} does not match pixels {bgr.shape[:2]}")
        pixels = np.dstack([pixels, info.alpha])
    # A fresh image from the array: its info is empty, so no encoder can copy metadata from it.
    image = Image.fromarray(np.ascontiguousarray(pixels))
    options = {
        "JPEG": {"quality": quality},
        "PNG": {"compress_level": 6},
        "WEBP": {"lossless": True} if info.lossless else {"quality": quality},
        "HEIF": {"quality": quality},
    }
    if info.format not in options:
        raise EncodeError(f"{path}: cannot write {info.format} images")
    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            image.save(tmp, format=info.format, **options[info.format])
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(f"{path}: no space left on the disk while writing the photo") from exc
        raise EncodeError(f"{path}: cannot write the photo ({exc})") from exc
    except (ValueError, KeyError, RuntimeError) as exc:  # encoder refused (e.g. HEIF encoder missing)
        raise EncodeError(f"{path}: cannot encode the photo as {info.format} ({exc})") from exc


def _to_srgb(im: Image.Image, icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB uint8 pixels converted to sRGB through ``icc`` when present, and the alpha channel."""
    alpha = None
    if "A" in im.getbands() or "transparency" in im.info:
        rgba = im.convert("RGBA")
        alpha = np.array(rgba.getchannel("A"))
        im = rgba.convert("RGB")
    elif im.mode.startswith("I"):  # 16-bit greyscale PNG: scale, as Pillow's convert would clip
        im = Image.fromarray((np.asarray(im, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8))
    elif im.mode not in ("RGB", "L", "CMYK"):
        im = im.convert("RGB")
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            im = ImageCms.profileToProfile(im, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a broken or mismatched profile: keep the colours as they are
    return np.asarray(im.convert("RGB")), alpha


def _identifying_metadata(im: Image.Image, path: Path) -> list[str]:
    """Names (never values) of the identifying metadata ``im`` carries."""
    found: set[str] = set()
    info = im.info
    try:
        exif = im.getexif()
        if len(exif) or info.get("exif"):
            found.add("exif")
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        found.update(label for tag, label in _EXIF_TAGS.items() if exif.get(tag) or sub.get(tag))
        if exif.get_ifd(ExifTags.IFD.GPSInfo) or ExifTags.IFD.GPSInfo in exif:
            found.add("exif:gps")
        ifd1 = exif.get_ifd(ExifTags.IFD.IFD1)
        if 0x0201 in ifd1 or 0x0111 in ifd1:  # JPEG or strip thumbnail: an unmasked copy of the photo
            found.add("thumbnail")
    except Exception:  # noqa: BLE001 - malformed EXIF is still EXIF, and still dropped
        if info.get("exif"):
            found.add("exif")
    if info.get("xmp") or info.get("XML:com.adobe.xmp"):
        found.add("xmp")
    if info.get("icc_profile"):
        found.add("icc")
    if info.get("comment") or info.get("Comment"):
        found.add("comment")
    photoshop = info.get("photoshop") or {}
    if photoshop:
        found.add("iptc" if 0x0404 in photoshop else "photoshop")
        if 0x0409 in photoshop or 0x040C in photoshop:
            found.add("thumbnail")
    extra = getattr(im, "n_frames", 1) - 1
    if im.format == "MPO" and extra > 0:
        # previews, the other stereo eye, depth maps of the same scene: only the primary is kept
        found.add(f"mpo: {extra} extra picture{'s' if extra > 1 else ''}")
    elif extra > 0:
        found.add("extra-images")  # HEIF collections, bursts: only the main image is kept
    if info.get("thumbnails"):  # pillow_heif: HEIF thumbnails, depth maps, auxiliary images
        found.add("thumbnail")
    if info.get("depth_images") or info.get("aux"):
        found.add("extra-images")
    if info.get("metadata"):  # HEIF metadata items other than EXIF/XMP
        found.add("heif:metadata")
    for marker, data in getattr(im, "applist", []):
        found.update(_jpeg_app_label(marker, data))
    if any(label.startswith("mpo: ") for label in found):
        found.discard("extra-images")  # the MPF segment: already named with its count
    if im.format == "PNG":
        found.update(_png_chunk_labels(path))
    return sorted(found)


def _jpeg_app_label(marker: str, data: bytes) -> list[str]:
    if marker == "COM":
        return ["comment"]
    if any(data.startswith(sig) and marker == m for sig, m in _HARMLESS_APP):
        return []
    if marker == "APP0" and data.startswith(b"JFXX"):
        return ["thumbnail"]  # JFIF extension thumbnail
    if marker == "APP1" and data.startswith(b"http://ns.adobe.com/xmp/extension/"):
        return ["xmp"]
    if marker == "APP2" and data.startswith(b"MPF"):
        return ["extra-images"]
    if marker == "APP2" and data.startswith(b"FPXR"):
        return ["flashpix"]
    if marker == "APP11":
        return ["c2pa"]  # JUMBF content credentials: signed claims that may name the author
    known = ((b"Exif", "APP1"), (b"http://ns.adobe.com/xap/1.0/", "APP1"),
             (b"ICC_PROFILE", "APP2"), (b"Photoshop 3.0", "APP13"))
    if any(data.startswith(sig) and marker == m for sig, m in known):
        return []  # already named from Pillow's parse above
    return [f"jpeg:{marker.lower()}"]  # vendor segment (Ducky, PictureInfo, ...)


def _png_chunk_labels(path: Path) -> set[str]:
    """Labels from a walk over the PNG chunk list (Pillow does not surface tIME or caBX)."""
    labels = {b"tEXt": "png:text", b"zTXt": "png:text", b"iTXt": "png:text", b"tIME": "png:time",
              b"eXIf": "exif", b"iCCP": "icc", b"caBX": "c2pa"}
    with open(path, "rb") as f:
        return {labels[c.kind] for c in png_chunks(f, file_size(f)) if c.kind in labels}


def _webp_is_lossless(path: Path) -> bool:
    """True when the WebP's image chunk is VP8L (lossless)."""
    with open(path, "rb") as f:
        if f.read(12)[8:12] != b"WEBP":
            return False
        for chunk in riff_chunks(f, file_size(f)):
            if chunk.kind in (b"VP8 ", b"VP8L"):
                return chunk.kind == b"VP8L"
    return False
