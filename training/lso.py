"""Leave-sources-out data and evaluation (issue 10).

Every sample carries its *origin*: the package its source image came from (photos, real
screenshots/documents/figures/artwork), or, for generated spam, its generator family
(`gen:<kind>/<style>`). Origins are assigned to k folds; fold f's model is trained on no sample
whose origin (or whose background photo's package, for memes and UI mock-ups built on a photo)
is in fold f, and scores every sample whose origin is in fold f. Each sample is thus scored
exactly once by a model that never saw its source: the out-of-fold (OOF) scores, from which the
threshold is chosen and every headline number is computed.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import random
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

import synth

GEN_FAMILIES = {
    "meme": [f"gen:meme/{s}" for s in synth.MEME_STYLES],
    "screenshot": ["gen:screenshot/ui", "gen:screenshot/terminal", "gen:screenshot/code"],
    "document": ["gen:document/page", "gen:document/receipt", "gen:document/scan"],
    "flat": [f"gen:flat/{t}" for t in synth.FLAT_TONES],
    "synthetic": [f"gen:synthetic/{k}" for k in synth.SYNTH_KINDS],
    "artwork": [f"gen:artwork/{s}" for s in synth.ART_STYLES],
}
REAL_ROLE = {"screenshot": "screenshot", "document": "document", "synthetic": "figure", "artwork": "artwork"}
# Families whose generator pastes one of the photo sources into the image.
USES_PHOTO = {"gen:meme/classic", "gen:meme/band", "gen:meme/demotivational", "gen:meme/flat", "gen:meme/quote",
              "gen:meme/panels", "gen:screenshot/ui", "gen:artwork/painted", "gen:artwork/sketch"}


@dataclass
class Task:
    idx: int
    kind: str  # label
    origin: str  # package or generator family
    style: str | None  # generator family's style, or "real"
    source: str | None  # photo / real-spam: one source id (photos) or package (real spam pool)
    photo_pkg: str | None  # background photos' package (USES_PHOTO families)


def plan(images, n_photo: int, n_per_kind: int, seed: int) -> list[Task]:
    """Which sample to make: photo packages weighted by sqrt(#images); spam families uniform."""
    rng = random.Random(f"{seed}:plan")
    by_pkg_role = defaultdict(list)
    for s in images:
        by_pkg_role[(s.package, s.role)].append(s.id)
    photo_pkgs = sorted(p for p, r in by_pkg_role if r == "photo")
    pw = [math.sqrt(len(by_pkg_role[(p, "photo")])) for p in photo_pkgs]
    tasks = []
    for _ in range(n_photo):
        p = rng.choices(photo_pkgs, pw)[0]
        tasks.append(Task(len(tasks), "photo", p, None, rng.choice(by_pkg_role[(p, "photo")]), None))
    for kind in synth.KINDS:
        fams = [(f, f.split("/")[1], None) for f in GEN_FAMILIES[kind]]
        if kind in REAL_ROLE:
            fams += [(p, "real", p) for p in sorted({p for p, r in by_pkg_role if r == REAL_ROLE[kind]})]
        for _ in range(n_per_kind):
            origin, style, pkg = rng.choice(fams)
            photo_pkg = rng.choices(photo_pkgs, pw)[0] if origin in USES_PHOTO else None
            tasks.append(Task(len(tasks), kind, origin, style, pkg, photo_pkg))
    return tasks


_CTX: dict = {}


def _make(task: Task):
    pools, by_id, fonts, seed = _CTX["pools"], _CTX["by_id"], _CTX["fonts"], _CTX["seed"]
    rng = random.Random(f"{seed}:{task.idx}:{task.kind}:{task.origin}")
    if task.kind == "photo":
        im, tag = synth.legit_photo(by_id[task.source].image, rng, fonts)
    else:
        pool = {"photo": pools[(task.photo_pkg, "photo")] if task.photo_pkg else pools["all-photo"]}
        if task.style == "real":
            pool[REAL_ROLE[task.kind]] = pools[(task.source, REAL_ROLE[task.kind])]
        else:
            for role in ("screenshot", "document", "figure", "artwork"):
                pool[role] = []
        im = synth.make_spam(task.kind, pool, rng, fonts, task.style)
        tag = task.kind
    return synth.to_input(im, rng), tag


def generate(tasks: list[Task], images, fonts, seed: int, workers: int):
    pools = defaultdict(list)
    for s in images:
        pools[(s.package, s.role)].append(s.image)
        if s.role == "photo":
            pools["all-photo"].append(s.image)
    _CTX.update(pools=pools, by_id={s.id: s for s in images}, fonts=fonts, seed=seed)
    with mp.get_context("fork").Pool(workers) as p:
        out = p.map(_make, tasks, chunksize=32)
    x = np.stack([o[0] for o in out])
    tags = [o[1] for o in out]
    return x, tags


def assign_folds(tasks: list[Task], k: int, seed: int) -> dict[str, int]:
    """Origins -> fold. Greedy by size inside strata (photo-bearing packages, other packages,
    each kind's generator families), so every fold holds photos and every kind where possible."""
    size = Counter(t.origin for t in tasks)
    photo_pkgs = {t.origin for t in tasks if t.kind == "photo"}
    strata = defaultdict(list)
    for o in size:
        if o in photo_pkgs:
            strata["photo"].append(o)
        elif o.startswith("gen:"):
            strata[o.split("/")[0]].append(o)
        else:
            strata["real-spam"].append(o)
    fold = {}
    for name in sorted(strata):
        members = sorted(strata[name], key=lambda o: (-size[o], hashlib.sha256(f"{seed}:{o}".encode()).hexdigest()))
        load = [0] * k
        # Rotate the starting fold per stratum so small strata do not all land in fold 0.
        start = int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:8], 16) % k
        for o in members:
            f = min(range(k), key=lambda i: (load[i], (i - start) % k))
            fold[o] = f
            load[f] += size[o]
    return fold


