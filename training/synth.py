"""Augmentations of real photographs and generators of every spam kind.

Every function takes a `random.Random` so the whole data set is a function of the seed.
All outputs are RGB PIL images at a working size (a few hundred pixels); `to_input` turns them into
the model's 64x64 input with a randomly chosen resampling filter, so the model does not depend on
the exact resizer the Rust processor uses.
"""

from __future__ import annotations

import io
import math
import random
import string
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

INPUT = 128
RESAMPLE = [Image.BILINEAR, Image.BICUBIC, Image.LANCZOS, Image.BOX, Image.HAMMING]

WORDS = (
    "when you the and finally monday coffee cat dog boss meeting weekend nobody me also literally "
    "every time my face they said one does not simply code works production friday deploy why is "
    "this happening expectations reality how it feels brain wake up alarm bed pizza diet starts "
    "tomorrow teacher exam sale offer free click here buy now limited discount invoice total report "
    "quarterly revenue growth chapter section introduction results method table figure page summary "
    "account settings profile login password username search home about contact help cancel submit "
    "save open file edit view tools window terminal server status error warning success dashboard "
    "camera network device storage update download upload share message inbox sent draft"
).split()

CAMERA_NAMES = ["CAM 01", "CAM 02", "CAM03", "CH04", "FRONT DOOR", "Parking Lot", "GARAGE",
                "Backyard", "LOBBY-2", "Entrance", "IPC", "Camera 7", "WAREHOUSE N", "Gate",
                "Driveway", "STORE 12 AISLE 3", "Office", "Street Cam", "NVR-CH5", "Dock B"]


class Fonts:
    """TrueType fonts from the packages in sources.toml, sorted into families by file name."""

    def __init__(self, paths: list[Path]):
        self.all = sorted(paths)
        self.bold = [p for p in self.all if "Bold" in p.name and "Oblique" not in p.name
                     and "Italic" not in p.name] or self.all
        self.condensed_bold = [p for p in self.bold if "Condensed" in p.name or "Narrow" in p.name] or self.bold
        self.mono = [p for p in self.all if "Mono" in p.name] or self.all
        self.regular = [p for p in self.all if "Bold" not in p.name and "Italic" not in p.name
                        and "Oblique" not in p.name and "Light" not in p.name] or self.all
        self._cache: dict[tuple[Path, int], ImageFont.FreeTypeFont] = {}

    def get(self, family: list[Path], size: int, rng: random.Random) -> ImageFont.FreeTypeFont:
        p = rng.choice(family)
        key = (p, max(6, int(size)))
        if key not in self._cache:
            self._cache[key] = ImageFont.truetype(str(p), key[1])
        return self._cache[key]


# ----------------------------------------------------------------------------- helpers

def rand_color(rng: random.Random, lo: int = 0, hi: int = 255) -> tuple[int, int, int]:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def jpeg(im: Image.Image, q: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=q)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def flatten_alpha(im: Image.Image, bg: tuple[int, int, int]) -> Image.Image:
    if im.mode == "RGBA":
        base = Image.new("RGB", im.size, bg)
        base.paste(im, mask=im.getchannel("A"))
        return base
    return im.convert("RGB")


def random_crop(im: Image.Image, rng: random.Random, min_area: float = 0.35,
                aspect: tuple[float, float] = (0.6, 1.9)) -> Image.Image:
    w, h = im.size
    for _ in range(10):
        area = rng.uniform(min_area, 1.0) * w * h
        ar = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
        cw, ch = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
        if 16 <= cw <= w and 16 <= ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return im.crop((x, y, x + cw, y + ch))
    return im


def fit(im: Image.Image, max_side: int) -> Image.Image:
    if max(im.size) <= max_side:
        return im
    s = max_side / max(im.size)
    return im.resize((max(1, int(im.width * s)), max(1, int(im.height * s))), Image.BILINEAR)


def to_input(im: Image.Image, rng: random.Random) -> np.ndarray:
    """The model's view: stretch to INPUT×INPUT (manifest `resize: stretch`), uint8 HWC RGB."""
    im = im.convert("RGB")
    if rng.random() < 0.5 and max(im.size) > 4 * INPUT:
        # Mimic a DCT-scaled JPEG decode (1/2..1/8) followed by a smaller resize.
        f = rng.choice([2, 4])
        im = im.resize((max(INPUT, im.width // f), max(INPUT, im.height // f)), Image.BOX)
    im = im.resize((INPUT, INPUT), rng.choice(RESAMPLE))
    return np.asarray(im, dtype=np.uint8)


# ----------------------------------------------------------------------------- legitimate photos

def photometric(im: Image.Image, rng: random.Random) -> Image.Image:
    """Exposure, contrast, colour, blur, sensor noise: what different cameras and light do."""
    if rng.random() < 0.8:
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.6, 1.35))
    if rng.random() < 0.6:
        im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.6, 1.4))
    if rng.random() < 0.5:
        im = ImageEnhance.Color(im).enhance(rng.uniform(0.3, 1.5))
    if rng.random() < 0.25:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.8)))
    if rng.random() < 0.1:
        im = ImageOps.grayscale(im).convert("RGB")  # IR / monochrome cameras
    return im


def add_noise(im: Image.Image, rng: random.Random, sigma: float) -> Image.Image:
    a = np.asarray(im, dtype=np.float32)
    nrng = np.random.default_rng(rng.getrandbits(32))
    a = a + nrng.normal(0, sigma, a.shape).astype(np.float32)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def night(im: Image.Image, rng: random.Random) -> Image.Image:
    """A dark scene: low exposure, lifted noise, often monochrome IR or a colour cast."""
    a = np.asarray(im, dtype=np.float32) / 255.0
    a = np.power(a, rng.uniform(1.2, 2.2)) * rng.uniform(0.18, 0.45)
    out = Image.fromarray(np.clip(a * 255, 0, 255).astype(np.uint8))
    if rng.random() < 0.4:
        out = ImageOps.grayscale(out).convert("RGB")
    elif rng.random() < 0.4:
        cast = np.array(rand_color(rng, 160, 255), dtype=np.float32) / 255
        out = Image.fromarray(np.clip(np.asarray(out, np.float32) * cast, 0, 255).astype(np.uint8))
    return add_noise(out, rng, rng.uniform(2, 9))


def fog(im: Image.Image, rng: random.Random) -> Image.Image:
    """Fog, haze, a dirty or misted lens: contrast collapses toward a light grey."""
    k = rng.uniform(0.35, 0.7)
    grey = Image.new("RGB", im.size, tuple([rng.randint(170, 235)] * 3))
    out = Image.blend(im, grey, k)
    if rng.random() < 0.5:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5)))
    return out


