"""Where does the committed model miss? Recall per real source on the test split.

    training/.cache/venv/bin/python training/per_source.py

Uses the same sources, by-image split and generators as the 1.0.0 training and the 1.0.0 model
kept in crates/processor/models/v1.0.0/, at its manifest's threshold (its 0.5/0.25 normalisation). Prints, for the test
split: recall per real document source (and for synthetic pages), per artwork package, and
the artwork sources missed most. This is how three photographs listed as "document" sources
were found (docs/design.md §11). Analysis only: it writes nothing.
"""
import collections
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import sources as src_mod
import synth
import train

MODEL_DIR = train.MODELS / "v1.0.0"
manifest = json.loads((MODEL_DIR / "default.manifest.json").read_text())
synth.INPUT = manifest["input"]["width"]
sources, _ = src_mod.load_all()
fonts = synth.Fonts([s.font_path for s in sources if s.role == "font"])
images = [s for s in sources if s.image is not None]
split_of = train.group_and_split(images)
test = [s for s in images if split_of[s.id][1] == "test"]
sess = train.ort_session(MODEL_DIR / "default.onnx", threads=2)
THR = manifest["threshold"]

def score(ims, rng):
    x = np.stack([synth.to_input(im, rng) for im in ims])
    return train.spam_score(train.predict_ort(sess, x, manifest["input"]["mean"], manifest["input"]["std"]))

rng = random.Random(1)
# Documents: each real test source, and synthetic pages, 40 each.
print("== documents ==")
for s in [s for s in test if s.role == "document"]:
    ims = [synth.spam_post(synth.random_crop(synth.flatten_alpha(s.image, (255, 255, 255)), rng, min_area=0.4).convert("RGB"), rng) for _ in range(40)]
    sc = score(ims, rng)
    print(f"real {s.id[:90]:<90} {s.image.size} recall {np.mean(sc >= THR):.2f}")
ims = [synth.spam_post(synth.document([], rng, fonts).convert("RGB"), rng) for _ in range(200)]
print(f"synthetic pages: recall {np.mean(score(ims, rng) >= THR):.3f}")
print("== artwork by package ==")
by_pkg = collections.defaultdict(list)
for s in test:
    if s.role == "artwork":
        by_pkg[s.package].append(s)
for pkg, srcs in sorted(by_pkg.items()):
    ims = [synth.spam_post(synth.artwork([rng.choice(srcs).image], rng, fonts).convert("RGB"), rng) for _ in range(max(40, 4 * len(srcs)))]
    sc = score(ims, rng)
    print(f"{pkg:<28} sources {len(srcs):>3}  recall {np.mean(sc >= THR):.3f}")
# Worst individual artwork sources
worst = []
for s in [s for s in test if s.role == "artwork"]:
    ims = [synth.spam_post(synth.artwork([s.image], rng, fonts).convert("RGB"), rng) for _ in range(6)]
    worst.append((float(np.mean(score(ims, rng) >= THR)), s.id))
worst.sort()
print("worst artwork sources:")
for r, i in worst[:15]:
    print(f"  {r:.2f} {i}")
