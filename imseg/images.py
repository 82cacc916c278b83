"""Reading source imagery of any size (JPEG, PNG, GeoTIFF) and writing tiles, with Pillow (and rasterio)."""

import contextlib
import os

import numpy as np
from PIL import Image

from imseg.errors import ConfigError, DataError

GEOTIFF = (".tif", ".tiff")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EIGHT_BIT = "PNG and JPEG must be 8-bit (give 16-bit and float imagery as GeoTIFF, which imseg reads exactly)"


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


PIXEL_TYPES = ("uint8", "uint16", "int16", "float32")  # read exactly; float64 is read as float32


def read_image(path, with_valid=False, bands=None, resolution=None):
    """An image as (h, w, C): GeoTIFF bands in their own pixel type (default: every band but alpha), JPEG and
    PNG as 8-bit RGB (grayscale repeated, alpha dropped). `bands` (1-based) selects and orders the bands.
    `resolution` (metres per pixel) resamples a GeoTIFF in a metric CRS bilinearly to that ground sample distance.

    With `with_valid`, returns (image, valid) where `valid` (h, w) bool is false where the image has no
    data: GeoTIFF nodata or internal mask, or a transparent pixel of an image with alpha.
    """
    if path.lower().endswith(GEOTIFF):
        rasterio = _rasterio()
        with rasterio.open(path) as dataset, resampled(dataset, path, resolution) as src:
            alpha = {i + 1 for i, c in enumerate(src.colorinterp) if c == rasterio.enums.ColorInterp.alpha}
            chosen = list(bands) if bands else [b for b in range(1, src.count + 1) if b not in alpha]
            _check_bands(path, chosen, src.count)
            array = np.moveaxis(src.read(chosen), 0, -1)
            valid = src.dataset_mask() > 0 if with_valid else None
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        if array.dtype.name not in PIXEL_TYPES:
            raise DataError(f"{path}: {array.dtype} pixels; imseg reads {', '.join(PIXEL_TYPES)} rasters")
        return (array, valid) if with_valid else array
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
    if bands:
        _check_bands(path, bands, 3)
        array = array[..., [b - 1 for b in bands]]
    if not with_valid:
        return array
    return array, np.ones(array.shape[:2], bool) if valid is None else valid


@contextlib.contextmanager
def rows_of(path, bands=None, resolution=None):
    """(height, width, rows) of an image, `rows(y0, y1)` giving (pixels (y1 - y0, w, C), valid (y1 - y0, w) bool)
    as `read_image` reads them: a GeoTIFF window by window, so that memory holds a strip and not the scene; any
    other image read whole once."""
    if not path.lower().endswith(GEOTIFF):
        image, valid = read_image(path, with_valid=True, bands=bands)
        yield image.shape[0], image.shape[1], lambda y0, y1: (image[y0:y1], valid[y0:y1])
        return
    rasterio = _rasterio()
    from rasterio.windows import Window

    with rasterio.open(path) as dataset, resampled(dataset, path, resolution) as src:
        alpha = {i + 1 for i, c in enumerate(src.colorinterp) if c == rasterio.enums.ColorInterp.alpha}
        chosen = list(bands) if bands else [b for b in range(1, src.count + 1) if b not in alpha]
        _check_bands(path, chosen, src.count)
        dtype = np.dtype(src.dtypes[chosen[0] - 1])
        if dtype == np.float64:
            dtype = np.dtype(np.float32)
        if dtype.name not in PIXEL_TYPES:
            raise DataError(f"{path}: {dtype} pixels; imseg reads {', '.join(PIXEL_TYPES)} rasters")

        def rows(y0, y1):
            window = Window(0, y0, src.width, y1 - y0)
            pixels = np.moveaxis(src.read(chosen, window=window), 0, -1).astype(dtype, copy=False)
            return pixels, src.dataset_mask(window=window) > 0

        yield src.height, src.width, rows