def osd(im: Image.Image, rng: random.Random, fonts: Fonts) -> Image.Image:
    """Burn in a CCTV on-screen display: timestamp and camera name. NOT spam."""
    im = im.copy()
    d = ImageDraw.Draw(im)
    w, h = im.size
    size = max(8, int(h * rng.uniform(0.03, 0.065)))
    font = fonts.get(fonts.mono + fonts.bold + fonts.regular, size, rng)
    t = datetime(2020, 1, 1) + timedelta(seconds=rng.randint(0, 6 * 365 * 86400))
    fmt = rng.choice(["%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%m-%d-%Y %a %H:%M:%S",
                      "%Y/%m/%d %H:%M:%S", "%d.%m.%Y %H:%M"])
    stamp = t.strftime(fmt)
    name = rng.choice(CAMERA_NAMES)
    color = rng.choice([(255, 255, 255), (255, 255, 255), (255, 255, 0), (230, 230, 230), (0, 255, 0)])
    stroke = rng.choice([0, 0, 1, 2])
    box = rng.random() < 0.25
    margin = int(size * 0.6)
    texts = [stamp, name] if rng.random() < 0.8 else [stamp]
    corners = ["tl", "tr", "bl", "br"]
    rng.shuffle(corners)
    if rng.random() < 0.5:  # both on one line
        texts = ["  ".join(texts)]
    for text, corner in zip(texts, corners):
        bw = d.textlength(text, font=font)
        x = margin if corner[1] == "l" else w - margin - bw
        y = margin if corner[0] == "t" else h - margin - size
        if box:
            d.rectangle([x - 3, y - 2, x + bw + 3, y + size + 2], fill=(0, 0, 0))
        d.text((x, y), text, font=font, fill=color, stroke_width=stroke, stroke_fill=(0, 0, 0))
    return im


def cctv_frame(src: Image.Image, rng: random.Random) -> Image.Image:
    """A camera's framing of a scene: a crop at a camera aspect ratio."""
    im = random_crop(src, rng, min_area=0.3, aspect=(0.75, 1.9))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    return im


def vivid(im: Image.Image, rng: random.Random) -> Image.Image:
    """Saturated colour and strong contrast: phone cameras' 'vivid' modes, flowers in sun."""
    im = ImageEnhance.Color(im).enhance(rng.uniform(1.4, 2.4))
    return ImageEnhance.Contrast(im).enhance(rng.uniform(1.1, 1.5))


def macro(im: Image.Image, rng: random.Random) -> Image.Image:
    """A close-up: a small crop blown up, with a shallow depth of field (sharp centre, soft edges)."""
    im = random_crop(im, rng, min_area=0.08, aspect=(0.75, 1.5))
    im = im.resize((max(64, im.width * 2), max(64, im.height * 2)), Image.BICUBIC)
    blurred = im.filter(ImageFilter.GaussianBlur(rng.uniform(2, 8)))
    w, h = im.size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    r = np.sqrt(((xx - cx) / w) ** 2 + ((yy - cy) / h) ** 2)
    mask = np.clip((r - rng.uniform(0.1, 0.3)) / 0.2, 0, 1)
    return Image.composite(blurred, im, Image.fromarray((mask * 255).astype(np.uint8)))


def wires(im: Image.Image, rng: random.Random) -> Image.Image:
    """Power lines or cables crossing the frame (over a sky they are most of the picture)."""
    im = im.copy()
    d = ImageDraw.Draw(im)
    w, h = im.size
    c = tuple([rng.randint(0, 70)] * 3)
    for _ in range(rng.randint(1, 5)):
        y0, y1 = rng.uniform(0, h), rng.uniform(0, h)
        sag = rng.uniform(0, h * 0.15)
        pts = [(w * t / 20, y0 + (y1 - y0) * t / 20 + sag * 4 * (t / 20) * (1 - t / 20)) for t in range(21)]
        d.line(pts, fill=c, width=rng.randint(1, 3))
    return im


def legit_photo(src: Image.Image, rng: random.Random, fonts: Fonts, osd_p: float = 0.35,
                variant: str | None = None) -> tuple[Image.Image, str]:
    """One augmented legitimate frame. Returns the image and its variant name."""
    im = flatten_alpha(src, (0, 0, 0))
    if rng.random() < 0.15:
        im = macro(im, rng)
    im = cctv_frame(im, rng)
    v = variant or rng.choices(["plain", "night", "fog"], [0.72, 0.16, 0.12])[0]
    im = photometric(im, rng)
    if v == "plain" and rng.random() < 0.2:
        im = vivid(im, rng)
    if rng.random() < 0.08:
        im = wires(im, rng)
    if v == "night":
        im = night(im, rng)
    elif v == "fog":
        im = fog(im, rng)
    elif rng.random() < 0.3:
        im = add_noise(im, rng, rng.uniform(1, 6))
    with_osd = rng.random() < osd_p
    if with_osd:
        im = osd(fit(im, 640), rng, fonts)
    im = jpeg(im, rng.randint(25, 95)) if rng.random() < 0.8 else im
    return im, v + ("+osd" if with_osd else "")


# ----------------------------------------------------------------------------- spam: memes

def draw_caption(d: ImageDraw.ImageDraw, text: str, box: tuple[int, int, int, int],
                 font_family: list[Path], fonts: Fonts, rng: random.Random,
                 fill=(255, 255, 255), stroke=(0, 0, 0), max_size: int | None = None) -> None:
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    size = max_size or int(bh * 0.8)
    words = text.split()
    size = max(9, size)
    while True:
        font = fonts.get(font_family, size, rng)
        lines, cur = [], ""
        for wd in words:
            trial = (cur + " " + wd).strip()
            if d.textlength(trial, font=font) <= bw * 0.96 or not cur:
                cur = trial
            else:
                lines.append(cur)
                cur = wd
        lines.append(cur)
        if size <= 9 or (len(lines) * size * 1.1 <= bh and all(d.textlength(ln, font=font) <= bw for ln in lines)):
            break
        size = int(size * 0.85)
    font = fonts.get(font_family, size, rng)
    y = y0 + (bh - len(lines) * size * 1.1) / 2
    sw = max(1, size // 14) if stroke else 0
    for ln in lines:
        lw = d.textlength(ln, font=font)
        d.text((x0 + (bw - lw) / 2, y), ln, font=font, fill=fill, stroke_width=sw, stroke_fill=stroke)
        y += size * 1.1


MEME_STYLES = ["classic", "band", "demotivational", "flat", "quote", "panels"]


def quote(base: Image.Image, rng: random.Random, fonts: Fonts) -> Image.Image:
    """An inspirational-quote post: a darkened or blurred photo under large centred text."""
    im = ImageEnhance.Brightness(base).enhance(rng.uniform(0.25, 0.65))
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(1, 6)))
    w, h = im.size
    d = ImageDraw.Draw(im)
    text = sentence(rng, rng.randint(6, 20))
    text = text[0].upper() + text[1:] + rng.choice([".", "", "!"])
    if rng.random() < 0.4:
        text = "\u201c" + text + "\u201d"
    family = rng.choice([fonts.regular, fonts.bold, fonts.all])
    fill = (255, 255, 255) if rng.random() < 0.8 else rand_color(rng, 180, 255)
    y0, y1 = int(h * rng.uniform(0.1, 0.3)), int(h * rng.uniform(0.65, 0.85))
    draw_caption(d, text, (int(w * 0.1), y0, int(w * 0.9), y1), family, fonts, rng, fill=fill, stroke=None,
                 max_size=int(h * rng.uniform(0.07, 0.12)))
    if rng.random() < 0.6:  # attribution
        name = "\u2014 " + " ".join(rng.choice(WORDS).title() for _ in range(2))
        draw_caption(d, name, (int(w * 0.2), y1 + int(h * 0.02), int(w * 0.8), y1 + int(h * 0.1)),
                     fonts.regular, fonts, rng, fill=fill, stroke=None)
    return im


