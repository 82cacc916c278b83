"""One virtual raster over the masks of every scene of a mapping job: `mosaic.vrt`, a band per class.

A VRT (GDAL's XML virtual format) only points at the scenes' mask GeoTIFFs, so QGIS or a tile server streams a whole
region without a copy of it. Scenes are placed by their geotransform on a grid of the finest pixel size among them;
where scenes overlap, the later one's valid pixels win (its mask band decides). Scenes in another CRS than the
first cannot share its grid: they get a VRT of their own, `mosaic-<EPSG code>.vrt`.
"""

import math
import os
from xml.sax.saxutils import escape

from imseg.geo import require
from imseg.outputs import write_text


def write_mosaic(output, class_folders, stems):
    """Write `output/mosaic.vrt` (and one per further CRS) over `output/masks/<folder>/<stem>.tif` for the given
    class folders (one band each, in order) and scene stems; returns the files written."""
    rasterio, _ = require()
    groups = {}
    for stem in stems:
        first = os.path.join(output, "masks", class_folders[0], stem + ".tif")
        if not os.path.exists(first):
            continue
        with rasterio.open(first) as src:
            if src.crs is None:
                continue
            groups.setdefault(src.crs.to_string(), []).append((stem, src.transform, src.width, src.height, src.crs))
    written = []
    for i, (crs, scenes) in enumerate(groups.items()):
        name = "mosaic.vrt" if i == 0 else f"mosaic-{crs.replace(':', '_')}.vrt"
        write_text(os.path.join(output, name), _vrt(scenes, class_folders))
        written.append(name)
    return written


def _vrt(scenes, class_folders):
    step = min(min(abs(t.a), abs(t.e)) for _, t, _, _, _ in scenes)
    lefts = [t.c for _, t, _, _, _ in scenes]
    rights = [t.c + w * t.a for _, t, w, _, _ in scenes]
    tops = [t.f for _, t, _, _, _ in scenes]
    bottoms = [t.f + h * t.e for _, t, _, h, _ in scenes]
    left, top = min(lefts), max(tops)
    width, height = math.ceil((max(rights) - left) / step), math.ceil((top - min(bottoms)) / step)
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"  <SRS>{escape(scenes[0][4].to_wkt())}</SRS>",
             f"  <GeoTransform>{left!r}, {step!r}, 0.0, {top!r}, 0.0, {-step!r}</GeoTransform>"]  # fmt: skip
    for band, folder in enumerate(class_folders, start=1):
        lines += [
            f'  <VRTRasterBand dataType="Byte" band="{band}">',
            f"    <Description>{escape(folder)}</Description>",
        ]
        for stem, t, w, h, _ in scenes:
            x, y = (t.c - left) / step, (top - t.f) / step
            lines += [
                "    <ComplexSource>",
                f'      <SourceFilename relativeToVRT="1">{escape(f"masks/{folder}/{stem}.tif")}</SourceFilename>',
                "      <SourceBand>1</SourceBand>",
                f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
                f'      <DstRect xOff="{x!r}" yOff="{y!r}" xSize="{w * abs(t.a) / step!r}" '
                f'ySize="{h * abs(t.e) / step!r}"/>',
                "      <UseMaskBand>true</UseMaskBand>",
                "    </ComplexSource>",
            ]
        lines.append("  </VRTRasterBand>")
    return "\n".join(lines + ["</VRTDataset>", ""])