def masks(tasks: list[Task], fold_of: dict[str, int], f: int):
    """(train mask, test mask) for fold f."""
    train = np.array([fold_of[t.origin] != f and (t.photo_pkg is None or fold_of[t.photo_pkg] != f)
                      for t in tasks])
    test = np.array([fold_of[t.origin] == f for t in tasks])
    return train, test


# ----------------------------------------------------------------------------- evaluation


def summarise(scores: np.ndarray, tasks: list[Task], tags: list[str], threshold: float, labels) -> dict:
    """Headline numbers at one threshold: photo FPR overall / per source / per condition, spam
    recall overall / per kind / per origin."""
    y = np.array([labels.index(t.kind) for t in tasks])
    flagged = scores >= threshold
    photo = y == 0
    res = {"threshold": threshold, "n_photo": int(photo.sum()), "fp": int((flagged & photo).sum())}
    res["fpr"] = res["fp"] / max(1, res["n_photo"])
    spam = ~photo
    res["n_spam"] = int(spam.sum())
    res["spam_recall"] = float((flagged & spam).sum() / max(1, spam.sum()))
    res["kinds"] = {}
    for k, kind in enumerate(labels[1:], start=1):
        sel = y == k
        res["kinds"][kind] = {"n": int(sel.sum()), "tp": int((flagged & sel).sum()),
                              "recall": float((flagged & sel).sum() / max(1, sel.sum()))}
    origins = np.array([t.origin for t in tasks])
    res["photo_sources"] = {}
    for o in sorted(set(origins[photo])):
        sel = photo & (origins == o)
        res["photo_sources"][o] = {"n": int(sel.sum()), "fp": int((flagged & sel).sum()),
                                   "fpr": float((flagged & sel).sum() / sel.sum()),
                                   "q": np.quantile(scores[sel], [0.5, 0.9, 0.99, 1.0]).tolist()}
    res["spam_sources"] = {}
    kinds = np.array([t.kind for t in tasks])
    for o in sorted(set(origins[spam])):
        for kind in sorted(set(kinds[spam & (origins == o)])):
            sel = spam & (origins == o) & (kinds == kind)
            res["spam_sources"][f"{kind} / {o}"] = {
                "n": int(sel.sum()), "tp": int((flagged & sel).sum()),
                "recall": float((flagged & sel).sum() / sel.sum()),
                "q": np.quantile(scores[sel], [0.0, 0.01, 0.1, 0.5]).tolist()}
    tags = np.array(tags)
    res["photo_conditions"] = {}
    for c in sorted(set(tags[photo])):
        sel = photo & (tags == c)
        res["photo_conditions"][c] = {"n": int(sel.sum()), "fp": int((flagged & sel).sum())}
    return res


def choose_threshold(scores: np.ndarray, tasks: list[Task], lo: float = 0.5, hi: float = 0.995) -> float:
    """The lowest threshold (3 decimals, in [lo, hi]) at which the OOF photo false-positive rate is
    <= 1% overall and <= 3% for every photo source; `hi` if none is."""
    photo = np.array([t.kind == "photo" for t in tasks])
    origins = np.array([t.origin for t in tasks])
    ps = scores[photo]
    po = origins[photo]
    for t in np.round(np.arange(lo, hi + 1e-9, 0.001), 3):
        f = ps >= t
        if f.mean() > 0.01:
            continue
        if all(f[po == o].mean() <= 0.03 for o in set(po)):
            return float(t)
    return hi
