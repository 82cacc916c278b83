"""Reading source imagery of any size (JPEG, PNG, GeoTIFF) and writing tiles, with Pillow (and rasterio)."""

import contextlib
import os

import numpy as np
from PIL import Image

from imseg.errors import ConfigError, DataError

GEOTIFF = (".tif", ".tiff")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EIGHT_BIT = "imseg reads 8-bit imagery (rescale it to 0-255 first)"


def check_bit_depth(path, header):
    """Refuse a PNG of more than 8 bits per sample, given the file's first bytes (its IHDR says)."""
    if header[:8] == _PNG_SIGNATURE and len(header) > 24 and header[24] > 8:
        raise DataError(f"{path}: {header[24]}-bit PNG; {EIGHT_BIT}")


@contextlib.contextmanager
def _large_images():
    """Aerial mosaics are legitimately larger than Pillow's decompression-bomb guard (89 megapixels): lift it
    for imseg's own reads only, not for every program that imports imseg."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _rasterio():
    try:
        import rasterio
    except ImportError:
        raise ConfigError("reading GeoTIFF needs rasterio: pip install 'imseg[geo]'") from None
    return rasterio


def read_image(path, with_valid=False):
    """(h, w, 3) uint8 RGB; grayscale is repeated, alpha dropped, GeoTIFF bands 1-3 read.

    With `with_valid`, returns (image, valid) where `valid` (h, w) bool is false where the image has no
    data: GeoTIFF nodata or internal mask, or a transparent pixel of an image with alpha.
    """
    if path.lower().endswith(GEOTIFF):
        with _rasterio().open(path) as src:
            bands = src.read(list(range(1, min(src.count, 3) + 1)))
            valid = src.dataset_mask() > 0 if with_valid else None
        array = np.moveaxis(bands, 0, -1)
        if array.dtype != np.uint8:
            raise DataError(f"{path}: {array.dtype} GeoTIFF; {EIGHT_BIT}")
    else:
        try:
            with open(path, "rb") as f:
                check_bit_depth(path, f.read(32))
            with _large_images(), Image.open(path) as img:
                if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                    raise DataError(f"{path}: {img.mode} image; {EIGHT_BIT}")
                array = np.asarray(img.convert("RGB"))
                alpha = "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info)
                valid = np.asarray(img.convert("RGBA"))[..., 3] > 0 if with_valid and alpha else None
        except OSError as e:
            raise DataError(f"{path}: unreadable image: {e}") from None
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if not with_valid:
        return array
    return array, np.ones(array.shape[:2], bool) if valid is None else valid


def read_mask(path, mask_type):
    """Colour masks -> (h, w, 3) uint8 RGB; index and binary masks -> (h, w) integer values."""
    try:
        if path.lower().endswith(GEOTIFF):
            with _rasterio().open(path) as src:
                bands = src.read()
            array = np.moveaxis(bands, 0, -1)
            return array[..., :3] if mask_type == "color" else array[..., 0]
        with _large_images(), Image.open(path) as img:
            if mask_type == "color":
                return np.asarray(img.convert("RGB"))
            array = np.asarray(img if img.mode in ("L", "P", "I", "I;16", "1") else img.convert("L"))
            return array.astype(np.int64) if array.ndim == 2 else array[..., 0]
    except OSError as e:
        raise DataError(f"{path}: unreadable mask: {e}") from None


def write_image(path, array):
    """Write a tile: JPEG (quality 95) for .jpg, PNG otherwise."""
    img = Image.fromarray(array)
    if os.path.splitext(path)[1].lower() in (".jpg", ".jpeg"):
        img.save(path, quality=95)
    else:
        img.save(path)
