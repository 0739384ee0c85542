"""`llavac classify`: label new (image, text) pairs with a trained adapter, in one process or on Spark.

This module is the one place that checks rows, builds the model's records, runs the classifier and
shapes the result rows; the single-process command (`classify_to_jsonl`) and the Spark job
(`llavac.classify_spark`) both call it, so for the same rows, model and precision they write the
same labels and probabilities. A row that cannot be classified (missing or unreadable image, empty
or over-long text, a failure inside the model on that row alone) becomes a row with its `error`,
``"<reason>: <detail>"`` with one of MVSA's drop reasons, never a failed run.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llavac.files import write_json
from llavac.model.adapter_card import AdapterCard, read_card
from llavac.new_pairs import InputError, error_reason, problem, turned_images

log = logging.getLogger(__name__)

CHECKOUT = Path(__file__).resolve().parents[2]
"""The checkout this package runs from (``src/llavac/`` sits two levels below it) in an editable install."""
DEFAULT_ADAPTER = Path("artifacts/adapters/1")
MODEL_ERROR = "model_error"
"""The reason of a row on which the model itself failed (the rest of its batch is classified)."""
_warned_synthetic: set[Path] = set()


@dataclass(frozen=True)
class ClassifySettings:
    """How pairs are classified; the same for every row of a run, on the driver and on every worker."""

    adapter: Path
    batch_size: int = 32
    """Pairs per forward pass."""
    max_new_tokens: int = 16
    precision: str | None = None
    """fp32 | bf16 | fp16; None: fp16 on a GPU (as LLaVA evaluates), fp32 on a CPU, decided where the model loads."""
    mode: str = "score"
    min_confidence: float = 0.0


def default_adapter(cwd: Path | None = None) -> Path:
    """`artifacts/adapters/1` of the checkout: the one around `cwd` (a folder holding dvc.yaml), else
    the one this package is installed from, so the command works from any folder."""
    cwd = Path.cwd() if cwd is None else cwd
    for root in (cwd, *cwd.parents, CHECKOUT):
        if (root / "dvc.yaml").is_file() and (root / DEFAULT_ADAPTER).is_dir():
            return root / DEFAULT_ADAPTER
    return CHECKOUT / DEFAULT_ADAPTER  # absent: read_card's error names the stage that writes it


def open_adapter(adapter: Path) -> AdapterCard:
    """The adapter's card, its base model checked; warns once per adapter when it was trained on the
    embedded synthetic sample (its labels then say nothing about real tweets)."""
    card = read_card(adapter)
    card.base_for(adapter)  # a missing base folder is reported before any work
    if card.synthetic_sample and adapter.resolve() not in _warned_synthetic:
        _warned_synthetic.add(adapter.resolve())
        log.warning(
            "warning: the adapter %s was trained on the embedded SYNTHETIC sample, not on MVSA-Single: its labels "
            "only show that the pipeline works; train on real data (docs/classify.md) before trusting them", adapter)
    return card


def check_rows(rows: Sequence[dict[str, Any]], image_folder: Path) -> dict[int, str | None]:
    """Each row's `error` (None when it can be classified), by its `row` number."""
    return {row["row"]: problem(row, image_folder) for row in rows}


