"""One SAM mask per box prompt (what Grounded-SAM needs)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import SeplError
from ..optional import require
from .runtime import BatchSize, ImageEncoder, check_image, with_oom_retry


def check_boxes(boxes, height: int, width: int) -> np.ndarray:
    """``boxes`` as a Kx4 float32 XYXY array; SeplError for a wrong shape or NaN."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4), np.float32)
    if not np.isfinite(boxes).all():
        raise SeplError("box prompts contain NaN or infinite coordinates", hint="drop those detections")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise SeplError("box prompts must be XYXY with x1 >= x0 and y1 >= y0", hint="convert XYWH boxes to XYXY")
    return boxes


class BoxPromptedSAM:
    """SAM masks for box prompts, one per box.

    Arguments:
      sam (Sam): the model (see ``build.build_sam``).
      multimask (bool): if True SAM proposes three masks per box and the one with the
        highest predicted IoU is kept; if False (Grounded-SAM's setting) SAM's single output.
      box_batch (int): prompts decoded at once (halved on CUDA out-of-memory).
      image_batch (int): images encoded at once by ``predict_batch``.
      dtype (str or None): "bfloat16"/"float16" autocast for the image encoder.
    """

    def __init__(self, sam, multimask: bool = False, box_batch: int = 64, image_batch: int = 4,
                 dtype: Optional[str] = None):
        self.sam = sam
        self.multimask = multimask
        self.box_batch = BatchSize(box_batch)
        self.encoder = ImageEncoder(sam, batch_size=image_batch, dtype=dtype)

    def predict(self, image: np.ndarray, boxes) -> Tuple[np.ndarray, np.ndarray]:
        """Masks for ``boxes`` on ``image``.

        Arguments:
          image (np.ndarray): HxWx3 uint8 RGB.
          boxes (np.ndarray): Kx4 float XYXY pixel boxes (K may be 0).
        Returns:
          masks (np.ndarray): KxHxW bool.
          scores (np.ndarray): K float32, SAM's predicted IoU of each mask.
        """
        return self.predict_batch([image], [boxes])[0]

    def predict_batch(self, images: Sequence[np.ndarray], boxes: Sequence) -> List[Tuple[np.ndarray, np.ndarray]]:
        """``predict`` for several images, encoding them in batches of ``image_batch``."""
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} box arrays")
        images = [check_image(im) for im in images]
        boxes = [check_boxes(b, *im.shape[:2]) for im, b in zip(images, boxes)]
        todo = [i for i, b in enumerate(boxes) if len(b)]
        feats = dict(zip(todo, self.encoder([images[i] for i in todo]))) if todo else {}
        out = []
        for i, (im, b) in enumerate(zip(images, boxes)):
            h, w = im.shape[:2]
            if not len(b):
                out.append((np.zeros((0, h, w), bool), np.zeros(0, np.float32)))
                continue
            out.append(self._decode(feats[i], b, (h, w)))
        return out

    def _decode(self, features, boxes: np.ndarray, hw: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
        torch = require("torch")
        sam = self.sam
        input_size = self.encoder.input_size(hw)
        tboxes = torch.as_tensor(self.encoder.transform.apply_boxes(boxes, hw), dtype=torch.float, device=sam.device)

        def run(chunk):
            with torch.no_grad():
                sparse, dense = sam.prompt_encoder(points=None, boxes=chunk, masks=None)
                low, iou = sam.mask_decoder(
                    image_embeddings=features[None], image_pe=sam.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                    multimask_output=self.multimask)
                if self.multimask:  # keep the best of the three proposals per box
                    best = iou.argmax(1)
                    idx = torch.arange(len(best), device=best.device)
                    low, iou = low[idx, best][:, None], iou[idx, best][:, None]
                masks = sam.postprocess_masks(low, input_size, hw) > sam.mask_threshold
            return list(zip(masks[:, 0].cpu().unbind(0), iou[:, 0].float().cpu().unbind(0)))

        res = with_oom_retry(run, tboxes, self.box_batch, what="box batch")
        masks = torch.stack([m for m, _ in res]).numpy()
        scores = torch.stack([s for _, s in res]).numpy().astype(np.float32)
        return masks, scores
