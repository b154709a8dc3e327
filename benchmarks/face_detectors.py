"""Face detectors compared by recall per Monk tone group on a painted audit set (docs/evaluate.md).

    .venv/bin/python tests/painted_faces.py /tmp/pf0 --seed 0
    .venv/bin/python benchmarks/face_detectors.py /tmp/pf0

Prints, per detector, the share of faces found in each coarse group (MST 1-3, 4-7, 8-10), the share
of images without a face where a face was found anyway, and CPU ms per image. "Found" means any box:
it is the detector's recall, before the colour rule and the reading. dlib's HOG detector is included
when ``dlib`` imports (``pip install dlib-bin``; not a dependency of dft).
"""

from __future__ import annotations

import argparse
import csv
import os
import time

import cv2
import numpy as np
from PIL import Image

from dft.evaluate.face_regions import FaceRegionFinder


def _haar(name: str):
    c = cv2.CascadeClassifier(cv2.data.haarcascades + f"haarcascade_frontalface_{name}.xml")

    def found(gray, neighbours=4, scale=1.1):
        least = max(24, int(0.1 * min(gray.shape)))
        return len(c.detectMultiScale(gray, scaleFactor=scale, minNeighbors=neighbours, minSize=(least, least))) > 0

    return found


def _gray(rgb, how="equalise"):
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if how == "clahe":
        return cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 4)).apply(g)
    return cv2.equalizeHist(g)


def _gamma(g, gm):
    return cv2.equalizeHist(cv2.LUT(g, np.clip(255 * (np.arange(256) / 255.0) ** gm, 0, 255).astype(np.uint8)))


def detectors() -> dict:
    d, alt, alt2, tree = _haar("default"), _haar("alt"), _haar("alt2"), _haar("alt_tree")
    out = {
        "Haar default, equalised (before)": lambda x: d(_gray(x)),
        "Haar alt": lambda x: alt(_gray(x)),
        "Haar alt2": lambda x: alt2(_gray(x)),
        "Haar alt_tree": lambda x: tree(_gray(x), 1),
        "Haar default on CLAHE": lambda x: d(_gray(x, "clahe")),
        "Haar default on the inverted image": lambda x: d(255 - _gray(x)),
        "Haar default on 3 gammas (any)": lambda x: any(
            d(g) for g in (_gray(x), _gamma(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), 0.45),
                           _gamma(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), 2.2))),
        "Haar default + inverted, scale 1.05, 2 neighbours": lambda x: d(_gray(x), 2, 1.05) or d(255 - _gray(x), 2, 1.05),
    }
    try:
        import dlib

        hog = dlib.get_frontal_face_detector()
        out["dlib HOG"] = lambda x: len(hog(x, 0)) > 0
        out["dlib HOG, upsampled once"] = lambda x: len(hog(x, 1)) > 0
    except ImportError:
        pass
    finder = FaceRegionFinder()
    out["regions (dft/evaluate/face_regions.py)"] = lambda x: finder.find(x) is not None
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="A painted set (tests/painted_faces.py): PNGs and TRUTH.csv.")
    a = p.parse_args(argv)
    rows = list(csv.DictReader(open(os.path.join(a.folder, "TRUTH.csv"))))
    images = [np.asarray(Image.open(os.path.join(a.folder, r["file"])).convert("RGB")) for r in rows]
    groups = [r["skin_tone_group"] for r in rows]
    print(f"{'detector':52s} {'lighter':>8s} {'medium':>8s} {'darker':>8s} {'no face':>8s} {'ms/img':>7s}")
    for name, found in detectors().items():
        t = time.process_time()
        hit = np.array([found(im) for im in images])
        ms = (time.process_time() - t) / len(images) * 1000
        share = {g: hit[[x == g for x in groups]].mean() for g in ("lighter", "medium", "darker", "none")}
        print(f"{name:52s} " + " ".join(f"{share[g]:8.2f}" for g in ("lighter", "medium", "darker", "none")) + f" {ms:7.1f}")


if __name__ == "__main__":
    main()
