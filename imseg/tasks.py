"""What a segmentation task is, in the words every module shares: config, classes, losses, metrics and writers.

- `multilabel`: one sigmoid per class; classes may overlap, and a pixel may have none.
- `multiclass`: one softmax over the classes; every valid pixel has exactly one, `background` among them when
  the config adds it for valid pixels without a label.
"""

TASKS = ("multilabel", "multiclass")
BACKGROUND = "background"  # the implicit class of a multiclass task with `background: true`
