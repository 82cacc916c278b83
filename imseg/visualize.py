"""Pictures for people: per-class colours, mask overlays, legends and contact sheets (Pillow)."""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from imseg.tasks import BACKGROUND

# Distinct, saturated colours that stay visible over aerial imagery: Sasha Trubetskoy's "20 simple, distinct
# colours" (2017), in his order, without white, black and greys.
PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
]


def class_colours(class_names):
    """{class name: (r, g, b)}; stable for a given class list."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(class_names)}


def hex_colour(rgb):
    """(r, g, b) -> "#RRGGBB"."""
    return "#{:02X}{:02X}{:02X}".format(*rgb)


def drawn_colours(class_names):
    """The colours `overlay` draws each class in; None for the implicit background (never drawn)."""
    return [None if name == BACKGROUND else colour for name, colour in class_colours(class_names).items()]


def displayable(image, value_range=None):
    """An image of any bands and pixel type as 8-bit RGB to draw on: `value_range` (low, high) maps to 0-255
    (default: 0-255 for 8-bit pixels, else the image's own 1st-99th percentiles); one band is repeated as grey,
    bands after the third are left out."""
    image = np.asarray(image)
    if value_range is None and image.dtype != np.uint8:
        value_range = np.percentile(image, [1, 99]) if image.size else (0, 1)
    if value_range is not None and tuple(value_range) != (0, 255):
        low, high = value_range
        image = np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1) * 255
    image = np.clip(image, 0, 255).astype(np.uint8)
    return np.repeat(image[..., :1], 3, axis=-1) if image.shape[-1] < 3 else image[..., :3]


def overlay(image, masks, colours, alpha=0.5):
    """Blend each class's mask (h, w, C) onto the RGB image in its colour, with an opaque outline.

    Later classes are drawn over earlier ones where masks overlap.
    """
    out = image.astype(np.float32).copy()
    for k, colour in enumerate(colours):
        m = masks[..., k] > 0
        if colour is None or not m.any():
            continue
        out[m] = (1 - alpha) * out[m] + alpha * np.array(colour, np.float32)
        edge = m & ~_erode(m)
        out[edge] = colour
    return np.clip(out, 0, 255).astype(np.uint8)


def _erode(m):
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return inner


def legend(colours, width=None):
    """An image listing each class next to a swatch of its colour."""
    font = ImageFont.load_default()
    row = 18
    width = width or 16 + 8 + max(8 * len(name) for name in colours) + 24
    img = Image.new("RGB", (width, 8 + row * len(colours)), "white")
    draw = ImageDraw.Draw(img)
    for i, (name, colour) in enumerate(colours.items()):
        y = 4 + i * row
        draw.rectangle([6, y + 2, 20, y + 14], fill=tuple(colour), outline="black")
        draw.text((28, y + 2), name, fill="black", font=font)
    return img


def contact_sheet(cells, colours, columns=4, title=None, scale=None):
    """Grid of (caption, RGB array) cells with a legend underneath; returns a PIL image.

    Small tiles are enlarged (nearest neighbour) so that a person can see them.
    """
    height = max(a.shape[0] for _, a in cells)
    width = max(a.shape[1] for _, a in cells)
    scale = scale or max(1, 192 // max(height, width))
    cell_w, cell_h, caption, gap = width * scale, height * scale, 14, 8
    rows = -(-len(cells) // columns)
    key = legend(colours)
    head = 20 if title else 0
    font = ImageFont.load_default()
    sheet = Image.new(
        "RGB",
        (
            max(columns * (cell_w + gap) + gap, key.width + 2 * gap),
            head + rows * (cell_h + caption + gap) + gap + key.height,
        ),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((gap, 4), title, fill="black", font=font)
    for i, (text, array) in enumerate(cells):
        x = gap + (i % columns) * (cell_w + gap)
        y = head + gap + (i // columns) * (cell_h + caption + gap)
        tile = Image.fromarray(array).resize((array.shape[1] * scale, array.shape[0] * scale), Image.NEAREST)
        sheet.paste(tile, (x, y))
        draw.text((x, y + cell_h + 1), text, fill="black", font=font)
    sheet.paste(key, (gap, head + rows * (cell_h + caption + gap) + gap))
    return sheet


def side_by_side(left, right, gap=4):
    """Two RGB arrays of one height next to each other, with a white gap."""
    return np.concatenate([left, np.full((left.shape[0], gap, 3), 255, np.uint8), right], axis=1)


def confusion_picture(matrix, class_names, cell=40):
    """A confusion matrix (rows: truth, columns: prediction) as an image: each cell shaded by its share of its
    row and labelled with that share in percent; class names along both axes."""
    matrix = np.asarray(matrix, np.float64)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    font = ImageFont.load_default()
    label = 8 + 7 * max(len(n) for n in class_names)
    k = len(class_names)
    img = Image.new("RGB", (label + k * cell + 8, label + k * cell + 8), "white")
    draw = ImageDraw.Draw(img)
    for i, name in enumerate(class_names):
        draw.text((4, label + i * cell + cell // 2 - 5), name, fill="black", font=font)  # rows: truth
        draw.text((label + i * cell + 2, 4 + (i % 2) * 12), name[: cell // 7 + 2], fill="black", font=font)
        for j in range(k):
            shade = int(255 * (1 - shares[i, j]))
            box = (label + j * cell, label + i * cell, label + (j + 1) * cell - 1, label + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255), outline=(200, 200, 200))
            draw.text((box[0] + 4, box[1] + cell // 2 - 5), f"{100 * shares[i, j]:.0f}%",
                      fill="white" if shares[i, j] > 0.5 else "black", font=font)  # fmt: skip
    return img