def panels(photos: list[Image.Image], rng: random.Random, fonts: Fonts) -> Image.Image:
    """A reaction meme in panels: each row a photo beside a white cell of black text."""
    rows = rng.randint(2, 4)
    cell = rng.randint(160, 260)
    text_w = int(cell * rng.uniform(1.0, 1.6))
    photo_left = rng.random() < 0.7
    im = Image.new("RGB", (cell + text_w, cell * rows), (255, 255, 255))
    d = ImageDraw.Draw(im)
    family = rng.choice([fonts.regular, fonts.bold, fonts.condensed_bold])
    for r in range(rows):
        p = flatten_alpha(rng.choice(photos), (255, 255, 255))
        p = random_crop(p, rng, min_area=0.3, aspect=(0.8, 1.25)).resize((cell, cell), Image.BILINEAR)
        x_photo, x_text = (0, cell) if photo_left else (text_w, 0)
        im.paste(p, (x_photo, r * cell))
        draw_caption(d, sentence(rng, rng.randint(2, 9)),
                     (x_text + int(text_w * 0.06), r * cell + int(cell * 0.1), x_text + int(text_w * 0.94),
                      (r + 1) * cell - int(cell * 0.1)), family, fonts, rng, fill=(0, 0, 0), stroke=None,
                     max_size=int(cell * 0.16))
        if rng.random() < 0.5:
            d.line([0, (r + 1) * cell, im.width, (r + 1) * cell], fill=(0, 0, 0), width=2)
    return im


def meme(photos: list[Image.Image], rng: random.Random, fonts: Fonts, style: str | None = None) -> Image.Image:
    style = style or rng.choices(MEME_STYLES, [0.4, 0.16, 0.12, 0.12, 0.1, 0.1])[0]
    if style == "panels":
        return panels(photos, rng, fonts)
    base = flatten_alpha(rng.choice(photos), (255, 255, 255))
    base = fit(random_crop(base, rng, min_area=0.5, aspect=(0.7, 1.6)), 560)
    upper = rng.random() < 0.85
    top = sentence(rng, rng.randint(2, 7))
    bottom = sentence(rng, rng.randint(2, 7))
    if upper:
        top, bottom = top.upper(), bottom.upper()
    if style == "classic" or style == "flat":
        if style == "flat":
            base = Image.new("RGB", base.size, rand_color(rng))
        im = base.copy()
        d = ImageDraw.Draw(im)
        w, h = im.size
        band = int(h * rng.uniform(0.16, 0.3))
        which = rng.choice(["both", "both", "top", "bottom"])
        if which in ("both", "top"):
            draw_caption(d, top, (0, int(h * 0.02), w, band), fonts.condensed_bold, fonts, rng)
        if which in ("both", "bottom"):
            draw_caption(d, bottom, (0, h - band, w, int(h * 0.98)), fonts.condensed_bold, fonts, rng)
        return im
    if style == "quote":
        return quote(base, rng, fonts)
    if style == "band":  # modern meme: white band with black text above the photo
        w, h = base.size
        band = int(h * rng.uniform(0.2, 0.45))
        im = Image.new("RGB", (w, h + band), (255, 255, 255))
        im.paste(base, (0, band))
        d = ImageDraw.Draw(im)
        draw_caption(d, sentence(rng, rng.randint(4, 14)), (int(w * 0.04), 0, int(w * 0.96), band),
                     fonts.regular + fonts.bold, fonts, rng, fill=(0, 0, 0), stroke=None,
                     max_size=int(band * 0.3))
        return im
    # demotivational poster: black frame, photo with a white border, big serif-ish title below
    w, h = base.size
    W, H = int(w * 1.25), int(h * 1.55)
    im = Image.new("RGB", (W, H), (0, 0, 0))
    x, y = (W - w) // 2, int(h * 0.08)
    im.paste(base, (x, y))
    d = ImageDraw.Draw(im)
    d.rectangle([x - 4, y - 4, x + w + 4, y + h + 4], outline=(255, 255, 255), width=2)
    draw_caption(d, top.upper(), (int(W * 0.1), y + h + int(h * 0.06), int(W * 0.9), y + h + int(h * 0.28)),
                 fonts.regular, fonts, rng, stroke=None)
    draw_caption(d, bottom.lower(), (int(W * 0.1), y + h + int(h * 0.3), int(W * 0.9), H - 4),
                 fonts.regular, fonts, rng, stroke=None, max_size=int(h * 0.07))
    return im


# ----------------------------------------------------------------------------- spam: screenshots

def text_lines(d, rng, fonts, x0, y0, x1, y1, size, color, family=None, gap=1.5):
    family = family or fonts.regular
    y = y0
    while y + size < y1:
        font = fonts.get(family, size, rng)
        n = rng.randint(2, 12)
        s = sentence(rng, n)
        if rng.random() < 0.2:
            s = s.capitalize()
        while s and d.textlength(s, font=font) > x1 - x0:
            s = s[: int(len(s) * 0.8)]
        d.text((x0, y), s, font=font, fill=color)
        y += int(size * gap * rng.choice([1, 1, 1, 1.6]))