class Classifier:
    """The adapter's model loaded once (on `device`, or the GPU if there is one), labelling rows in batches."""

    def __init__(self, settings: ClassifySettings, device: str | None = None) -> None:
        import torch

        from llavac.params import Evaluation
        from llavac.predict import load_classifier

        self.settings = settings
        self.card = read_card(settings.adapter)
        on_gpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        if device and on_gpu:
            torch.cuda.set_device(device)  # load_classifier puts the model on the current CUDA device
        self.precision = settings.precision or ("fp16" if on_gpu else "fp32")
        self.model, self.inputs = load_classifier(settings.adapter, Evaluation(self.precision, merge_lora=True))

    def label(self, rows: Sequence[dict[str, Any]], image_folder: Path, errors: dict[int, str | None]) -> list[dict[str, Any]]:
        """One result per row, in order: the row with its labels and probabilities, or with its `error`."""
        from llavac.predict import abstain_below
        from llavac.prompt import question_record

        usable = [row for row in rows if not errors[row["row"]]]
        records = [question_record(row["id"], row["image"], row["text"], self.card.image_position) for row in usable]
        predicted = iter(self._predict(records, image_folder))
        results = []
        for row in rows:
            result = {"error": errors[row["row"]]} if errors[row["row"]] else next(predicted)
            if "error" not in result:
                result = abstain_below(result, self.settings.min_confidence)
            results.append({**row, **result})
        return results

    def _predict(self, records: list[dict[str, Any]], image_folder: Path) -> list[dict[str, Any]]:
        """Prediction rows for `records`; when a batch fails, its rows are retried one by one so only
        the row that fails gets an error (a tokenizer or model limit hit by one text, say)."""
        from llavac.predict import predict_records

        if not records:
            return []
        s = self.settings
        try:
            return predict_records(self.model, self.inputs, records, image_folder, s.batch_size, s.max_new_tokens, s.mode)
        except (ValueError, RuntimeError, OSError) as error:
            if len(records) == 1:
                log.warning("pair %s: the model failed on it: %s", records[0]["id"], error)
                return [{"error": f"{MODEL_ERROR}: {type(error).__name__}: {error}"}]
            return [result for record in records for result in self._predict([record], image_folder)]


def write_summary(rows: int, errors: Counter[str], seconds: float, out: Path, **more: Any) -> dict[str, Any]:
    """What a run did, written beside `out` (`summary_path`) and returned: rows, classified, errors by
    reason, seconds, rate; `more` adds run-specific counts."""
    classified = rows - sum(errors.values())
    result = {"rows": rows, "classified": classified, "errors": dict(sorted(errors.items())), **more,
              "seconds": round(seconds, 3), "rows_per_second": round(rows / seconds, 3) if seconds else None,
              "output": str(out)}
    write_json(summary_path(out), result)
    return result


def summary_path(out: Path) -> Path:
    """Where a run's summary goes: beside its output, ``<out>.summary.json``."""
    return out.with_name(out.name + ".summary.json")


def report(result: dict[str, Any], out: Path) -> str:
    """The one line a person reads about a run's summary."""
    errors = ", ".join(f"{count} {reason}" for reason, count in result["errors"].items()) or "no errors"
    done = f"; {result['skipped_done']} were already in the output (skipped)" if "skipped_done" in result else ""
    return (f"classified {result['classified']} pairs, skipped {result['rows'] - result['classified']} ({errors}){done}; "
            f"{result['seconds']:.1f} s -> {out} (summary: {summary_path(out)})")


def classify_to_jsonl(settings: ClassifySettings, pairs: tuple[list[dict[str, Any]], Path], out: Path) -> dict[str, Any]:
    """Label every pair in this process; write one JSON line per input pair to `out`; return the summary.

    Every pair is checked before the model loads (an input with no usable pair is refused then). The
    prompt's image position and the base model come from the adapter's card, so the inputs are built
    exactly as in training; the LoRA is merged as in LLaVA's evaluation. Each line carries the label
    probabilities; a label whose probability is below `min_confidence` is withheld.
    """
    from llavac.predict import write_jsonl

    start = time.perf_counter()
    open_adapter(settings.adapter)
    rows, image_folder = pairs
    if not rows:
        raise InputError("the input holds no pairs")
    errors = check_rows(rows, image_folder)
    for number, reason in errors.items():
        if reason:
            log.warning("row %d skipped: %s", number, reason)
    if all(errors.values()):
        raise InputError(f"none of the {len(rows)} pairs can be classified (see the reasons above)")
    for number, orientation in turned_images(rows, image_folder, errors).items():
        log.warning("row %d: its image is stored turned (EXIF orientation %d); classified upright, as a camera "
                    "or browser shows it", number, orientation)
    results = Classifier(settings).label(rows, image_folder, errors)
    write_jsonl(results, out)
    reasons = Counter(error_reason(r["error"]) for r in results if r.get("error"))
    return write_summary(len(rows), reasons, time.perf_counter() - start, out)
