"""The evaluation handlers: :class:`SegmentationMetrics`, which every segmentation bundle's ``evaluate.yaml``
attaches (per-case, per-class metrics, their summary, and what evaluation cost: inference seconds per volume, peak
memory; for a detection datalist, ``evaluation`` with ``froc: true``, e.g. ADAM aneurysms, also the extra metrics
it names, the ignored label and the FROC), and :class:`DetectionFROC`, the aneurysm detector's validation key metric
and evaluation (the FROC of its boxes, the same tables and costs)."""

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


def _rank() -> int:
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_rank() if dist else 0


def _gathered(*lists: list[Any]) -> tuple[list[Any], ...]:
    """Each list merged over the ranks of ``torch.distributed``, on every rank (unchanged without it)."""
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not dist or torch.distributed.get_world_size() == 1:
        return lists
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, lists)
    return tuple([x for g in gathered for x in g[i]] for i in range(len(lists)))


class _TimedEvaluation:
    """What the evaluation handlers share: each iteration's forward pass and what follows it timed (CUDA
    synchronised), and the cost of a run for ``metrics_summary.json`` (:meth:`_cost`)."""

    _t_epoch = _t_iter = _t_forward = 0.0

    def _start_clock(self) -> None:
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

    def _cost(self, cases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Seconds of the run and per case (the records' ``inference_seconds``, ``postprocessing_seconds``,
        ``metrics_seconds``) and this process's peak memory."""
        n = max(len(cases), 1)
        return {
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


class SegmentationMetrics(_TimedEvaluation):
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
            ``froc: true`` and per-case ``aneurysms``, as ``segbundles prepare adam`` writes), its
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
        self._t_candidates = 0.0
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
        self._start_clock()

    def _forward_completed(self, engine: Engine) -> None:
        super()._forward_completed(engine)
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
        rows, cases, detections = _gathered(self.rows, self.cases, self.detections)
        if _rank() != 0:
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
            **self._cost(cases),
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


# per-case values of the detector's evaluation tables (class ``class_name``): all candidates count
DETECTION_METRICS = ("sensitivity", "false_positives")


class DetectionFROC(_TimedEvaluation):
    """The FROC of a detector (``bundles/aneurysm_mra_retinanet``): its validation key metric and its evaluation.

    Each case's predicted boxes (``pred`` -> ``box_key``/``score_key``, image coordinates of the preprocessed
    ``image``) become candidates (:func:`froc.candidates_from_boxes`) matched to the datalist's aneurysms by
    ``subject`` (:func:`froc.match_case`, ADAM's hit rule). At the end of each run the CPM goes into the engine
    metrics under the name the handler is attached with (``froc_cpm``; as the evaluator's ``key_val_metric`` it picks
    the best weights), and ``froc_sensitivity_1fp`` beside it. With ``output_dir`` (evaluation) it also writes the
    FROC files (:func:`froc.write_froc`, bootstrap CIs) and the tables every evaluation writes
    (:func:`~shared_components.evaluation.report.write_evaluation`): per case the ``sensitivity`` over its untreated
    aneurysms (none for a scan without one) and its ``false_positives`` (:data:`DETECTION_METRICS`), their summary
    with the evaluation's cost (seconds per case, peak memory), and ``cases.csv``. Attach it on every rank under
    ``torch.distributed``: the cases are gathered, every rank gets the metrics and rank 0 writes the files.
    """

    def __init__(
        self,
        datalist: str | Mapping[str, Any],
        output_dir: str | None = None,
        class_name: str = "aneurysm",
        box_key: str = "box",
        score_key: str = "label_scores",
        n_bootstrap: int = froc.N_BOOTSTRAP,
        confidence: float = CONFIDENCE,
    ):
        self.targets = froc.detection_targets(datalist)
        if self.targets is None:
            raise ValueError("DetectionFROC needs a datalist with per-case 'aneurysms' (segbundles prepare adam).")
        self.output_dir = output_dir
        self.class_name = class_name
        self.box_key, self.score_key = box_key, score_key
        self.n_bootstrap, self.confidence = n_bootstrap, confidence
        self.results: list[froc.CaseResult] = []
        self.cases: list[dict[str, Any]] = []

    def attach(self, engine: Engine, name: str = "froc_cpm") -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._forward_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed, name)

    def _reset(self, engine: Engine) -> None:
        self.results, self.cases = [], []
        self._start_clock()

    def _iteration_completed(self, engine: Engine) -> None:
        t_post = time.perf_counter()
        items = _samples(engine.state.batch)
        n = max(len(items), 1)
        for pred, item in zip(_predictions(engine.state.output), items, strict=True):
            t0 = time.perf_counter()
            image = item["image"]
            case = str(item.get("subject") or "")
            boxes, scores = froc._numpy(pred[self.box_key]), froc._numpy(pred[self.score_key])
            candidates = froc.candidates_from_boxes(boxes, scores, _affine(image))
            meta = getattr(image, "meta", {}) or {}
            original = meta.get("original_affine")
            fold, centre = _scalar(item.get("fold", "")), _scalar(item.get("center", item.get("centre", "")))
            reference = froc._numpy(original) if original is not None else None
            targets = self.targets.get(case, [])
            self.results.append(froc.match_case(case, candidates, targets, affine=reference, fold=fold, centre=centre))
            self.cases.append(
                {
                    "case": case,
                    "fold": fold,
                    "centre": centre,
                    "image": str(meta.get("filename_or_obj", "")),
                    "candidates": len(candidates),
                    "inference_seconds": (self._t_forward - self._t_iter) / n,
                    "postprocessing_seconds": (t_post - self._t_forward) / n,
                    "metrics_seconds": time.perf_counter() - t0,
                }
            )

    def _epoch_completed(self, engine: Engine, name: str) -> None:
        results, cases = _gathered(self.results, self.cases)
        writing = self.output_dir is not None and _rank() == 0 and bool(results)
        if writing:
            info = {"task": "aneurysm detection"}
            summary = froc.write_froc(self.output_dir, results, info, self.n_bootstrap, self.confidence)
        else:  # validation: the CPM alone, without bootstrap CIs
            summary = froc.froc(results, n_bootstrap=0)
        engine.state.metrics[name] = summary["cpm"]
        engine.state.metrics["froc_sensitivity_1fp"] = froc.sensitivity_at(summary)
        if _rank() == 0:
            logger.info(froc.summary_line(summary))
        if writing:
            self._write_tables(results, cases)

    def _write_tables(self, results: Sequence[froc.CaseResult], cases: Sequence[Mapping[str, Any]]) -> None:
        rows = []
        for r in results:
            row = {"case": r.case, "fold": r.fold, "centre": r.centre, "class": self.class_name}
            if len(r.target_scores):
                rows.append(row | {"metric": "sensitivity", "value": float((r.target_scores > 0).mean())})
            rows.append(row | {"metric": "false_positives", "value": float(r.outcome.count("fp"))})
        info = {"task": "aneurysm detection", "classes": [self.class_name], "metrics": list(DETECTION_METRICS)}
        summary = write_evaluation(self.output_dir, rows, cases, info | self._cost(cases), self.confidence)
        logger.info(
            f"evaluated {len(cases)} cases ({info['task']}, all candidates) -> {self.output_dir}\n"
            + summary_markdown(summary, "all", DETECTION_METRICS)
        )


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


def _samples(batch: Any) -> list[Any]:
    """The items of a batch: a dict, or a (nested, ``no_collation``) list of them."""
    if isinstance(batch, list | tuple):
        return [x for b in batch for x in _samples(b)]
    return [batch]


def _predictions(output: Any) -> list[Any]:
    """Per-item predictions of an engine output: ``{"pred": [per item]}`` (not decollated), a list of per-item
    outputs holding ``pred``, or one output."""
    if isinstance(output, Mapping):
        pred = output.get("pred", output)
        return list(pred) if isinstance(pred, list | tuple) else [pred]
    return [o["pred"] if isinstance(o, Mapping) and "pred" in o else o for o in output]


def _affine(image: Any) -> np.ndarray:
    """The 4x4 voxel-to-world affine of a (possibly batched) MetaTensor."""
    a = froc._numpy(getattr(image, "affine", np.eye(4)))
    return a[0] if a.ndim == 3 else a
