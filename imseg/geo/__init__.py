"""Geospatial input and output: vector labels into masks, windowed rasters, masks into polygons.

Imported by the data tools and inference only, and only when needed: it needs the `geo` extra
(`pip install 'imseg[geo]'`: rasterio and shapely).
"""

import os

from imseg.errors import ConfigError

# GDAL's block cache defaults to 5 % of RAM and fills with every block of a scene read once: 1.3 GB more peak
# memory for a 20,000 px scene. Scenes are read in windows, once each, so a small cache loses nothing. GDAL reads
# the variable when it first caches a block; a value the user set wins.
GDAL_CACHE_MB = "256"


def require():
    """rasterio and shapely, or one line saying which extra installs them."""
    os.environ.setdefault("GDAL_CACHEMAX", GDAL_CACHE_MB)
    try:
        import rasterio
        import shapely
    except ImportError as e:
        raise ConfigError(f"this needs {e.name}: pip install 'imseg[geo]'") from None
    return rasterio, shapely
