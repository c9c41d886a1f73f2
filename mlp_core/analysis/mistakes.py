"""Study a trained run's mistakes on the test set: which digits, confused with what, and how surely.

`analyze_run(run_dir)` restores the run's model, predicts the 10,000 test images, and writes
`<run>/analysis/`: figures, `analysis.json` and a `report.md` a student can read, plus the same
figures in TensorBoard under `<run>/analysis`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from mlp_core.core.data import NUM_CLASSES, Split, load_mnist
from mlp_core.core.errors import UserError
from mlp_core.evaluation.figures import confusion_figure, digit_grid, figure_to_png
from mlp_core.evaluation.predictions import confusion_matrix, mistake_titles, predict_probabilities
from mlp_core.training.loop import load_trained_model
from mlp_core.training.rundir import write_json

GRID = 25
ANALYSIS = "analysis"
# Why pairs of digits get confused: what their strokes have in common.
LOOKALIKES = {
    frozenset(
        {4, 9}
    ): "a 4 with a closed top and a 9 with a straight stem differ only in one short stroke",
    frozenset({3, 5}): "3 and 5 share the lower bowl; only the short top stroke tells them apart",
    frozenset(
        {3, 8}
    ): "a 3 whose ends curl back towards the middle looks like an 8 with open loops",
    frozenset({5, 8}): "a 5 written in one closed stroke forms the loops of an 8",
    frozenset(
        {2, 7}
    ): "a 7 with a curved stem or a crossbar, and a 2 with a flat, short base, look alike",
    frozenset({7, 9}): "a 9 with a small or open loop is a 7 with a hook",
    frozenset({5, 6}): "a 6 with an open loop and a 5 with a round bowl differ only at the top",
    frozenset({0, 6}): "a 6 with a long top stroke that closes is an oval, like a 0",
    frozenset({1, 7}): "a 1 with a serif at the top is a 7 with a short bar",
    frozenset({2, 3}): "2 and 3 share the top arc; only the lower half differs",
    frozenset({8, 9}): "a 9 whose tail curls back is an 8 with a small lower loop",
    frozenset({2, 8}): "a 2 with a looped bottom resembles an 8",
    frozenset({4, 6}): "a 4 with a curved, closed stroke resembles a 6",
}


def summarize(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """All the numbers of the analysis, from true labels and predicted probabilities."""
    predicted = probabilities.argmax(1)
    confidence = probabilities.max(1)
    wrong = np.flatnonzero(predicted != labels)
    right = np.flatnonzero(predicted == labels)
    counts = confusion_matrix(labels, predicted)
    totals = counts.sum(1)
    errors = totals - np.diag(counts)
    rates = errors / np.maximum(totals, 1)
    pairs = [
        (int(t), int(p), int(counts[t, p]))
        for t in range(NUM_CLASSES)
        for p in range(NUM_CLASSES)
        if t != p and counts[t, p]
    ]
    pairs.sort(key=lambda pair: (-pair[2], pair[0], pair[1]))
    return {
        "test_images": int(len(labels)),
        "misclassified_count": int(len(wrong)),
        "accuracy": float(1 - len(wrong) / max(len(labels), 1)),
        "per_digit_count": totals.tolist(),
        "per_digit_errors": errors.tolist(),
        "per_digit_error_rate": rates.tolist(),
        "hardest_digit": int(rates.argmax()),
        "easiest_digit": int(rates.argmin()),
        "top_confusions": [{"true": t, "predicted": p, "count": c} for t, p, c in pairs[:10]],
        "confusion_matrix": counts.tolist(),
        "first_misclassified": wrong[:GRID].tolist(),
        "confident_mistakes": wrong[np.argsort(-confidence[wrong], kind="stable")][:GRID].tolist(),
        "least_confident_correct": right[np.argsort(confidence[right], kind="stable")][
            :GRID
        ].tolist(),
    }


def make_figures(test: Split, probabilities: np.ndarray, numbers: dict) -> dict[str, plt.Figure]:
    """The analysis figures, by file name."""
    predicted, confidence = probabilities.argmax(1), probabilities.max(1)
    first = np.array(numbers["first_misclassified"], dtype=np.int64)
    sure = np.array(numbers["confident_mistakes"], dtype=np.int64)
    unsure = np.array(numbers["least_confident_correct"], dtype=np.int64)
    return {
        "misclassified.png": digit_grid(test.images[first], mistake_titles(test, predicted, first)),
        "confident_mistakes.png": digit_grid(
            test.images[sure],
            [f"{predicted[i]} ({confidence[i]:.2f}), true {test.labels[i]}" for i in sure],
        ),
        "least_confident_correct.png": digit_grid(
            test.images[unsure], [f"{test.labels[i]} ({confidence[i]:.2f})" for i in unsure]
        ),
        "confusion_matrix.png": confusion_figure(
            np.array(numbers["confusion_matrix"]), "test set: true vs predicted"
        ),
        "per_digit_errors.png": per_digit_figure(numbers),
    }


def per_digit_figure(numbers: dict) -> plt.Figure:
    """Errors per digit (bars) with the error rate written above each."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    digits = np.arange(NUM_CLASSES)
    bars = ax.bar(
        digits,
        numbers["per_digit_errors"],
        color=["tab:red" if d == numbers["hardest_digit"] else "tab:blue" for d in digits],
    )
    for bar, rate in zip(bars, numbers["per_digit_error_rate"]):
        ax.annotate(
            f"{100 * rate:.1f}%",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set(
        xticks=digits,
        xlabel="true digit",
        ylabel="misclassified test images",
        title="errors per digit (error rate above each bar)",
    )
    ax.margins(y=0.15)
    fig.tight_layout()
    return fig


def analyze_run(run_dir: str | Path) -> dict:
    """Restore the run's model, predict the test set, write `<run>/analysis/`; return the numbers."""
    run_dir = Path(run_dir)
    config, model = load_trained_model(run_dir)
    test = load_mnist(config.data_dir).test
    probabilities = predict_probabilities(model, test.images, config.normalize)
    numbers = {"run_dir": str(run_dir), **summarize(test.labels, probabilities)}
    out = run_dir / ANALYSIS
    pngs = {
        name: figure_to_png(fig) for name, fig in make_figures(test, probabilities, numbers).items()
    }
    try:
        out.mkdir(exist_ok=True)
        for name, data in pngs.items():
            (out / name).write_bytes(data)
        write_json(out / "analysis.json", numbers)
        (out / "report.md").write_text(report(numbers))
    except OSError as err:
        raise UserError(f"{out}: cannot write the analysis: {err.strerror}") from None
    with tf.summary.create_file_writer(str(out)).as_default(step=0):
        for name, data in pngs.items():
            tf.summary.image(name.removesuffix(".png"), tf.image.decode_png(data)[tf.newaxis])
    return numbers


def why_hard(numbers: dict) -> str:
    """A sentence on the hardest digit, from its commonest confusion."""
    digit = numbers["hardest_digit"]
    mistakes = [c for c in numbers["top_confusions"] if c["true"] == digit]
    if not mistakes:
        return f"Digit {digit} has the highest error rate."
    worst = mistakes[0]
    reason = LOOKALIKES.get(
        frozenset({digit, worst["predicted"]}),
        "the two shapes share most of their strokes when written quickly",
    )
    return (
        f"Its commonest mistake is being read as {worst['predicted']} ({worst['count']} times): "
        f"{reason}."
    )


def report(numbers: dict) -> str:
    """report.md: the findings in words, with the tables and figures."""
    hardest, rates = numbers["hardest_digit"], numbers["per_digit_error_rate"]
    rows = "\n".join(
        f"| {d} | {numbers['per_digit_count'][d]} | {numbers['per_digit_errors'][d]} | "
        f"{100 * rates[d]:.2f} % |"
        for d in range(NUM_CLASSES)
    )
    pairs = "\n".join(
        f"| {c['true']} | {c['predicted']} | {c['count']} |" for c in numbers["top_confusions"]
    )
    return f"""# Mistakes of the model in `{numbers["run_dir"]}`

The model misclassifies **{numbers["misclassified_count"]} of {numbers["test_images"]:,}** test
images (accuracy {100 * numbers["accuracy"]:.2f} %).

## The hardest digit: {hardest}

Digit **{hardest}** has the highest error rate, {100 * rates[hardest]:.2f} %
({numbers["per_digit_errors"][hardest]} of {numbers["per_digit_count"][hardest]}); the easiest is
{numbers["easiest_digit"]} ({100 * rates[numbers["easiest_digit"]]:.2f} %). {why_hard(numbers)}

| digit | test images | errors | error rate |
| --- | --- | --- | --- |
{rows}

![errors per digit](per_digit_errors.png)

## What gets confused with what

| true | predicted | count |
| --- | --- | --- |
{pairs}

![confusion matrix](confusion_matrix.png)

## The mistakes themselves

The first 25 misclassified test images, with predicted and true label:

![first 25 misclassified](misclassified.png)

The 25 mistakes the model was most sure of: predicted digit (its probability), then the true label. Look here for digits a
human would also have to guess: a label the writer meant but the strokes do not show.

![confident mistakes](confident_mistakes.png)

The 25 correct answers the model was least sure of:

![least confident correct answers](least_confident_correct.png)
"""
