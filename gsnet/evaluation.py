"""Evaluation: Detectron2's semantic-segmentation metrics and the paper's results table.

:class:`GSNetSemSegEvaluator` is Detectron2's ``SemSegEvaluator`` (mIoU, fwIoU, mACC, pACC,
per-class IoU/ACC and boundary IoU over the metadata's ``stuff_classes``, ignoring the metadata's
``ignore_label``; ground truth read at file resolution; classes without ground-truth pixels left
out of mIoU and mACC) with a NumPy-2-safe ground-truth reader and clear errors for predictions
or labels that do not fit the dataset. :func:`write_results_table` gathers the results of the
test sets (the paper's four, or any evaluation suite) into one table (mIoU, fwIoU, mACC and pACC
per set and their mean, as the paper reports them) and a per-class table.
:func:`compare_precisions` measures what low-precision inference changes: pixel agreement with
fp32 and the mIoU of both.

Shapes: a prediction is (C, H, W) scores with C <= the number of metadata classes (the model's
vocabulary, len(class JSON), is a prefix of the metadata list) and H x W the ground-truth
file's size.
"""

import csv
import json
import logging
import math
import os

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from detectron2.utils.file_io import PathManager
from PIL import Image

from .data.datasets import invalid_label_values, remap_labels
from .errors import ConfigError, InputFileError

logger = logging.getLogger(__name__)

__all__ = [
    "GSNetSemSegEvaluator",
    "compare_precisions",
    "load_label_map",
    "write_results_table",
]

# Summary metrics of Detectron2's sem_seg result dict, in table order.
SUMMARY_METRICS = ("mIoU", "fwIoU", "mACC", "pACC")


def _read_label_error(filename, error):
    return InputFileError(
        f"Cannot read ground-truth label {filename}: {type(error).__name__}: {error}. The file "
        "is missing, truncated, corrupt or not an image: replace it. python "
        "tools/check_datasets.py lists every such file of a dataset."
    )


def load_label_map(filename, dtype=int):
    """Read a label image as an (H, W) array of its raw values (palette indices for P mode).

    Detectron2 0.7.2's default reader calls ``np.array(..., copy=False)``, which NumPy 2
    rejects when a copy is needed; this reader always copies (the evaluator writes into it).

    Raises:
        InputFileError: the file cannot be read (PIL raises OSError, SyntaxError,
            DecompressionBombError, ... depending on the damage).
    """
    try:
        with PathManager.open(filename, "rb") as f:
            return np.array(Image.open(f), dtype=dtype)
    except Exception as error:
        raise _read_label_error(filename, error) from error


def _label_size(filename):
    """(width, height) of a label file, from its header."""
    try:
        with PathManager.open(filename, "rb") as f:
            return Image.open(f).size
    except Exception as error:
        raise _read_label_error(filename, error) from error


