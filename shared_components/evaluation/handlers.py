"""The evaluation handler every bundle's ``evaluate.yaml`` attaches: per-case, per-class metrics, their summary,
and what evaluation cost (inference seconds per volume, peak memory); for a detection datalist (``evaluation``
with ``froc: true``, e.g. ADAM aneurysms) also the extra metrics it names, the ignored label and the FROC."""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

from shared_components.data.datalist import subject_of
from shared_components.evaluation import froc
from shared_components.evaluation.metrics import ALL_METRICS, METRICS, case_metrics, spacing_from_affine
from shared_components.evaluation.postprocessing import SAVED
from shared_components.evaluation.report import MEAN_CLASS, summary_markdown, write_evaluation
from shared_components.evaluation.statistics import CONFIDENCE
from shared_components.training.handlers import peak_ram_mb

logger = logging.getLogger(__name__)

CONVENTIONS = (
    "metrics in each case's original geometry and voxel spacing (mm); empty structures follow the BraTS "
    "convention: reference and prediction both empty -> Dice 1, NSD 1, HD95 0, MSD 0; exactly one empty -> Dice 0, "
    "NSD 0, HD95 = MSD = image diagonal (mm)"
)


def class_names(meta: Mapping[str, Any] | None, num_classes: int, multilabel: bool = False) -> list[str]:
    """Names of the evaluated channels from the bundle metadata's ``pred`` ``channel_def`` (background excluded
    unless ``multilabel``), else ``class1``, ``class2``, ..."""
    channel_def: Mapping[str, Any] = {}
    with contextlib.suppress(KeyError, TypeError):
        channel_def = (meta or {})["network_data_format"]["outputs"]["pred"]["channel_def"] or {}
    first = 0 if multilabel else 1
    return [str(channel_def.get(str(c), channel_def.get(c, f"class{c}"))) for c in range(first, num_classes)]