def ui_screenshot(photos: list[Image.Image], rng: random.Random, fonts: Fonts) -> Image.Image:
    mobile = rng.random() < 0.25
    W, H = (rng.randint(300, 420), rng.randint(600, 800)) if mobile else (rng.randint(500, 640), rng.randint(300, 480))
    dark = rng.random() < 0.35
    bg = rand_color(rng, 20, 60) if dark else rand_color(rng, 225, 255)
    fg = rand_color(rng, 190, 240) if dark else rand_color(rng, 10, 70)
    accent = rand_color(rng, 30, 220)
    im = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(im)
    s = rng.randint(9, 15)
    y = 0
    # title bar / status bar
    tb = int(s * 2.0)
    d.rectangle([0, 0, W, tb], fill=rand_color(rng, 30, 90) if rng.random() < 0.5 else accent)
    d.text((s, tb * 0.2), sentence(rng, rng.randint(1, 4)).title(), font=fonts.get(fonts.regular, s, rng),
           fill=(240, 240, 240))
    for k in range(3):
        cx = W - (k + 1) * tb
        d.ellipse([cx + tb * 0.3, tb * 0.3, cx + tb * 0.7, tb * 0.7], fill=rand_color(rng, 100, 255))
    y = tb
    if not mobile and rng.random() < 0.8:  # menu bar
        mh = int(s * 1.8)
        d.rectangle([0, y, W, y + mh], fill=tuple(max(0, c - 12) for c in bg))
        x = s
        for _ in range(rng.randint(3, 7)):
            t = rng.choice(["File", "Edit", "View", "Tools", "Help", "Window", "Go", "Insert", "Format"])
            d.text((x, y + mh * 0.2), t, font=fonts.get(fonts.regular, s, rng), fill=fg)
            x += int(d.textlength(t, font=fonts.get(fonts.regular, s, rng))) + 2 * s
        y += mh
    side = 0
    if not mobile and rng.random() < 0.6:  # sidebar
        side = int(W * rng.uniform(0.18, 0.3))
        d.rectangle([0, y, side, H], fill=tuple(max(0, c - 20) for c in bg) if not dark else tuple(min(255, c + 15) for c in bg))
        text_lines(d, rng, fonts, s, y + s, side - 4, H, s, fg, gap=2.0)
    cx0, cy0 = side + s, y + s
    # content blocks
    while cy0 < H - 2 * s:
        kind = rng.choices(["text", "buttons", "fields", "image", "table", "bubbles"],
                           [0.35, 0.15, 0.15, 0.1, 0.15, 0.1 + 0.3 * mobile])[0]
        bh = rng.randint(3 * s, 9 * s)
        if kind == "text":
            text_lines(d, rng, fonts, cx0, cy0, W - s, min(H, cy0 + bh), s, fg)
        elif kind == "buttons":
            x = cx0
            for _ in range(rng.randint(1, 4)):
                t = rng.choice(["OK", "Cancel", "Submit", "Save", "Next", "Sign in", "Buy now", "Apply"])
                tw = d.textlength(t, font=fonts.get(fonts.regular, s, rng))
                d.rounded_rectangle([x, cy0, x + tw + 2 * s, cy0 + 2 * s], radius=s // 2, fill=accent)
                d.text((x + s, cy0 + s * 0.4), t, font=fonts.get(fonts.regular, s, rng), fill=(255, 255, 255))
                x += tw + 3 * s
            bh = 3 * s
        elif kind == "fields":
            for k in range(rng.randint(1, 4)):
                yy = cy0 + k * 3 * s
                d.text((cx0, yy), rng.choice(WORDS).title() + ":", font=fonts.get(fonts.regular, s, rng), fill=fg)
                d.rectangle([cx0 + 7 * s, yy - 2, W - 2 * s, yy + 1.6 * s], outline=fg, fill=bg)
            bh = rng.randint(1, 4) * 3 * s
        elif kind == "image" and photos:
            p = fit(flatten_alpha(rng.choice(photos), bg), int(min(W - cx0 - s, bh * 2)))
            p = p.resize((max(8, min(p.width, W - cx0 - s)), max(8, min(p.height, bh))))
            im.paste(p, (cx0, cy0))
        elif kind == "table":
            cols = rng.randint(2, 5)
            cw = (W - cx0 - s) / cols
            for r in range(bh // (2 * s)):
                yy = cy0 + r * 2 * s
                if r % 2 == 0:
                    d.rectangle([cx0, yy, W - s, yy + 2 * s], fill=tuple(max(0, c - 10) for c in bg))
                for c in range(cols):
                    d.text((cx0 + c * cw + 3, yy + 3), rng.choice(WORDS) if r else rng.choice(WORDS).upper(),
                           font=fonts.get(fonts.regular, s, rng), fill=fg)
            d.rectangle([cx0, cy0, W - s, cy0 + bh], outline=fg)
        else:  # chat bubbles
            yy = cy0
            while yy < cy0 + bh:
                right = rng.random() < 0.5
                bw = int((W - cx0) * rng.uniform(0.3, 0.7))
                x = W - s - bw if right else cx0
                d.rounded_rectangle([x, yy, x + bw, yy + 2.4 * s], radius=s, fill=accent if right else tuple(max(0, c - 25) for c in bg))
                d.text((x + s * 0.6, yy + s * 0.5), sentence(rng, 3)[: bw // max(1, s // 2 + 1)],
                       font=fonts.get(fonts.regular, s, rng), fill=(255, 255, 255) if right else fg)
                yy += int(3 * s)
        cy0 += bh + s
    if not mobile and rng.random() < 0.4:  # taskbar
        d.rectangle([0, H - int(2.2 * s), W, H], fill=(30, 30, 40))
        d.text((W - 8 * s, H - 1.8 * s), f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
               font=fonts.get(fonts.regular, s, rng), fill=(230, 230, 230))
    return im


def terminal(rng: random.Random, fonts: Fonts) -> Image.Image:
    W, H = rng.randint(480, 640), rng.randint(300, 460)
    im = Image.new("RGB", (W, H), rand_color(rng, 0, 40))
    d = ImageDraw.Draw(im)
    s = rng.randint(9, 14)
    fg = rng.choice([(200, 200, 200), (0, 230, 0), (240, 240, 240), (255, 176, 0)])
    y = 4
    while y < H - s:
        font = fonts.get(fonts.mono, s, rng)
        line = rng.choice(["$ ", "# ", "> ", ""]) + " ".join(
            rng.choice(WORDS + ["--help", "-rf", "/var/log", "200", "OK", "[INFO]", "ERROR"]) for _ in range(rng.randint(1, 10)))
        d.text((4, y), line, font=font, fill=fg if rng.random() < 0.8 else rand_color(rng, 80, 255))
        y += int(s * 1.3)
    return im


CODE = [
    "fn main() {", "    let mut total = 0;", "    for item in items.iter() {", "        total += item.price;",
    "    }", "    println!(\"{}\", total);", "}", "def handler(request):", "    if not request.user:",
    "        return redirect('/login')", "    data = json.loads(request.body)", "    return JsonResponse(data)",
    "import numpy as np", "class Camera:", "    def __init__(self, name, url):", "        self.name = name",
    "// TODO: retry on timeout", "const app = express();", "app.get('/', (req, res) => {",
    "  res.send('ok');", "});", "#include <stdio.h>", "int main(int argc, char **argv) {",
    "    return 0;", "SELECT id, name FROM events WHERE seq > 42;", "    except Exception as e:",
    "        log.error(e)", "</div>", "<div class=\"row\">", "  <span>{{ title }}</span>",
]


def code_editor(rng: random.Random, fonts: Fonts) -> Image.Image:
    """An editor or IDE window: gutter with line numbers, syntax-coloured code, tabs, a side tree."""
    W, H = rng.randint(520, 660), rng.randint(320, 480)
    dark = rng.random() < 0.65
    bg = rand_color(rng, 20, 45) if dark else rand_color(rng, 240, 255)
    im = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(im)
    s = rng.randint(9, 13)
    palette = [rand_color(rng, 120, 255) if dark else rand_color(rng, 0, 150) for _ in range(5)]
    plain = (212, 212, 212) if dark else (30, 30, 30)
    x0, y = 0, 0
    if rng.random() < 0.7:  # tab bar
        th = int(s * 2.2)
        d.rectangle([0, 0, W, th], fill=tuple(max(0, c - 10) for c in bg))
        x = 4
        for _ in range(rng.randint(1, 4)):
            t = rng.choice(["main.rs", "app.py", "index.js", "worker.rs", "README.md", "style.css"])
            d.text((x + s // 2, th * 0.25), t, font=fonts.get(fonts.regular, s, rng), fill=plain)
            x += len(t) * s
        y = th
    if rng.random() < 0.5:  # file tree
        x0 = int(W * rng.uniform(0.15, 0.25))
        d.rectangle([0, y, x0, H], fill=tuple(min(255, c + 12) if dark else max(0, c - 15) for c in bg))
        text_lines(d, rng, fonts, 6, y + s, x0 - 4, H, s, plain, gap=1.6)
    gutter = x0 + 4 * s
    font = fonts.get(fonts.mono, s, rng)
    n = rng.randint(1, 400)
    indent = 0
    while y < H - s:
        d.text((x0 + 4, y), str(n).rjust(3), font=font, fill=(110, 110, 110))
        line = rng.choice(CODE)
        x = gutter + indent
        for tok in line.split(" "):
            d.text((x, y), tok, font=font, fill=rng.choice(palette + [plain, plain]))
            x += d.textlength(tok + " ", font=font)
        if rng.random() < 0.15:
            indent = rng.choice([0, 2, 4]) * s // 2
        y += int(s * 1.45)
        n += 1
    return im


def screenshot(photos, real_shots, rng, fonts, style: str | None = None) -> Image.Image:
    if style == "real":
        im = flatten_alpha(rng.choice(real_shots), (255, 255, 255))
        return random_crop(im, rng, min_area=0.4) if rng.random() < 0.5 else im
    if style == "terminal":
        return terminal(rng, fonts)
    if style == "code":
        return code_editor(rng, fonts)
    if style == "ui":
        return ui_screenshot(photos, rng, fonts)
    r = rng.random()
    if real_shots and r < 0.35:
        im = flatten_alpha(rng.choice(real_shots), (255, 255, 255))
        return random_crop(im, rng, min_area=0.4) if rng.random() < 0.5 else im
    if r < 0.45:
        return terminal(rng, fonts)
    return ui_screenshot(photos, rng, fonts)


# ----------------------------------------------------------------------------- spam: documents

def perspective_coeffs(dst: list[tuple[float, float]], src: list[tuple[float, float]]) -> list[float]:
    """PIL's PERSPECTIVE coefficients mapping output points `dst` to input points `src`."""
    a, b = [], []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return np.linalg.solve(np.array(a, np.float64), np.array(b, np.float64)).tolist()


def photographed_page(page: Image.Image, rng: random.Random) -> Image.Image:
    """A page photographed on a desk: seen at an angle, unevenly lit, a little soft and noisy."""
    W, H = rng.choice([(640, 480), (480, 640), (640, 360), (512, 512)])
    desk = np.empty((H, W, 3), np.float32)
    desk[:] = rand_color(rng, 30, 200)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    desk += ((xx / W - 0.5) * rng.uniform(-40, 40) + (yy / H - 0.5) * rng.uniform(-40, 40))[..., None]
    im = Image.fromarray(np.clip(desk, 0, 255).astype(np.uint8))
    # Where the page's corners land: a quadrilateral covering much of the frame.
    cx, cy, sx, sy = W / 2, H / 2, W * rng.uniform(0.3, 0.5), H * rng.uniform(0.35, 0.52)
    corners = [(cx - sx, cy - sy), (cx + sx, cy - sy), (cx + sx, cy + sy), (cx - sx, cy + sy)]
    corners = [(x + rng.uniform(-0.12, 0.12) * W, y + rng.uniform(-0.1, 0.1) * H) for x, y in corners]
    pw, ph = page.size
    coeffs = perspective_coeffs(corners, [(0, 0), (pw, 0), (pw, ph), (0, ph)])
    warped = page.convert("RGB").transform((W, H), Image.PERSPECTIVE, coeffs, Image.BILINEAR)
    mask = Image.new("L", page.size, 255).transform((W, H), Image.PERSPECTIVE, coeffs, Image.BILINEAR)
    im.paste(warped, mask=mask)
    light = 1 + (xx / W - rng.random()) * rng.uniform(-0.5, 0.5) + (yy / H - rng.random()) * rng.uniform(-0.5, 0.5)
    a = np.asarray(im, np.float32) * np.clip(light, 0.4, 1.3)[..., None]
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if rng.random() < 0.6:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    return add_noise(im, rng, rng.uniform(1, 7))


def document(real_docs, rng, fonts, style: str | None = None) -> Image.Image:
    if style == "scan":
        return photographed_page(document(real_docs, rng, fonts, "page"), rng)
    if style == "real" or (style is None and real_docs and rng.random() < 0.15):
        im = random_crop(flatten_alpha(rng.choice(real_docs), (255, 255, 255)), rng, min_area=0.4)
        return im
    receipt = style == "receipt" if style else rng.random() < 0.2
    W, H = (rng.randint(220, 320), rng.randint(500, 700)) if receipt else (rng.randint(420, 520), rng.randint(560, 700))
    paper = tuple([rng.randint(225, 255)] * 3) if rng.random() < 0.7 else rand_color(rng, 215, 255)
    ink = tuple([rng.randint(0, 70)] * 3)
    im = Image.new("RGB", (W, H), paper)
    d = ImageDraw.Draw(im)
    m = int(W * rng.uniform(0.06, 0.14))
    s = rng.randint(7, 13)
    fam = fonts.mono if receipt else rng.choice([fonts.regular, fonts.all])
    y = m
    if rng.random() < 0.8:
        ts = int(s * rng.uniform(1.4, 2.4))
        d.text((m, y), sentence(rng, rng.randint(2, 5)).title(), font=fonts.get(fonts.bold, ts, rng), fill=ink)
        y += int(ts * 2)
    while y < H - m:
        kind = rng.choices(["para", "table", "list"], [0.7, 0.15, 0.15])[0]
        bh = rng.randint(4, 14) * int(s * 1.5)
        if kind == "table":
            cols = rng.randint(2, 5)
            cw = (W - 2 * m) / cols
            rows = bh // int(s * 2)
            for r in range(rows + 1):
                d.line([m, y + r * s * 2, W - m, y + r * s * 2], fill=ink)
            for c in range(cols + 1):
                d.line([m + c * cw, y, m + c * cw, y + rows * s * 2], fill=ink)
            for r in range(rows):
                for c in range(cols):
                    d.text((m + c * cw + 3, y + r * s * 2 + 2), rng.choice(WORDS + [str(rng.randint(1, 9999))]),
                           font=fonts.get(fam, s, rng), fill=ink)
        elif kind == "list":
            for k in range(bh // int(s * 1.6)):
                d.text((m, y + k * s * 1.6), "\u2022 " + sentence(rng, rng.randint(2, 8)),
                       font=fonts.get(fam, s, rng), fill=ink)
        else:
            text_lines(d, rng, fonts, m, y, W - m, min(H - m, y + bh), s, ink, family=fam, gap=1.35)
        y += bh + s
    if rng.random() < 0.5:  # scanned / photographed page
        im = im.rotate(rng.uniform(-4, 4), resample=Image.BILINEAR, expand=True,
                       fillcolor=rand_color(rng, 40, 200))
        im = add_noise(im.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.0))), rng, rng.uniform(1, 8))
    return im


# ----------------------------------------------------------------------------- spam: flat frames

FLAT_TONES = {"dark": (0.0, 0.4), "light": (0.4, 0.55), "colour": (0.55, 1.0), "grey": None, "nosignal": None}
NO_SIGNAL = ["NO SIGNAL", "VIDEO LOSS", "NO VIDEO", "Video Loss", "No Signal", "SIGNAL LOST", "NO CAMERA",
             "Connecting...", "OFFLINE", "Camera offline"]


def no_signal(rng: random.Random, fonts: Fonts) -> Image.Image:
    """What a DVR or NVR sends for a dead channel: a solid screen with a centred message."""
    W, H = rng.choice([(640, 360), (640, 480), (704, 576), (1280, 720)])
    bg = rng.choice([(0, 0, 255), (16, 16, 160), (0, 0, 0), (0, 0, 0), (40, 40, 40), (0, 90, 180),
                     rand_color(rng, 0, 120)])
    im = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(im)
    text = rng.choice(NO_SIGNAL)
    size = int(H * rng.uniform(0.04, 0.12))
    font = fonts.get(rng.choice([fonts.bold, fonts.regular, fonts.mono]), size, rng)
    tw = d.textlength(text, font=font)
    x, y = (W - tw) / 2, (H - size) / 2 + rng.uniform(-0.2, 0.2) * H
    if rng.random() < 0.35:  # a message box
        pad = size * 0.6
        d.rectangle([x - pad, y - pad, x + tw + pad, y + size + pad], fill=rand_color(rng, 0, 90),
                    outline=(255, 255, 255) if rng.random() < 0.5 else None)
    d.text((x, y), text, font=font, fill=rng.choice([(255, 255, 255), (255, 255, 0), (230, 230, 230), (255, 60, 60)]))
    if rng.random() < 0.5:
        im = osd(im, rng, fonts)
    return im


def flat(rng: random.Random, fonts: Fonts, tone: str | None = None) -> Image.Image:
    if tone == "nosignal":
        im = no_signal(rng, fonts)
        return jpeg(im, rng.randint(30, 95)) if rng.random() < 0.7 else im
    W, H = rng.choice([(640, 360), (640, 480), (480, 640), (512, 512)])
    if tone == "grey":  # a wall, a covered lens in daylight: one mid tone, maybe tinted
        g = rng.randint(25, 225)
        c = tuple(int(np.clip(g + rng.uniform(-10, 10), 0, 255)) for _ in range(3))
    else:
        r = rng.uniform(*FLAT_TONES[tone]) if tone else rng.random()
        if r < 0.4:
            c = tuple([rng.randint(0, 18)] * 3) if rng.random() < 0.7 else rand_color(rng, 0, 20)
        elif r < 0.55:
            c = tuple([rng.randint(235, 255)] * 3)
        else:
            c = rand_color(rng)
    a = np.empty((H, W, 3), np.float32)
    a[:] = c
    if rng.random() < 0.4:  # faint gradient / vignette
        g = np.linspace(-1, 1, W if rng.random() < 0.5 else H)
        g = g[None, :, None] if g.size == W else g[:, None, None]
        a = a + g * rng.uniform(2, 12)
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if rng.random() < 0.6:
        im = add_noise(im, rng, rng.uniform(0.5, 5))
    if rng.random() < 0.3:  # a covered lens still shows the camera's clock
        im = osd(im, rng, fonts)
    return jpeg(im, rng.randint(30, 95)) if rng.random() < 0.7 else im


# ----------------------------------------------------------------------------- spam: synthetic graphics

SYNTH_KINDS = ["gradient", "shapes", "chart", "pattern", "noise", "colorbars", "fractal", "noisefield", "haze",
               "waves", "cells"]


def colour_map(t: np.ndarray, rng: random.Random, grey: float = 0.3) -> Image.Image:
    """Values in [0, 1] through a random three-colour ramp, or (with probability `grey`) as grey."""
    if rng.random() < grey:
        return Image.fromarray((np.clip(t, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    c0, c1, c2 = (np.array(rand_color(rng), np.float32) for _ in range(3))
    t = np.clip(t, 0, 1)[..., None]
    rgb = np.where(t < 0.5, c0 + (c1 - c0) * t * 2, c1 + (c2 - c1) * (t - 0.5) * 2)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def waves(W: int, H: int, rng: random.Random) -> Image.Image:
    """Interference of a few sinusoidal gratings: moire, ripples, op-art."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    acc = np.zeros((H, W), np.float32)
    n = rng.randint(1, 5)
    for _ in range(n):
        if rng.random() < 0.3:  # circular ripples
            cx, cy = rng.uniform(0, W), rng.uniform(0, H)
            u = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        else:
            ang = rng.uniform(0, math.pi)
            u = xx * math.cos(ang) + yy * math.sin(ang)
        acc += np.sin(u * 2 * math.pi / rng.uniform(4, 120) + rng.uniform(0, 6.3))
    t = 0.5 + 0.5 * acc / n
    if rng.random() < 0.3:
        t = (t > 0.5).astype(np.float32)
    return colour_map(t, rng)


def cells(W: int, H: int, rng: random.Random) -> Image.Image:
    """Voronoi cells (stained glass, low-poly backgrounds), flat or shaded, maybe with borders."""
    n = rng.randint(6, 80)
    pts = np.array([(rng.uniform(0, W), rng.uniform(0, H)) for _ in range(n)], np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    d = (xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2
    order = np.argsort(d, axis=-1)[..., :2]
    nearest = order[..., 0]
    colours = np.array([rand_color(rng) for _ in range(n)], np.float32)
    if rng.random() < 0.5:  # a palette of shades of one or two hues
        base = np.array(rand_color(rng), np.float32)
        colours = np.clip(base + rng.uniform(0.2, 0.8) * (colours - 128), 0, 255)
    rgb = colours[nearest]
    if rng.random() < 0.4:  # shade by distance to the seed
        d1 = np.sqrt(np.take_along_axis(d, order[..., :1], -1))
        rgb = rgb * (1 - 0.5 * d1 / max(1e-6, d1.max()))
    if rng.random() < 0.5:  # borders where the two nearest seeds are almost equidistant
        d0 = np.sqrt(np.take_along_axis(d, order[..., :1], -1))[..., 0]
        d1 = np.sqrt(np.take_along_axis(d, order[..., 1:2], -1))[..., 0]
        rgb[(d1 - d0) < rng.uniform(1, 4)] = rand_color(rng, 0, 60) if rng.random() < 0.7 else (255, 255, 255)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def fractal(W: int, H: int, rng: random.Random) -> Image.Image:
    """Mandelbrot or Julia set with a random palette and zoom."""
    scale = 3.0 * 10 ** rng.uniform(-2.5, 0)
    cx, cy = rng.uniform(-1.5, 0.4), rng.uniform(-0.8, 0.8)
    w2, h2 = W // 2, H // 2
    ys, xs = np.mgrid[0:h2, 0:w2].astype(np.float64)
    z = (cx + (xs / w2 - 0.5) * scale) + 1j * (cy + (ys / h2 - 0.5) * scale * h2 / w2)
    julia = rng.random() < 0.5
    c = complex(rng.uniform(-0.9, 0.4), rng.uniform(-0.8, 0.8)) if julia else z.copy()
    if julia:
        z = (xs / w2 - 0.5) * 3 + 1j * (ys / h2 - 0.5) * 3 * h2 / w2
    it = np.zeros(z.shape, np.float32)
    alive = np.ones(z.shape, bool)
    for k in range(60):
        z[alive] = z[alive] ** 2 + (c[alive] if not julia else c)
        esc = alive & (np.abs(z) > 4)
        it[esc] = k + 1
        alive &= ~esc
    t = (it / 60.0) ** rng.uniform(0.3, 1.0)
    ph = [rng.uniform(0, 2 * math.pi) for _ in range(3)]
    fr = rng.uniform(2, 12)
    rgb = np.stack([0.5 + 0.5 * np.sin(fr * t + p) for p in ph], -1)
    rgb[alive] = np.array(rand_color(rng, 0, 60)) / 255
    return Image.fromarray((rgb * 255).astype(np.uint8)).resize((W, H), Image.BILINEAR)


def noisefield(W: int, H: int, rng: random.Random) -> Image.Image:
    """Multi-octave value noise (clouds, plasma, marble), greyscale or through a colour map."""
    nrng = np.random.default_rng(rng.getrandbits(32))
    acc = np.zeros((H, W), np.float32)
    amp, total = 1.0, 0.0
    persistence = rng.uniform(0.35, 0.8)
    for octave in range(rng.randint(2, 7)):
        cells = 2 ** (octave + 1)
        small = nrng.random((cells + 1, cells + 1)).astype(np.float32)
        acc += amp * np.asarray(Image.fromarray(small).resize((W, H), Image.BICUBIC))
        total += amp
        amp *= persistence
    acc = (acc - acc.min()) / max(1e-6, np.ptp(acc))
    if rng.random() < 0.3:  # marble / plasma bands
        acc = 0.5 + 0.5 * np.sin(acc * rng.uniform(6, 30))
    return colour_map(acc, rng, grey=0.4)


def haze(W: int, H: int, rng: random.Random) -> Image.Image:
    """A smooth, nearly uniform grey or pastel gradient: the fog-like render."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    t = (xx * math.cos(ang) + yy * math.sin(ang))
    t = (t - t.min()) / max(1e-6, np.ptp(t))
    if rng.random() < 0.5:
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        t = 0.5 * t + 0.5 * r / max(1e-6, r.max())
    base = rng.randint(90, 230)
    span = rng.uniform(10, 90)
    tint = np.array([rng.uniform(-12, 12) for _ in range(3)], np.float32) if rng.random() < 0.5 else np.zeros(3, np.float32)
    a = base + (t[..., None] - 0.5) * span + tint
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return add_noise(im, rng, rng.uniform(0, 3)) if rng.random() < 0.5 else im


def synthetic(real_figs, rng: random.Random, fonts: Fonts, kind: str | None = None) -> Image.Image:
    if kind == "real" or (kind is None and real_figs and rng.random() < 0.2):
        return random_crop(flatten_alpha(rng.choice(real_figs), (255, 255, 255)), rng, min_area=0.5)
    W, H = rng.choice([(640, 360), (640, 480), (480, 640), (512, 512), (600, 400)])
    if kind is None:
        kind = rng.choice(["gradient", "shapes", "bars", "lines", "pie", "pattern", "noise", "colorbars"])
    elif kind == "chart":
        kind = rng.choice(["bars", "lines", "pie"])
    if kind == "fractal":
        return fractal(W, H, rng)
    if kind == "noisefield":
        return noisefield(W, H, rng)
    if kind == "haze":
        return haze(W, H, rng)
    if kind == "waves":
        return waves(W, H, rng)
    if kind == "cells":
        return cells(W, H, rng)
    im = Image.new("RGB", (W, H), rand_color(rng))
    d = ImageDraw.Draw(im)
    if kind == "gradient":
        c0, c1 = np.array(rand_color(rng), np.float32), np.array(rand_color(rng), np.float32)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        if rng.random() < 0.5:
            ang = rng.uniform(0, 2 * math.pi)
            t = (xx * math.cos(ang) + yy * math.sin(ang))
        else:
            cx, cy = rng.uniform(0, W), rng.uniform(0, H)
            t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        t = (t - t.min()) / max(1e-6, t.max() - t.min())
        im = Image.fromarray((c0 + (c1 - c0) * t[..., None]).astype(np.uint8))
        d = ImageDraw.Draw(im)
        if rng.random() < 0.5:
            kind = "shapes"
    if kind == "shapes":
        for _ in range(rng.randint(2, 25)):
            x, y = rng.randint(-50, W), rng.randint(-50, H)
            sz = rng.randint(10, 250)
            c = rand_color(rng)
            t = rng.random()
            if t < 0.33:
                d.ellipse([x, y, x + sz, y + sz * rng.uniform(0.5, 1.5)], fill=c,
                          outline=(0, 0, 0) if rng.random() < 0.3 else None)
            elif t < 0.66:
                d.rectangle([x, y, x + sz, y + sz * rng.uniform(0.3, 1.5)], fill=c)
            else:
                d.polygon([(x + rng.randint(0, sz), y + rng.randint(0, sz)) for _ in range(rng.randint(3, 6))], fill=c)
    elif kind in ("bars", "lines", "pie"):
        im = Image.new("RGB", (W, H), (255, 255, 255) if rng.random() < 0.7 else rand_color(rng, 20, 60))
        d = ImageDraw.Draw(im)
        axis = (60, 60, 60)
        x0, y0, x1, y1 = 50, 30, W - 20, H - 40
        s = rng.randint(9, 13)
        d.text((x0, 6), sentence(rng, 3).title(), font=fonts.get(fonts.bold, s + 2, rng), fill=axis)
        if kind == "pie":
            cx, cy, r = W / 2, H / 2, min(W, H) * 0.35
            a0 = 0
            for _ in range(rng.randint(2, 7)):
                a1 = a0 + rng.uniform(20, 120)
                d.pieslice([cx - r, cy - r, cx + r, cy + r], a0, min(a1, 360), fill=rand_color(rng))
                a0 = a1
                if a0 >= 360:
                    break
        else:
            d.line([x0, y0, x0, y1, x1, y1], fill=axis, width=2)
            for k in range(5):
                yy = y0 + (y1 - y0) * k / 5
                d.line([x0, yy, x1, yy], fill=(215, 215, 215))
                d.text((6, yy - 6), str(rng.randint(0, 999)), font=fonts.get(fonts.regular, s, rng), fill=axis)
            n = rng.randint(3, 20)
            for series in range(rng.randint(1, 3)):
                c = rand_color(rng, 0, 220)
                vals = [rng.uniform(0.1, 0.95) for _ in range(n)]
                if kind == "bars":
                    bw = (x1 - x0) / n
                    for i, v in enumerate(vals):
                        d.rectangle([x0 + i * bw + 2 + series * 3, y1 - v * (y1 - y0), x0 + (i + 0.8) * bw, y1], fill=c)
                else:
                    pts = [(x0 + (x1 - x0) * i / (n - 1), y1 - v * (y1 - y0)) for i, v in enumerate(vals)]
                    d.line(pts, fill=c, width=rng.randint(1, 4))
    elif kind == "pattern":
        step = rng.randint(8, 80)
        c2 = rand_color(rng)
        for x in range(0, W, step):
            for y in range(0, H, step):
                if ((x // step) + (y // step)) % 2 == 0 or rng.random() < 0.1:
                    if rng.random() < 0.5:
                        d.rectangle([x, y, x + step, y + step], fill=c2)
                    else:
                        d.line([x, y, x + step, y + step], fill=c2, width=3)
    elif kind == "noise":
        nrng = np.random.default_rng(rng.getrandbits(32))
        small = nrng.integers(0, 256, (rng.randint(2, 24), rng.randint(2, 24), 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((W, H), rng.choice([Image.BICUBIC, Image.NEAREST, Image.BILINEAR]))
        if rng.random() < 0.3:
            im = add_noise(im, rng, rng.uniform(10, 60))
    elif kind == "colorbars":
        n = rng.randint(5, 9)
        for i in range(n):
            d.rectangle([W * i / n, 0, W * (i + 1) / n, H * rng.uniform(0.6, 1)], fill=rand_color(rng))
    return im


# ----------------------------------------------------------------------------- spam: artwork

ART_STYLES = ["painted", "sketch"]


def painted(photo: Image.Image, rng: random.Random) -> Image.Image:
    """A photo rendered as a painting or a cartoon: few colours, smoothed regions, maybe inked edges."""
    im = fit(random_crop(flatten_alpha(photo, (255, 255, 255)), rng, min_area=0.4), 480)
    im = im.quantize(rng.randint(5, 24), method=Image.Quantize.MEDIANCUT).convert("RGB")
    im = im.filter(ImageFilter.ModeFilter(rng.choice([3, 5, 7, 9])))
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.MedianFilter(rng.choice([3, 5])))
    im = ImageEnhance.Color(im).enhance(rng.uniform(1.0, 1.8))
    if rng.random() < 0.4:  # inked outlines
        edges = ImageOps.grayscale(im).filter(ImageFilter.FIND_EDGES)
        ink = np.asarray(edges, np.float32) > rng.uniform(20, 60)
        a = np.asarray(im, np.float32).copy()
        a[ink] *= 0.15
        im = Image.fromarray(a.astype(np.uint8))
    if rng.random() < 0.4:  # canvas or brush texture
        nrng = np.random.default_rng(rng.getrandbits(32))
        tex = nrng.normal(0, rng.uniform(4, 14), (im.height, im.width // 4 + 1)).astype(np.float32)
        tex = np.repeat(tex, 4, axis=1)[:, :im.width]
        im = Image.fromarray(np.clip(np.asarray(im, np.float32) + tex[..., None], 0, 255).astype(np.uint8))
    return im


def sketch(photo: Image.Image, rng: random.Random) -> Image.Image:
    """A photo as a drawing: a pencil sketch on paper, or coloured line art on a plain ground."""
    im = fit(random_crop(flatten_alpha(photo, (255, 255, 255)), rng, min_area=0.4), 480)
    g = np.asarray(ImageOps.grayscale(im), np.float32)
    if rng.random() < 0.6:  # colour-dodge pencil sketch
        blur = np.asarray(Image.fromarray(255 - g.astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(3, 12))),
                          np.float32)
        out = np.clip(g * 255 / np.maximum(1, 255 - blur), 0, 255)
        paper = np.array(rand_color(rng, 225, 255) if rng.random() < 0.5 else (255, 255, 255), np.float32)
        rgb = out[..., None] / 255 * paper
        return Image.fromarray(rgb.astype(np.uint8))
    e = np.asarray(Image.fromarray(g.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5)).filter(ImageFilter.FIND_EDGES),
                   np.float32)
    edges = e > max(4.0, float(np.percentile(e, rng.uniform(80, 92))))
    ground, line = ((rand_color(rng, 0, 50), rand_color(rng, 120, 255)) if rng.random() < 0.5
                    else (rand_color(rng, 215, 255), rand_color(rng, 0, 120)))
    rgb = np.empty(g.shape + (3,), np.uint8)
    rgb[:] = ground
    rgb[edges] = line
    return Image.fromarray(rgb)


def artwork(real_art, rng, fonts, style: str | None = None, photos=None) -> Image.Image:
    if style == "painted":
        return painted(rng.choice(photos), rng)
    if style == "sketch":
        return sketch(rng.choice(photos), rng)
    src = rng.choice(real_art)
    bg = (255, 255, 255) if rng.random() < 0.5 else rand_color(rng)
    if src.mode == "RGBA" and rng.random() < 0.5:  # clip art composed on a canvas
        W, H = rng.choice([(640, 480), (512, 512), (480, 640)])
        im = Image.new("RGB", (W, H), bg)
        for _ in range(rng.randint(1, 3)):
            a = rng.choice(real_art)
            a = fit(a, rng.randint(150, 420))
            im.paste(a.convert("RGB"), (rng.randint(0, max(0, W - a.width)), rng.randint(0, max(0, H - a.height))),
                     mask=a.getchannel("A") if a.mode == "RGBA" else None)
        return im
    im = flatten_alpha(src, bg)
    if rng.random() < 0.6:
        im = random_crop(im, rng, min_area=0.4)
    return im


def spam_post(im: Image.Image, rng: random.Random) -> Image.Image:
    """What happens to any upload: mild colour changes, rescaling, JPEG."""
    if rng.random() < 0.3:
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.8, 1.2))
    if rng.random() < 0.2:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return jpeg(im, rng.randint(30, 95)) if rng.random() < 0.7 else im


KINDS = ["meme", "screenshot", "document", "flat", "synthetic", "artwork"]
LABELS = ["photo"] + KINDS


def make_spam(kind: str, pool: dict, rng: random.Random, fonts: Fonts, style: str | None = None) -> Image.Image:
    """One spam image of `kind`; `style` forces a generator family (see train.spam_families)."""
    if kind == "meme":
        im = meme(pool["photo"], rng, fonts, style)
    elif kind == "screenshot":
        im = screenshot(pool["photo"], pool["screenshot"], rng, fonts, style)
    elif kind == "document":
        im = document(pool["document"], rng, fonts, style)
    elif kind == "flat":
        im = flat(rng, fonts, style)
    elif kind == "synthetic":
        im = synthetic(pool["figure"], rng, fonts, style)
    else:
        im = artwork(pool.get("artwork", []), rng, fonts, style, pool["photo"])
    return spam_post(im.convert("RGB"), rng)