def _check_bands(path, bands, count):
    wrong = [b for b in bands if not 1 <= b <= count]
    if wrong:
        raise DataError(f"{path}: band {wrong[0]} asked for (bands: {list(bands)}), but the image has {count} band(s)")


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


def georeference(path, resolution=None):
    """{"crs", "transform"} of a georeferenced GeoTIFF (rasterio objects; at `resolution` when given), else None."""
    if not path.lower().endswith(GEOTIFF):
        return None
    with _rasterio().open(path) as dataset, resampled(dataset, path, resolution) as src:
        if src.crs is None or src.transform.is_identity:
            return None
        return {"crs": src.crs, "transform": src.transform}


def pixel_size(dataset):
    """The ground sample distance of a dataset in metres per pixel, or None outside a metric CRS."""
    crs = dataset.crs
    if crs is None or not crs.is_projected or dataset.transform.is_identity:
        return None
    return abs(dataset.transform.a) * (crs.linear_units_factor[1] or 1.0)


@contextlib.contextmanager
def resampled(dataset, path, resolution, resampling="bilinear"):
    """`dataset` as it is (no `resolution`), or a WarpedVRT of it at `resolution` metres per pixel over the same
    extent, in its own CRS, which must be metric (a DataError names the file otherwise)."""
    if resolution is None:
        yield dataset
        return
    rasterio = _rasterio()
    from rasterio.transform import from_origin
    from rasterio.vrt import WarpedVRT

    if pixel_size(dataset) is None:
        crs = dataset.crs.to_string() if dataset.crs else "no CRS"
        raise DataError(f"{path}: --resolution resamples scenes in a projected CRS in metres; this one has {crs} "
                        "(reproject it first, e.g. with gdalwarp -t_srs to its UTM zone)")  # fmt: skip
    step = resolution / (dataset.crs.linear_units_factor[1] or 1.0)
    left, bottom, right, top = dataset.bounds
    width, height = max(1, round((right - left) / step)), max(1, round((top - bottom) / step))
    with WarpedVRT(dataset, crs=dataset.crs, transform=from_origin(left, top, step, step), width=width, height=height,
                   resampling=getattr(rasterio.enums.Resampling, resampling)) as vrt:  # fmt: skip
        yield vrt


def image_size(path, resolution=None):
    """(height, width) of an image file, from its header (at `resolution` for a GeoTIFF, when given)."""
    if path.lower().endswith(GEOTIFF):
        with _rasterio().open(path) as dataset, resampled(dataset, path, resolution) as src:
            return src.height, src.width
    with _large_images(), Image.open(path) as img:
        return img.height, img.width


def tile_extension(image):
    """The AIR layout keeps JPEG for 3-band 8-bit tiles; other bands and pixel types go to GeoTIFF."""
    return ".jpg" if image.dtype == np.uint8 and image.shape[-1] == 3 else ".tif"


def write_image(path, array, georef=None):
    """Write a tile: JPEG (quality 95) for .jpg, GeoTIFF for .tif (any bands and pixel type, with `georef`'s
    CRS and transform when given), PNG otherwise."""
    ext = os.path.splitext(path)[1].lower()
    if ext in GEOTIFF:
        # Every band is data (the source's alpha is never in a tile): without MINISBLACK, GDAL tags the 4th band
        # of an 8-bit image alpha, and an RGB+NIR tile would be read back as RGB.
        profile = {"driver": "GTiff", "height": array.shape[0], "width": array.shape[1], "count": array.shape[2],
                   "dtype": array.dtype.name, "compress": "deflate", "photometric": "MINISBLACK",
                   **(georef or {})}  # fmt: skip
        with _rasterio().open(path, "w", **profile) as dst:
            dst.write(np.moveaxis(array, -1, 0))
        return
    img = Image.fromarray(array)
    if ext in (".jpg", ".jpeg"):
        img.save(path, quality=95)
    else:
        img.save(path)
