"""Geospatial input and output: vector labels into masks, windowed rasters, masks into polygons.

Imported by the data tools and inference only, and only when needed: it needs the `geo` extra
(`pip install 'imseg[geo]'`: rasterio and shapely).
"""

from imseg.errors import ConfigError


def require():
    """rasterio and shapely, or one line saying which extra installs them."""
    try:
        import rasterio
        import shapely
    except ImportError as e:
        raise ConfigError(f"this needs {e.name}: pip install 'imseg[geo]'") from None
    return rasterio, shapely
