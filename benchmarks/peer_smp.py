"""The peer, segmentation_models.pytorch FPN-ResNet50 from random initialisation, trained with the recipe the issues
name (AdamW 1e-3, one-cycle schedule, loss + Dice, random horizontal flips), on one of imseg's two real-data
yardsticks, printing JSON lines like recipe_ab.py and decoders.py:

    python benchmarks/peer_smp.py [--seeds 0 1] [--epochs 5] [--batch-size 8]       # the road A/B (one class, BCE)
    python benchmarks/peer_smp.py --dubai dubai128 [--seeds 0 1 2]                  # Dubai land cover (softmax, CE)

`--dubai` takes the 128-px tiles of docs/results.md ("Dubai land cover", `imseg-data convert`) and defaults to the
peer's figure there: 6 epochs, batch 16, the five classes as one softmax; the road A/B builds its dataset as
`recipe_ab.py` does (benchmarks/.work/road224) and defaults to 5 epochs at batch 8. Ignored pixels count neither in
the loss nor in the scores, as in imseg; the best epoch on validation is scored on test from exact pixel counts.

Needs PyTorch, torchvision and segmentation-models-pytorch (not imseg dependencies; a separate environment is
fine: `pip install torch torchvision segmentation-models-pytorch`, then run this with that Python and imseg on
PYTHONPATH).
"""

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

IGNORE = 255  # the class index of ignored pixels in a softmax target


def load(root, split):
    """(images (N, 3, H, W) float 0-255, annotations (N, C, H, W) 0/1 uint8, valid (N, 1, H, W) bool) of one split."""
    import numpy as np
    from PIL import Image

    from imseg.annotations import read_annotation
    from imseg.layout import list_split

    images, annotations, valid = [], [], []
    for _, image_path, ann_path in list_split(root, split):
        images.append(np.asarray(Image.open(image_path).convert("RGB"), np.float32).transpose(2, 0, 1))
        annotation, ignore = read_annotation(ann_path, with_ignore=True)
        annotations.append(annotation)
        valid.append((ignore == 0)[None])
    return np.stack(images), np.stack(annotations), np.stack(valid)


class Binary:
    """The road A/B: one sigmoid channel (the first class), BCE + Dice."""

    def __init__(self, num_classes):
        self.channels = 1

    def target(self, annotations, valid):
        return annotations[:, :1].float()

    def loss(self, logits, target, valid):
        import torch

        valid = valid.float()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        bce = (bce * valid).sum() / valid.sum().clamp_min(1)
        p = torch.sigmoid(logits) * valid
        return bce + 1 - (2 * (p * target).sum() + 1) / (p.sum() + (target * valid).sum() + 1)

    def predicted(self, logits):
        return logits > 0  # (N, 1, H, W), the one class


class Softmax:
    """Classes that exclude each other: one softmax, cross-entropy + the peer's own multiclass Dice."""

    def __init__(self, num_classes):
        import segmentation_models_pytorch as smp

        self.channels = num_classes
        self.dice = smp.losses.DiceLoss("multiclass", from_logits=True, ignore_index=IGNORE)

    def target(self, annotations, valid):
        import torch

        labelled = valid[:, 0] & annotations.bool().any(1)
        return torch.where(labelled, annotations.float().argmax(1), torch.full_like(labelled, IGNORE, dtype=torch.long))

    def loss(self, logits, target, valid):
        import torch

        return torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE) + self.dice(logits, target)

    def predicted(self, logits):
        import torch

        return torch.nn.functional.one_hot(logits.argmax(1), self.channels).permute(0, 3, 1, 2).bool()