class GSNetSemSegEvaluator(SemSegEvaluator):
    """Detectron2's semantic-segmentation evaluator with checked inputs.

    Besides the NumPy-2-safe reader, it checks every prediction's class count and size, and
    every ground-truth file's values, and raises an error naming the file instead of a
    broadcasting or index error from inside NumPy.
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None):
        """
        Args:
            dataset_name (str): a registered dataset with metadata ``stuff_classes`` and
                ``ignore_label``.
            distributed (bool): gather results from all ranks.
            output_dir (str or None): where Detectron2 writes its prediction and metric dumps.
        """
        super().__init__(
            dataset_name,
            distributed=distributed,
            output_dir=output_dir,
            sem_seg_loading_fn=self._load_ground_truth,
        )
        # File value -> class index, for datasets whose label files hold other values.
        self._label_mapping = MetadataCatalog.get(dataset_name).get("label_mapping", {})

    def _load_ground_truth(self, filename, dtype=int):
        label = remap_labels(load_label_map(filename, dtype=dtype), self._label_mapping)
        if label.ndim != 2:
            raise InputFileError(
                f"Ground truth {filename} has shape {label.shape}; it must be a single-channel "
                "image of class indices."
            )
        bad = invalid_label_values(label, self._num_classes, self._ignore_label)
        if bad:
            raise InputFileError(
                f"Ground truth {filename} holds label values {bad[:10]} that are neither "
                f"a class index of dataset '{self._dataset_name}' (0..{self._num_classes - 1}) "
                f"nor its ignore label {self._ignore_label}. Run tools/check_datasets.py."
            )
        return label

    def process(self, inputs, outputs):
        """
        Args:
            inputs (list[dict]): the model inputs; each has "file_name".
            outputs (list[dict]): each has "sem_seg", a (C, H, W) score tensor at the
                ground-truth file's resolution.
        """
        for input_dict, output in zip(inputs, outputs):
            self._check_prediction(input_dict["file_name"], output["sem_seg"])
        super().process(inputs, outputs)

    def _check_prediction(self, file_name, scores):
        if scores.dim() != 3:
            raise ValueError(
                f"Prediction for {file_name} has shape {tuple(scores.shape)}; expected "
                "(C, H, W) class scores."
            )
        if scores.shape[0] > self._num_classes:
            raise ConfigError(
                f"Prediction for {file_name} has {scores.shape[0]} class channels but dataset "
                f"'{self._dataset_name}' has {self._num_classes} classes; evaluate with the "
                "dataset's own class JSON (its metadata 'class_json')."
            )
        gt_file = self.input_file_to_gt_file[file_name]
        gt_width, gt_height = _label_size(gt_file)
        if tuple(scores.shape[1:]) != (gt_height, gt_width):
            raise ValueError(
                f"Prediction for {file_name} is {scores.shape[2]} x {scores.shape[1]} (W x H) "
                f"but its ground truth {gt_file} is {gt_width} x {gt_height}; predictions must "
                "be resized to the file's resolution."
            )


def _check_results(results):
    """Raise a clear error unless ``results`` maps dataset names to sem_seg result dicts."""
    if not isinstance(results, dict) or not results:
        raise ValueError(
            "write_results_table needs a non-empty dict {dataset_name: {'sem_seg': {...}}}, "
            f"got {type(results).__name__} {results!r:.100}."
        )
    if "sem_seg" in results:
        raise ValueError(
            "write_results_table got one dataset's result ({'sem_seg': ...}); Detectron2 "
            "unwraps the result of a single test set: pass {dataset_name: result}."
        )
    for name, result in results.items():
        metrics = result.get("sem_seg") if isinstance(result, dict) else None
        if not isinstance(metrics, dict):
            raise ValueError(
                f"Result of dataset '{name}' has no 'sem_seg' dict (got {result!r:.100}); pass "
                "the dicts returned by GSNetSemSegEvaluator.evaluate()."
            )
        missing = [key for key in SUMMARY_METRICS if key not in metrics]
        if missing:
            raise ValueError(
                f"Result of dataset '{name}' lacks {missing}; expected Detectron2's sem_seg "
                f"metrics {list(SUMMARY_METRICS)}."
            )


def _json_safe(value):
    """NaN (a class without ground truth) -> None, so that results.json is valid JSON."""
    if isinstance(value, dict):
        return {key: _json_safe(v) for key, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _per_class_rows(results):
    """[dataset, class, IoU, ACC] per class of each set (empty cells for a class without ground
    truth), from Detectron2's "IoU-<class>" and "ACC-<class>" metrics."""
    rows = []
    for name, result in results.items():
        metrics = result["sem_seg"]
        for key, iou in metrics.items():
            if not key.startswith("IoU-"):
                continue
            class_name = key[len("IoU-") :]
            accuracy = metrics.get(f"ACC-{class_name}", math.nan)
            rows.append(
                [name, class_name]
                + ["" if math.isnan(value) else f"{value:.4f}" for value in (iou, accuracy)]
            )
    return rows