class SegmentationMetrics:
    """Compute Dice, HD95, mean surface distance and normalised surface Dice for every case and class, and at the
    end of the run write ``metrics_per_case.csv``, ``metrics_summary.csv``/``.json`` and ``cases.csv`` to
    ``output_dir`` (see :mod:`shared_components.evaluation.report`).

    Expects one-hot (or region) ``pred``/``label`` in the original geometry, as produced by
    :func:`shared_components.evaluation.postprocessing.evaluation_postprocessing`. The class means are also put into
    ``engine.state.metrics`` (``dice_<class>``, ..., ``dice_mean``) so StatsHandler and MLflow report them.
    Under ``torch.distributed`` attach it on every rank: rows are gathered and rank 0 writes the files.

    Args:
        output_dir: folder for the files.
        tolerance_mm: NSD tolerance in mm (one value, or one per class).
        class_names: names of the evaluated channels (background excluded for softmax outputs).
        multilabel: channels are independent regions (no background channel to drop).
        metrics: subset of ``dice``, ``hd95``, ``msd``, ``nsd`` (and ``vs``).
        confidence: level of the bootstrap confidence intervals.
        datalist: the bundle's datalist (file or content). When it declares detection (``evaluation`` with
            ``froc: true`` and per-case ``aneurysms``, as ``prepare_data.py adam`` writes), its
            ``evaluation.metrics`` are added, voxels of its ``evaluation.ignore_label`` (raw label value, e.g. ADAM's
            treated aneurysms) are removed from prediction and reference before the metrics, and the FROC files of
            :mod:`shared_components.evaluation.froc` are written next to the tables: candidates are the connected
            components of the foreground probability >= ``froc_threshold`` on the network's grid, scored by their
            maximum probability, matched in world mm. Other datalists change nothing.
        froc_threshold: probability above which voxels form FROC candidates.
        n_bootstrap: bootstrap resamples of the FROC confidence intervals.
    """

    def __init__(
        self,
        output_dir: str,
        tolerance_mm: float | Sequence[float],
        class_names: Sequence[str],
        multilabel: bool = False,
        metrics: Sequence[str] = METRICS,
        confidence: float = CONFIDENCE,
        datalist: str | Mapping[str, Any] | None = None,
        froc_threshold: float = 0.5,
        n_bootstrap: int = froc.N_BOOTSTRAP,
    ):
        self.output_dir = Path(output_dir)
        self.tolerance_mm = tolerance_mm
        self.class_names = list(class_names)
        self.multilabel = multilabel
        self.metrics = list(metrics)
        self.confidence = confidence
        self.rows: list[dict[str, Any]] = []
        self.cases: list[dict[str, Any]] = []
        self._t_iter = self._t_forward = self._t_epoch = self._t_candidates = 0.0
        self.targets = froc.detection_targets(datalist)
        evaluation = _evaluation_section(datalist) if self.targets is not None else {}
        self.metrics += [m for m in evaluation.get("metrics", []) if m in ALL_METRICS and m not in self.metrics]
        self.ignore_label = evaluation.get("ignore_label")
        self.froc_threshold = froc_threshold
        self.n_bootstrap = n_bootstrap
        self.detections: list[froc.CaseResult] = []
        self._candidates: list[list[froc.Candidate]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._forward_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _reset(self, engine: Engine) -> None:
        self.rows, self.cases, self.detections = [], [], []
        self._t_epoch = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def _iteration_started(self, engine: Engine) -> None:
        self._sync()
        self._t_iter = time.perf_counter()

    def _forward_completed(self, engine: Engine) -> None:
        self._sync()
        self._t_forward = time.perf_counter()
        if self.targets is not None:  # FROC candidates from the probabilities, before they are discretised
            out = engine.state.output
            self._candidates = _probability_candidates(out["pred"], out["image"], self.multilabel, self.froc_threshold)
            now = time.perf_counter()
            self._t_candidates, self._t_forward = now - self._t_forward, now  # counted as metrics time

    def _iteration_completed(self, engine: Engine) -> None:
        t_post = time.perf_counter()
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        batches = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch] * len(outputs)
        n = len(outputs)
        candidates = self._candidates if len(self._candidates) == n else [None] * n
        for out, item, cands in zip(outputs, batches, candidates, strict=True):
            self._case(out, item, (self._t_forward - self._t_iter) / n, (t_post - self._t_forward) / n, cands)
        self._candidates, self._t_candidates = [], 0.0

    def _case(
        self,
        out: Mapping[str, Any],
        item: Mapping[str, Any],
        infer_s: float,
        post_s: float,
        candidates: list[froc.Candidate] | None = None,
    ) -> None:
        t0 = time.perf_counter() - (self._t_candidates if candidates is not None else 0.0)
        pred, label = out["pred"], out["label"]
        first = 0 if self.multilabel else 1
        if pred.shape[0] - first != len(self.class_names):
            raise ValueError(
                f"{len(self.class_names)} class names {self.class_names} for {pred.shape[0] - first} evaluated "
                "prediction channels: check num_classes and the pred channel_def in configs/metadata.json."
            )
        meta = getattr(label, "meta", {}) or {}
        affine = getattr(label, "affine", None)
        spacing = spacing_from_affine(affine, pred.ndim - 1) if affine is not None else (1.0,) * (pred.ndim - 1)
        label_file = str(meta.get("filename_or_obj", ""))
        ignored = _ignored_voxels(label_file, pred.shape[1:]) if self.ignore_label is not None else None
        p, r = pred[first:], label[first:]
        if ignored is not None:  # the ignored label (e.g. treated aneurysms) counts neither way
            keep = torch.as_tensor(ignored != self.ignore_label, device=p.device)
            p, r = p * keep, r * keep
        values = case_metrics(p, r, spacing, self.tolerance_mm, self.metrics)
        case = str(item.get("subject") or "") or subject_of({"image": label_file or "case"})
        fold = _scalar(item.get("fold", ""))
        centre = _scalar(item.get("center", item.get("centre", "")))
        if self.targets is not None and candidates is not None:
            reference = froc._numpy(affine) if affine is not None else np.eye(4)
            rule = froc.IgnoredLabel(ignored, reference, self.ignore_label) if ignored is not None else None
            self.detections.append(
                froc.match_case(
                    case, candidates, self.targets.get(case, []), rule, fold=fold, centre=centre, affine=reference
                )
            )
        for m, per_class in values.items():
            for cls, v in zip(self.class_names, per_class, strict=True):
                self.rows.append({"case": case, "fold": fold, "centre": centre, "class": cls, "metric": m, "value": v})
        image = out.get("image")
        self.cases.append(
            {
                "case": case,
                "fold": fold,
                "centre": centre,
                "image": str(getattr(image, "meta", {}).get("filename_or_obj", "")),
                "label": label_file,
                "prediction": str(out.get(SAVED, "")),
                "spacing_mm": "x".join(f"{s:.4g}" for s in spacing),
                "shape": "x".join(str(s) for s in pred.shape[1:]),
                "inference_seconds": infer_s,
                "postprocessing_seconds": post_s,
                "metrics_seconds": time.perf_counter() - t0,
            }
        )

    def _epoch_completed(self, engine: Engine) -> None:
        rows, cases, detections = self.rows, self.cases, self.detections
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        if dist and torch.distributed.get_world_size() > 1:
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (rows, cases, detections))
            rows = [r for g in gathered for r in g[0]]
            cases = [c for g in gathered for c in g[1]]
            detections = [d for g in gathered for d in g[2]]
            if torch.distributed.get_rank() != 0:
                return
        if not rows:
            logger.warning("no cases were evaluated: nothing written")
            return
        n = len(cases)
        info = {
            "classes": self.class_names,
            "metrics": self.metrics,
            "nsd_tolerance_mm": self.tolerance_mm,
            "conventions": CONVENTIONS,
            "timing": {
                "evaluation_seconds": time.perf_counter() - self._t_epoch,
                "inference_seconds_per_case": sum(c["inference_seconds"] for c in cases) / n,
                "inference_seconds_median": statistics.median(c["inference_seconds"] for c in cases),
                "postprocessing_seconds_per_case": sum(c["postprocessing_seconds"] for c in cases) / n,
                "metrics_seconds_per_case": sum(c["metrics_seconds"] for c in cases) / n,
            },
            "peak_ram_mb": peak_ram_mb(),
            "peak_vram_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0,
        }
        summary = write_evaluation(self.output_dir, rows, cases, info, self.confidence)
        overall = summary[summary["group"] == "all"]
        for r in overall.to_dict("records"):
            engine.state.metrics[f"{r['metric']}_{r['class']}"] = r["mean"]
        t = info["timing"]
        logger.info(
            f"evaluated {n} cases ({t['inference_seconds_per_case']:.2f} s inference, "
            f"{t['metrics_seconds_per_case']:.3f} s metrics per case) -> {self.output_dir}\n"
            + summary_markdown(summary, "all", self.metrics)
        )
        if (summary["group"] != "all").any():
            logger.info("per centre (class mean):\n" + _centre_lines(summary))
        if self.targets is not None and detections:
            info = {"task": "aneurysm detection", "candidate_threshold": self.froc_threshold}
            info["ignored_label"] = self.ignore_label
            result = froc.write_froc(self.output_dir, detections, info, self.n_bootstrap, self.confidence)
            engine.state.metrics["froc_cpm"] = result["cpm"]
            engine.state.metrics["froc_sensitivity_1fp"] = froc.sensitivity_at(result)
            logger.info(froc.summary_line(result))