def train_once(data, task, seed, epochs, batch_size):
    """Train one model; per-class test IoU, precision and recall of the best epoch on validation, and the history."""
    import numpy as np
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    splits = {s: [torch.from_numpy(a) for a in load(data, s)] for s in ("train", "val", "test")}
    task = task(splits["train"][1].shape[1])
    model = smp.FPN("resnet50", encoder_weights=None, classes=task.channels)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    steps = -(-len(splits["train"][0]) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=epochs * steps)

    def scores(split):
        """Per-class (IoU, precision, recall) lists from exact pixel counts over the valid pixels of a split."""
        model.eval()
        tp, fp, fn = (torch.zeros(task.channels, dtype=torch.float64) for _ in range(3))
        with torch.no_grad():
            images, annotations, valid = splits[split]
            for i in range(0, len(images), 16):
                predicted = task.predicted(model((images[i : i + 16] - mean) / std))
                truth = annotations[i : i + 16, : task.channels].bool()
                ok = valid[i : i + 16]
                tp += (predicted & truth & ok).sum((0, 2, 3))
                fp += (predicted & ~truth & ok).sum((0, 2, 3))
                fn += (~predicted & truth & ok).sum((0, 2, 3))
        return [(tp / (tp + fp + fn).clamp_min(1)).tolist(), (tp / (tp + fp).clamp_min(1)).tolist(),
                (tp / (tp + fn).clamp_min(1)).tolist()]  # fmt: skip

    best, best_state, val_ious = -1.0, None, []
    start = time.monotonic()
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(splits["train"][0]))
        for i in range(steps):
            idx = torch.from_numpy(order[i * batch_size : (i + 1) * batch_size])
            images, annotations, valid = (t[idx] for t in splits["train"])
            flips = torch.from_numpy(rng.random(len(idx)) < 0.5).view(-1, 1, 1, 1)  # flips, as imseg's recipe
            images, annotations, valid = (torch.where(flips, t.flip(-1), t) for t in (images, annotations, valid))
            optimizer.zero_grad()
            task.loss(model((images - mean) / std), task.target(annotations, valid), valid).backward()
            optimizer.step()
            schedule.step()
        iou = statistics.mean(scores("val")[0])
        val_ious.append(round(iou, 4))
        if iou > best:
            best, best_state = iou, {k: v.clone() for k, v in model.state_dict().items()}
    minutes = (time.monotonic() - start) / 60
    model.load_state_dict(best_state)
    iou, precision, recall = scores("test")
    return {"iou": iou, "precision": precision, "recall": recall, "val_iou_per_epoch": val_ious,
            "train_minutes": round(minutes, 2)}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dubai", metavar="DIR", help="the Dubai 128-px tiles instead of the road A/B")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, help="default: 6 with --dubai, 5 on the road A/B")
    parser.add_argument("--batch-size", type=int, help="default: 16 with --dubai, 8 on the road A/B")
    parser.add_argument("--work", default=os.path.join(REPO, "benchmarks", ".work"))
    args = parser.parse_args()
    try:
        import segmentation_models_pytorch  # noqa: F401
    except ImportError:
        raise SystemExit(
            "peer_smp: needs torch, torchvision and segmentation-models-pytorch (see the docstring)"
        ) from None
    from recipe_ab import build_dataset, emit

    if args.dubai:
        classes_json = os.path.join(args.dubai, "classes.json")
        if not os.path.isfile(classes_json):
            raise SystemExit(f"peer_smp: --dubai {args.dubai}: no classes.json there (make the tiles first)")
        with open(classes_json) as f:
            names = list(json.load(f))
        data, task, metric, variant = args.dubai, Softmax, "dubai.test_mean_iou", "peer FPN-ResNet50 (smp), softmax"
        epochs, batch = args.epochs or 6, args.batch_size or 16
    else:
        data, task, metric, variant = build_dataset(args.work), Binary, "roads.test_iou", "peer FPN-ResNet50 (smp)"
        epochs, batch, names = args.epochs or 5, args.batch_size or 8, None
    from imseg.errors import DataError

    tests = []
    for seed in args.seeds:
        try:
            result = train_once(data, task, seed, epochs, batch)
        except DataError as e:  # a split missing or unreadable: one line, as imseg's own commands say it
            raise SystemExit(f"peer_smp: {e}") from None
        context = {"variant": variant, "seed": seed, "epochs": epochs, "batch": batch}
        iou, precision, recall = result.pop("iou"), result.pop("precision"), result.pop("recall")
        if names:  # land cover: the mean over classes, and each class by name
            tests.append(statistics.mean(iou))
            context["test_iou_per_class"] = {name: round(v, 4) for name, v in zip(names, iou)}
        else:  # the road A/B: the one class, with its precision and recall
            tests.append(iou[0])
            context.update(test_precision=round(precision[0], 4), test_recall=round(recall[0], 4))
        emit(metric, tests[-1], "IoU", **context, **result)
    emit(f"{metric}_mean", statistics.mean(tests), "IoU", variant=variant, seeds=args.seeds, min=min(tests),
         max=max(tests))  # fmt: skip


if __name__ == "__main__":
    main()