def write_results_table(results, output_dir):
    """Log and save the results of several test sets as one table.

    Args:
        results (dict): {dataset_name: {"sem_seg": {"mIoU", "fwIoU", "mACC", "pACC",
            "IoU-<class>", ...}}}, as returned by Detectron2's inference for several test sets.
        output_dir (str): receives results.json (every metric), results.csv and results.md
            (the summary table) and results_per_class.csv (dataset, class, IoU, ACC: one row per
            class of each set); created if needed.

    Returns:
        str: the summary table (markdown): one row per test set and a "mean" row.
    """
    _check_results(results)
    rows = [
        [name] + [float(result["sem_seg"][key]) for key in SUMMARY_METRICS]
        for name, result in results.items()
    ]
    mean = [float(np.mean([row[i + 1] for row in rows])) for i in range(len(SUMMARY_METRICS))]
    rows.append(["mean", *mean])

    header = ["dataset", *SUMMARY_METRICS]
    table = "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "| " + " | ".join(["---"] + ["---:"] * len(SUMMARY_METRICS)) + " |",
        ]
        + ["| " + " | ".join([row[0]] + [f"{v:.2f}" for v in row[1:]]) + " |" for row in rows]
    )

    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(_json_safe(dict(results)), f, indent=2)
    with open(os.path.join(output_dir, "results.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([row[0]] + [f"{v:.4f}" for v in row[1:]] for row in rows)
    with open(os.path.join(output_dir, "results_per_class.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "class", "IoU", "ACC"])
        writer.writerows(_per_class_rows(results))
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(table + "\n")
    logger.info("Results (%%), written to %s:\n%s", output_dir, table)
    return table


def compare_precisions(
    model, data_loader, dataset_name, precision, *, max_images=None, progress=None
):
    """Run every image in fp32 and under autocast to ``precision``; compare the predictions.

    Args:
        model: a GSNet in eval mode, its vocabulary set to the dataset's.
        data_loader: a test loader of ``dataset_name`` (batches of dicts with "file_name").
        dataset_name (str): the registered dataset (its metadata gives classes and ignore label).
        precision (torch.dtype): torch.bfloat16 or torch.float16.
        max_images (int or None): stop after this many images.
        progress (callable or None): wraps the loader (e.g. tqdm) to show progress.

    Returns:
        dict: "images"; "pixel_agreement" and "labelled_pixel_agreement" (percent of all pixels
        and of the pixels with a ground-truth class whose predicted class is the same in both
        precisions); "mIoU_fp32", "mIoU_low" and "mIoU_difference" (low - fp32, points).
    """
    if precision == torch.float32:
        raise ValueError("compare_precisions compares fp32 with a lower precision, not itself.")
    evaluators = {
        dtype: GSNetSemSegEvaluator(dataset_name, distributed=False)
        for dtype in (torch.float32, precision)
    }
    for evaluator in evaluators.values():
        evaluator.reset()
    ground_truth_files = evaluators[torch.float32].input_file_to_gt_file
    metadata = MetadataCatalog.get(dataset_name)
    ignore_label, label_mapping = metadata.ignore_label, metadata.get("label_mapping", {})
    counts = np.zeros(4, dtype=np.int64)  # agreeing, pixels, agreeing labelled, labelled
    images = 0
    saved_precision = model.inference_precision
    loader = progress(data_loader) if progress is not None else data_loader
    try:
        with torch.no_grad():
            for inputs in loader:
                # Checked here, not after an image, so that a progress bar counts the last one.
                if max_images is not None and images >= max_images:
                    break
                predictions = {}
                for dtype, evaluator in evaluators.items():
                    model.inference_precision = dtype
                    outputs = model(inputs)
                    evaluator.process(inputs, outputs)
                    predictions[dtype] = [o["sem_seg"].argmax(0).cpu().numpy() for o in outputs]
                for x, high, low in zip(inputs, predictions[torch.float32], predictions[precision]):
                    label = load_label_map(ground_truth_files[x["file_name"]])
                    label = remap_labels(label, label_mapping)
                    labelled = label != ignore_label
                    same = high == low
                    counts += [same.sum(), same.size, same[labelled].sum(), labelled.sum()]
                images += len(inputs)
    finally:
        model.inference_precision = saved_precision
    miou = {
        dtype: evaluator.evaluate()["sem_seg"]["mIoU"] for dtype, evaluator in evaluators.items()
    }
    return {
        "images": images,
        "pixel_agreement": 100.0 * counts[0] / max(counts[1], 1),
        "labelled_pixel_agreement": 100.0 * counts[2] / max(counts[3], 1),
        "mIoU_fp32": miou[torch.float32],
        "mIoU_low": miou[precision],
        "mIoU_difference": miou[precision] - miou[torch.float32],
    }