def _evaluation_section(datalist: str | Mapping[str, Any] | None) -> dict[str, Any]:
    import json

    data = datalist if isinstance(datalist, Mapping) else json.loads(Path(str(datalist)).read_text())
    return dict(data.get("evaluation") or {})


def _ignored_voxels(label_file: str, shape: Sequence[int]) -> np.ndarray | None:
    """The raw label map of ``label_file`` (as LoadImage reads it, so on the evaluated grid), or None."""
    from monai.transforms import LoadImage

    if not label_file:
        return None
    raw = np.asarray(LoadImage(image_only=True)(label_file))
    raw = np.round(raw.reshape(raw.shape[: len(shape)])).astype(np.int16)
    return raw if tuple(raw.shape) == tuple(shape) else None


def _probability_candidates(
    logits: torch.Tensor, image: Any, multilabel: bool, threshold: float
) -> list[list[froc.Candidate]]:
    """FROC candidates of each item of a batch of network outputs (on the preprocessed grid of ``image``)."""
    x = logits[:, 0] if logits.ndim == 6 else logits  # deep supervision: the full-resolution head
    x = x.detach().float()
    prob = torch.sigmoid(x).amax(1) if multilabel else 1 - torch.softmax(x, 1)[:, 0]
    affines = froc._numpy(getattr(image, "affine", torch.eye(4)))
    out = []
    for b in range(prob.shape[0]):
        affine = affines[b] if affines.ndim == 3 else affines
        out.append(froc.candidates_from_probability(prob[b].cpu().numpy(), affine, threshold))
    return out


def _scalar(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    return "" if v is None else str(v)


def _centre_lines(summary: Any) -> str:
    sub = summary[(summary["group"] != "all") & (summary["class"] == MEAN_CLASS)]
    lines = []
    for g in dict.fromkeys(sub["group"]):
        cells = sub[sub["group"] == g].set_index("metric")
        lines.append(f"  {g}: " + ", ".join(f"{m} {cells.loc[m, 'mean']:.4g}" for m in cells.index))
    return "\n".join(lines)
