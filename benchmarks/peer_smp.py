"""The peer on imseg's road A/B data: segmentation_models.pytorch FPN-ResNet50, random initialisation, trained with
the recipe the issue names (AdamW 1e-3, one-cycle schedule, BCE + Dice), printing JSON lines like recipe_ab.py.

    python benchmarks/peer_smp.py [--seeds 0 1] [--epochs 5] [--batch-size 8]

Needs PyTorch, torchvision and segmentation-models-pytorch (not imseg dependencies; a separate environment is
fine: `pip install torch torchvision segmentation-models-pytorch`, then run this with that Python and imseg on
PYTHONPATH, or with `--python`). The dataset is the one `recipe_ab.py` builds (benchmarks/.work/road224); ignored
pixels count neither in the loss nor in the scores, as in imseg; the best epoch on validation is scored on test.
"""

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def load(root, split):
    """(images (N, 3, H, W) float 0-255, masks (N, 1, H, W), valid (N, 1, H, W)) of one split, in memory."""
    import numpy as np
    from PIL import Image

    from imseg.annotations import read_annotation
    from imseg.layout import list_split

    images, masks, valid = [], [], []
    for _, image_path, ann_path in list_split(root, split):
        images.append(np.asarray(Image.open(image_path).convert("RGB"), np.float32).transpose(2, 0, 1))
        annotation, ignore = read_annotation(ann_path, with_ignore=True)
        masks.append(annotation[:1].astype(np.float32))
        valid.append((ignore == 0)[None].astype(np.float32))
    return np.stack(images), np.stack(masks), np.stack(valid)


def train_once(data, seed, epochs, batch_size):
    import numpy as np
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    splits = {s: [torch.from_numpy(a) for a in load(data, s)] for s in ("train", "val", "test")}
    model = smp.FPN("resnet50", encoder_weights=None, classes=1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    steps = -(-len(splits["train"][0]) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=epochs * steps)

    def loss_of(logits, truth, valid):
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, truth, reduction="none")
        bce = (bce * valid).sum() / valid.sum().clamp_min(1)
        p = torch.sigmoid(logits) * valid
        dice = 1 - (2 * (p * truth).sum() + 1) / (p.sum() + (truth * valid).sum() + 1)
        return bce + dice

    def scores(split):
        model.eval()
        counts = torch.zeros(3)
        with torch.no_grad():
            images, masks, valid = splits[split]
            for i in range(0, len(images), 16):
                predicted = model((images[i : i + 16] - mean) / std) > 0
                truth, ok = masks[i : i + 16] > 0.5, valid[i : i + 16] > 0.5
                counts += torch.tensor([(predicted & truth & ok).sum(), (predicted & ~truth & ok).sum(),
                                        (~predicted & truth & ok).sum()], dtype=torch.float32)  # fmt: skip
        tp, fp, fn = counts.tolist()
        return tp / max(tp + fp + fn, 1), tp / max(tp + fp, 1), tp / max(tp + fn, 1)

    best, best_state, val_ious = -1.0, None, []
    start = time.monotonic()
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(splits["train"][0]))
        for i in range(steps):
            idx = torch.from_numpy(order[i * batch_size : (i + 1) * batch_size])
            images, masks, valid = (t[idx] for t in splits["train"])
            flips = torch.from_numpy(rng.random(len(idx)) < 0.5).view(-1, 1, 1, 1)  # flips, as imseg's recipe
            images, masks, valid = (torch.where(flips, t.flip(-1), t) for t in (images, masks, valid))
            optimizer.zero_grad()
            loss_of(model((images - mean) / std), masks, valid).backward()
            optimizer.step()
            schedule.step()
        iou = scores("val")[0]
        val_ious.append(iou)
        if iou > best:
            best, best_state = iou, {k: v.clone() for k, v in model.state_dict().items()}
    minutes = (time.monotonic() - start) / 60
    model.load_state_dict(best_state)
    iou, precision, recall = scores("test")
    return {"test_iou": iou, "test_precision": precision, "test_recall": recall, "val_iou_per_epoch": val_ious,
            "train_minutes": minutes}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--work", default=os.path.join(REPO, "benchmarks", ".work"))
    args = parser.parse_args()
    try:
        import segmentation_models_pytorch  # noqa: F401
    except ImportError:
        raise SystemExit(
            "peer_smp: needs torch, torchvision and segmentation-models-pytorch (see the docstring)"
        ) from None
    from recipe_ab import build_dataset, emit

    data = build_dataset(args.work)
    import statistics

    tests = []
    for seed in args.seeds:
        result = train_once(data, seed, args.epochs, args.batch_size)
        tests.append(result["test_iou"])
        emit(
            "roads.test_iou",
            result["test_iou"],
            "IoU",
            variant="peer FPN-ResNet50 (smp)",
            seed=seed,
            epochs=args.epochs,
            batch=args.batch_size,
            **{k: v for k, v in result.items() if k != "test_iou"},
        )
    emit("roads.test_iou_mean", statistics.mean(tests), "IoU", variant="peer FPN-ResNet50 (smp)", seeds=args.seeds,
         min=min(tests), max=max(tests))  # fmt: skip


if __name__ == "__main__":
    main()
