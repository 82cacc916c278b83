"""Dataset tools behind `imseg-data`: convert imagery and masks to the AIR layout, verify it, show it."""
