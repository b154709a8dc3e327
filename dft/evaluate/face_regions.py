"""A face finder that does not depend on skin tone: a region of even colour with eyes in it.

OpenCV's Haar cascades look for a grey-level pattern (eye band darker than the cheeks) that fades
on darker skin and on drawn or stylised faces. This finder uses what every face has whatever its
tone: a connected region of smoothly varying colour (the skin of forehead, cheeks and nose), closed
around features that differ from it sharply (two eyes side by side in its upper part, nose or mouth
below them). Nothing in it knows what colour skin is; it compares each pixel with its neighbours
only, so the darkest and the lightest faces are found the same way.

Steps, on the image as it is and then brightened (gamma 0.5; the same two passes for every image):
the image at a working size, smoothed (median, then edge-keeping bilateral filter) against
noise; flood fills in CIELAB from a grid of seeds, each pixel joining when it differs from a
neighbour by at most ``tolerance`` and never across an edge (shading passes, steps stop it); per
region, its features: what it surrounds (the parts of its convex hull it does not cover: holes, and
bays of its outline). Then the checks: a pair of eye-like features (similar size, side by side, each
holding a pixel darker than the skin; or one wide one: glasses), a feature below them (nose or
mouth), and the region covering most of the face box they place. The region inside that box is the
face's skin, to be read by the colour code. Tested on painted portraits of all ten Monk tones
(tests/painted_faces.py); photographs with textured skin fall back to the cascade (FaceSkinTone).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FaceRegion:
    box: tuple[int, int, int, int]  # x, y, w, h in image coordinates
    mask: np.ndarray  # bool [H, W] in image coordinates: the face's skin region (holes excluded)
    score: float


class FaceRegionFinder:
    """Settings (``options.regions`` of the skin-tone reader): ``work_side`` the shorter side the image
    is worked at; ``tolerance`` / ``edge`` the fill's step between neighbours and the gradient that
    walls it (8-bit CIELAB units); ``grid`` seeds per side; ``min_area`` the least region (share of
    the image); ``min_cover`` the least share of the face box the region covers; ``gammas`` the
    passes; ``pupil_level`` / ``pupil_ratio`` how dark an eye's darkest pixel must be (grey level,
    and times the skin's median); ``max_drop`` how far below the eyes (in eye distances) the nose or
    mouth may be; ``glasses_aspect`` the least width over height of one feature taken as glasses."""

    def __init__(self, work_side: int = 160, tolerance: float = 4.0, edge: float = 3.0, grid: int = 7,
                 min_area: float = 0.01, min_cover: float = 0.45, gammas: tuple[float, ...] = (1.0, 0.5),
                 pupil_level: float = 120.0, pupil_ratio: float = 1.0, max_drop: float = 2.2,
                 glasses_aspect: float = 1.6):
        self.work_side = work_side
        self.tolerance = tolerance
        self.edge = edge
        self.grid = grid
        self.min_area = min_area
        self.min_cover = min_cover
        self.gammas = tuple(gammas)
        self.pupil_level = pupil_level
        self.pupil_ratio = pupil_ratio
        self.max_drop = max_drop
        self.glasses_aspect = glasses_aspect

    def find(self, rgb: np.ndarray) -> FaceRegion | None:
        """The face of the image, tried as it is and then brightened: every image gets the same
        passes, whatever it shows (a dark face's features are small steps until brightened)."""
        found = self.find_all(rgb, limit=1)
        return found[0] if found else None

    def find_all(self, rgb: np.ndarray, limit: int = 4) -> list[FaceRegion]:
        """Up to ``limit`` candidate faces, best first: those of the image as it is, then those of the
        brightened image (a caller that rejects one, say for its colour, takes the next)."""
        import cv2

        out: list[FaceRegion] = []
        for gamma in self.gammas:
            img = rgb if gamma == 1.0 else cv2.LUT(rgb, (255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8))
            out.extend(self._find(img, rgb))
            if len(out) >= limit:
                break
        return out[:limit]

    def _find(self, rgb: np.ndarray, original: np.ndarray) -> list[FaceRegion]:
        import cv2

        h, w = rgb.shape[:2]
        s = self.work_side / max(1, min(h, w))
        img = cv2.resize(rgb, (max(8, round(w * s)), max(8, round(h * s))),
                         interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        small = cv2.resize(original, img.shape[1::-1], interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)  # of the image as it is, whichever pass this is
        img = cv2.medianBlur(img, 5)
        img = cv2.bilateralFilter(img, 7, 25, 5)
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
        H, W = lab.shape[:2]
        # Edges are walls: a fill may follow a smooth gradient (shading) but never cross a step.
        dx, dy = cv2.Sobel(lab, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(lab, cv2.CV_32F, 0, 1, ksize=3)
        grad = np.max(np.abs(dx) + np.abs(dy), axis=-1) / 8
        walls = np.zeros((H + 2, W + 2), np.uint8)
        walls[1:-1, 1:-1] = grad > self.edge
        seen = walls.copy()
        found_all: list[FaceRegion] = []
        t = (self.tolerance,) * 3
        for fy in np.linspace(0.15, 0.85, self.grid):
            for fx in np.linspace(0.15, 0.85, self.grid):
                x, y = int(fx * (W - 1)), int(fy * (H - 1))
                if seen[y + 1, x + 1]:
                    continue
                m = walls.copy()
                cv2.floodFill(lab, m, (x, y), 0, t, t, 4 | cv2.FLOODFILL_MASK_ONLY | (2 << 8))
                region = (m[1:-1, 1:-1] == 2).astype(np.uint8)
                seen[1:-1, 1:-1] |= region
                found = self._check(region, gray)
                if found is None:
                    continue
                score, (bx, by, bw, bh) = found
                face = np.zeros_like(region)
                face[by:by + bh, bx:bx + bw] = region[by:by + bh, bx:bx + bw]
                mask = cv2.resize(face, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
                box = (int(bx / s), int(by / s), max(1, int(bw / s)), max(1, int(bh / s)))
                found_all.append(FaceRegion(box, mask, score))
        return sorted(found_all, key=lambda f: -f.score)

    def _check(self, region: np.ndarray, gray: np.ndarray):
        """(score, face box) when the region holds a face's features, else None.

        The region may have leaked into a background of the same colour, so the face is placed from
        its features, not from the region's outline: a pair of features side by side (the eyes; their
        distance ``sep`` sets the scale), one below their middle (nose or mouth), and the region
        covering most of the face box around them (skin between and below the eyes)."""
        import cv2

        H, W = region.shape
        area = int(region.sum())
        if area < self.min_area * H * W:
            return None
        # Features are what the region surrounds: its holes, and the bays of its outline (an eye or
        # the glasses touching the hair line open into the outline instead of being a hole), i.e.
        # the parts of its convex hull that it does not cover.
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not contours:
            return None
        hull = np.zeros_like(region)
        cv2.fillPoly(hull, [cv2.convexHull(max(contours, key=cv2.contourArea))], 1)
        inside = (hull > 0) & (region == 0)
        n, labels, stats, centres = cv2.connectedComponentsWithStats(inside.astype(np.uint8), connectivity=4)
        # A pupil is dark on every face: an eye must hold a pixel darker than the skin around it (and
        # below ``pupil_level``), which the features of a smooth textured background often do not.
        dark = min(self.pupil_level, self.pupil_ratio * float(np.median(gray[region > 0])))
        holes = []
        mins = np.full(n, 255, np.int32)
        np.minimum.at(mins, labels[inside], gray[inside].astype(np.int32))
        for i in range(1, n):
            hx, hy, hw, hh, a = (int(v) for v in stats[i])
            if a >= 3:
                holes.append((float(centres[i][0]), float(centres[i][1]), float(a), hw, hh, bool(mins[i] <= dark)))
        if len(holes) < 2:
            return None
        holes.sort(key=lambda hl: hl[0])
        lines = []  # (middle x, middle y, eye distance) of each eye-line candidate
        for i, left in enumerate(holes):
            for r in holes[i + 1:]:
                sep = r[0] - left[0]
                if sep < 0.06 * W or abs(r[1] - left[1]) > 0.3 * sep:
                    continue
                if (max(left[2], r[2]) > 4 * min(left[2], r[2]) or max(left[3], r[3]) > 1.0 * sep
                        or max(left[4], r[4]) > 0.8 * sep):
                    continue
                if not (left[5] and r[5]):
                    continue
                lines.append(((left[0] + r[0]) / 2, (left[1] + r[1]) / 2, sep))
        for hx, hy, _, hw, hh, pupil in holes:  # glasses: one wide hole across both eyes
            if pupil and hw >= 0.12 * W and hw >= self.glasses_aspect * hh:
                lines.append((hx, hy, 0.55 * hw))
        best = None
        for mx, my, sep in lines:
            below = [hl for hl in holes if 0.3 * sep < hl[1] - my < self.max_drop * sep and abs(hl[0] - mx) < 0.45 * sep]
            if not below:
                continue
            x0, x1 = int(max(0, mx - 1.1 * sep)), int(min(W, mx + 1.1 * sep))
            y0, y1 = int(max(0, my - 0.9 * sep)), int(min(H, my + 1.7 * sep))
            if (x1 - x0) * (y1 - y0) < 0.3 * (2.2 * sep) * (2.6 * sep):  # mostly outside the image
                continue
            cover = float(region[y0:y1, x0:x1].mean())
            if cover < self.min_cover:
                continue
            score = cover * (x1 - x0) * (y1 - y0)
            if best is None or score > best[0]:
                best = (score, (x0, y0, x1 - x0, y1 - y0))
        return best
