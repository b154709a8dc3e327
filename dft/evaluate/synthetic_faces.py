"""Face-like test images painted with a known skin colour, for tests and the benchmark.

The painting is just realistic enough for OpenCV's frontal-face Haar cascade: an oval of skin with
darker brows and eyes above lighter cheeks, a nose shadow, a mouth and hair. ``lighting`` scales
light in linear sRGB (an exposure change), ``side_light`` adds a left-to-right gradient, ``noise``
adds Gaussian sensor noise (standard deviation in 8-bit levels).
"""

from __future__ import annotations

import numpy as np

from dft.evaluate.skin_tone import srgb_to_linear


def _to_srgb(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0.0, 1.0)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


def paint_face(
    skin_rgb,
    size: int = 128,
    lighting: float = 1.0,
    side_light: float = 0.0,
    noise: float = 0.0,
    background=(90, 110, 140),
    hair=(30, 22, 18),
    seed: int = 0,
    jitter: float = 0.0,
) -> np.ndarray:
    """A ``[size, size, 3]`` uint8 image of a frontal face whose skin is ``skin_rgb``."""
    import cv2

    rng = np.random.default_rng(seed)
    s = size / 128.0
    dx, dy = (rng.uniform(-jitter, jitter, 2) * size) if jitter else (0.0, 0.0)
    cx, cy = int(64 * s + dx), int(68 * s + dy)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = background
    skin = tuple(int(c) for c in skin_rgb)
    darker = tuple(int(c * 0.55) for c in skin_rgb)
    socket = tuple(int(c * 0.5) for c in skin_rgb)

    def P(x, y):  # face-relative coordinates in the 128-px design
        return (int(cx + x * s), int(cy + y * s))

    def A(a, b):
        return (max(1, int(a * s)), max(1, int(b * s)))

    cv2.ellipse(img, P(0, -14), A(40, 44), 0, 180, 360, hair, -1)  # hair cap
    cv2.rectangle(img, P(-40, -14), P(40, 10), hair, -1)
    cv2.ellipse(img, P(0, 4), A(33, 44), 0, 0, 360, skin, -1)  # face oval
    for side in (-1, 1):
        cv2.ellipse(img, P(side * 14, -7), A(11, 8), 0, 0, 360, socket, -1)  # eye socket shadow
        cv2.ellipse(img, P(side * 14, -14), A(10, 3), 0, 0, 360, (20, 16, 14), -1)  # brow
        cv2.ellipse(img, P(side * 14, -5), A(6, 2.5), 0, 0, 360, (150, 145, 140), -1)  # eye white
        cv2.circle(img, P(side * 14, -5), max(1, int(3 * s)), (15, 12, 10), -1)  # iris
        cv2.ellipse(img, P(side * 4, 10), A(3, 7), 0, 0, 360, darker, -1)  # nose sides
    cv2.ellipse(img, P(0, 26), A(12, 4), 0, 0, 360, (120, 40, 45), -1)  # mouth
    img = cv2.GaussianBlur(img, (0, 0), 1.0 * s)

    lin = srgb_to_linear(img.astype(np.float64) / 255.0) * lighting
    if side_light:
        ramp = np.linspace(1.0 - side_light, 1.0 + side_light, size)[None, :, None]
        lin = lin * ramp
    out = _to_srgb(lin) * 255.0
    if noise:
        out = out + rng.normal(0.0, noise, out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def paint_no_face(size: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth random landscape-like image with no face in it."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return img


def write_painted_eval_images(images_uri: str, model: str, prompts: list[str], tone_weights, n_per_prompt: int,
                              seed: int = 0, size: int = 96) -> None:
    """An evaluation folder (SAMPLE_SCHEMA Parquet under ``images_uri/parquet``) of painted faces whose
    Monk tones are drawn with ``tone_weights`` (10 numbers): a stand-in for a model's images in tests,
    the benchmark and the docs' report screenshot."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from dft import storage
    from dft.evaluate.skin_tone import MST_RGB
    from dft.schema import SAMPLE_SCHEMA, sample_key

    rng = np.random.default_rng(seed)
    w = np.asarray(tone_weights, dtype=float)
    rows = []
    for pi, prompt in enumerate(prompts):
        for i in range(n_per_prompt):
            tone = int(rng.choice(10, p=w / w.sum()))
            img = paint_face(MST_RGB[tone], size=size, lighting=float(rng.uniform(0.85, 1.05)),
                             noise=float(rng.uniform(0, 5)), seed=int(rng.integers(1 << 30)), jitter=0.04)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            pid = f"p{pi:04d}"
            s = int(rng.integers(1 << 40))
            rows.append({
                "key": sample_key(pid, i, s, model, "painted"), "prompt_id": pid, "image_index": i, "seed": s,
                "prompt": prompt, "neutral_prompt": prompt, "template": prompt, "prompt_set": "neutral",
                "ethnicity": None, "gender": None, "age": None, "profession": None, "model": model,
                "settings_hash": "painted", "image_format": "png", "width": size, "height": size,
                "image": buf.getvalue(),
            })
    table = pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)
    with storage.atomic_local_path(storage.join(images_uri, "parquet", "shard-00000.parquet")) as tmp:
        pq.write_table(table, tmp)


# A base model that paints mostly light tones, and a "fine-tuned" one closer to even: the report's
# illustration (docs/img/report.png) and its tests. Painted faces, not a model's output.
PAINTED_BASE_WEIGHTS = (8, 10, 9, 7, 4, 2, 1, 0.5, 0.3, 0.2)
PAINTED_FINETUNED_WEIGHTS = (3, 3, 3, 3, 3, 3, 3, 3, 3, 3)


def painted_eval_run(run_uri: str, n_per_prompt: int = 24, prompts: list[str] | None = None, bootstrap: int = 200) -> dict:
    """RUN/eval as the evaluate stage would leave it, from painted faces of two stand-in models:
    images, labels (the skin-tone reader), metrics.json. Returns the metrics."""
    from dft import storage
    from dft.evaluate.config import ReaderConfig
    from dft.evaluate.fairness import score_table
    from dft.evaluate.labels import label_table, write_labels
    from dft.evaluate.pipeline import read_local
    from dft.evaluate.skin_tone_reader import skin_tone_attributes

    prompts = prompts or ["a photo of a doctor", "a photo of a nurse", "a photo of a person"]
    eval_uri = storage.join(run_uri, "eval")
    tables = []
    for i, (model, w) in enumerate((("base", PAINTED_BASE_WEIGHTS), ("finetuned", PAINTED_FINETUNED_WEIGHTS))):
        images = storage.join(eval_uri, "images", model)
        write_painted_eval_images(images, model, prompts, w, n_per_prompt, seed=i)
        files = storage.glob(images, "parquet/*.parquet")
        tables.append(read_local(files, [ReaderConfig(kind="skin_tone", batch_size=32)], extra_columns={"model": model}))
    labels = label_table(tables, skin_tone_attributes())
    write_labels(labels, storage.join(eval_uri, "labels.parquet"))
    result = score_table(labels, bootstrap=bootstrap)
    storage.write_json(storage.join(eval_uri, "metrics.json"), result)
    return result
