"""A job's curves: in the terminal (plotext), or as a PNG (pillow), training beside validation for each figure."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.results import Job

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def curves(job: Job) -> dict[str, list[float]]:
    """Each per-epoch figure (loss, val_loss, accuracy, …) in epoch order; the learning rate left out."""
    found: dict[str, list[float]] = {}
    for epoch in job.history:
        for name, value in (epoch.get("metrics") or {"loss": epoch["loss"]}).items():
            if name != "learning_rate" and isinstance(value, int | float):
                found.setdefault(name, []).append(float(value))
    return found


def plot_job(job: Job, path: str | None) -> None:
    lines = curves(job)
    if not lines:
        raise KilnError(f"job {job.id} has no finished epoch to plot yet", code="no_data")
    try:
        if path is None:
            _terminal(job, lines)
        else:
            _png(job, lines, path)
    except ImportError as err:
        raise KilnError("plots need the plot extra: pip install 'kiln-client[plot]'", code="missing_extra") from err


def _terminal(job: Job, lines: dict[str, list[float]]) -> None:
    import plotext  # 6.x: a figure object, with signals drawn on it

    figure = plotext.figure
    figure.clear()
    for name, values in lines.items():
        figure.draw(figure.signal(list(range(1, len(values) + 1)), values).label(name).lines())
    figure.title(f"{job.model_name}: job {job.id}")
    figure.label("epoch")
    figure.show(colorless=not sys.stdout.isatty())


def _png(job: Job, lines: dict[str, list[float]], path: str, size: tuple[int, int] = (720, 420)) -> None:
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 60, 150, 30, 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    values = [v for series in lines.values() for v in series]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    epochs = max(len(series) for series in lines.values())
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for i, (name, series) in enumerate(lines.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = [(left + (width - left - right) * (e / max(epochs - 1, 1)), height - bottom - (height - top - bottom) * ((v - low) / span))
                  for e, v in enumerate(series)]  # fmt: skip
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        draw.text((width - right + 10, top + 16 * i), name, fill=colour)
    draw.text((left, 8), f"{job.model_name}: job {job.id}", fill="black")
    draw.text((left, height - bottom + 8), f"epoch 1 .. {epochs}", fill="black")
    draw.text((4, top), f"{high:.3g}", fill="black")
    draw.text((4, height - bottom - 12), f"{low:.3g}", fill="black")
    image.save(path, format="PNG")
