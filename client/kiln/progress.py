"""A live bar per epoch on stderr while a job trains, from its event stream."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from kiln.results import Job

if TYPE_CHECKING:
    from kiln.client import Client

STDERR = Console(stderr=True)


def figures(metrics: dict[str, float]) -> str:
    """`loss 0.31 val_loss 0.35 accuracy 0.91 …`: the losses first, then the rest, as Keras prints them."""
    order = sorted(metrics, key=lambda k: (k not in ("loss", "val_loss"), k.startswith("val_"), k))
    return " ".join(f"{k} {metrics[k]:.4g}" for k in order if k != "learning_rate" and isinstance(metrics[k], int | float))


def follow(job: Job, client: Client, console: Console = STDERR) -> Job:
    """Follow `job` to its end with a bar: epoch i/N, the last epoch's figures, elapsed and ETA. The finished Job."""
    columns = (TextColumn("[bold]{task.fields[model]}"), TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
               TextColumn("{task.fields[figures]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("train", total=job.epochs or None, model=job.model_name, figures=job.state)
        for name, data in job.events():
            if name == "epoch":
                progress.update(task, completed=data["epoch"], figures=figures(data.get("metrics") or {"loss": data["loss"]}))
            elif name == "state":
                progress.update(task, figures=str(data["state"]))
            elif name == "warning":
                progress.console.print(f"[yellow]warning[/] epoch {data.get('epoch')}: {data.get('message')}")
            elif name == "end":
                return Job.of(data, client)
    return job.refresh()
