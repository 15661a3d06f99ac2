"""Write a synthetic skin-lesion-like photo (for `make demo` on machines without ../shared/data).

Usage: python examples/make_demo_image.py OUT.png
"""

import sys
from pathlib import Path

import cv2
import numpy as np


def main(out: str) -> None:
    rng = np.random.default_rng(7)
    h, w = 480, 640
    small = rng.normal(0, 1, (h // 32 + 1, w // 32 + 1, 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * 10 + np.array(
        [120, 150, 205], np.float32
    )  # BGR skin
    yy, xx = np.mgrid[:h, :w]
    r = np.sqrt(((yy - h / 2) / 90.0) ** 2 + ((xx - w / 2) / 120.0) ** 2)
    lesion = np.clip(1.2 - r, 0, 1)[..., None]
    img = img * (1 - 0.6 * lesion) + np.array([40, 50, 80], np.float32) * 0.6 * lesion
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(out, np.clip(img, 0, 255).astype(np.uint8))
    print(f"wrote {out} (synthetic, not a real lesion)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/data/demo_lesion.png")
