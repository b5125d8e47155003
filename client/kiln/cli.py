"""`kiln`: data on stdout, status on stderr, `-o json` for machines, a non-zero exit on any error.

`kiln train SPEC --follow` exits 0 when the job succeeded, 1 when it failed and 2 when it was cancelled.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from kiln.client import Client
from kiln.errors import KilnError
from kiln.plot import plot_job
from kiln.progress import STDERR, figures, follow
from kiln.results import Job

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Train and serve neural networks on a Kiln server."
)
OUT = Console(soft_wrap=True)
EXIT = {"succeeded": 0, "failed": 1, "cancelled": 2}
Output = Annotated[str, typer.Option("-o", "--output", help="'json' for machine-readable output")]


def _client() -> Client:
    return Client()


def _emit(data: Any, output: str, table: Table | str | None = None) -> None:
    """Data to stdout: JSON with `-o json`, else the table (or text) given."""
    if output == "json":
        sys.stdout.write(json.dumps(data, default=str) + "\n")
    elif table is not None:
        OUT.print(table)


def _table(*columns: str) -> Table:
    table = Table(*columns, box=None, pad_edge=False, header_style="bold")
    return table


def _job_row(table: Table, job: Job) -> None:
    epochs = f"{job.epoch}/{job.epochs}" if job.epochs else ""
    table.add_row(job.id, job.model_name, job.state, epochs, str(job.version or ""), str(job.raw.get("created_at", ""))[:19])


def _summary(job: Job, client: Client, output: str) -> None:
    """The end of a job: its state, test metrics and version (stdout), or why it failed (stderr)."""
    version = client.version(job.model_name, job.version).raw if job.version else None
    if output == "json":
        _emit({"job": job.raw, "version": version}, output)
        return
    if job.state != "succeeded":
        STDERR.print(f"[red]job {job.id} {job.state}[/]: {job.error or ''}")
        return
    table = _table("model", "version", "test metrics")
    table.add_row(job.model_name, str(job.version), figures((version or {}).get("metrics", {})))
    OUT.print(table)


@app.command()
def train(spec: Path, follow_: Annotated[bool, typer.Option("--follow", "-f", help="a live bar until it ends")] = False,
          name: Annotated[str | None, typer.Option("--name", help="the model_name to register under")] = None,
          output: Output = "table") -> None:  # fmt: skip
    """Submit a job from a JSON spec; with --follow, watch it to its end (exit 0 succeeded, 1 failed, 2 cancelled)."""
    client = _client()
    job = client.train(spec, name=name)
    STDERR.print(f"job {job.id} queued: {job.model_name}")
    if not follow_:
        _emit(job.raw, output, job.id)
        return
    try:
        done = follow(job, client)
    except KeyboardInterrupt:
        if sys.stdin.isatty() and typer.confirm(f"\ncancel job {job.id}? (no: stop watching, it goes on)", default=False, err=True):
            done = client.cancel(job.id).wait()
            STDERR.print(f"job {job.id} {done.state}")
            raise typer.Exit(EXIT.get(done.state, 2)) from None
        STDERR.print(f"stopped watching; job {job.id} goes on: kiln logs {job.id} -f")
        raise typer.Exit(130) from None
    _summary(done, client, output)
    raise typer.Exit(EXIT.get(done.state, 1))


@app.command()
def jobs(state: Annotated[str | None, typer.Option("--state", help="queued, running, succeeded, failed or cancelled")] = None,
         output: Output = "table") -> None:  # fmt: skip
    """Jobs, newest first."""
    found = _client().jobs(state=state)
    table = _table("id", "model", "state", "epoch", "version", "created")
    for job in found:
        _job_row(table, job)
    _emit([j.raw for j in found], output, table)


@app.command()
def job(job_id: str, output: Output = "table") -> None:
    """One job: its state, epochs and version."""
    found = _client().job(job_id)
    table = _table("epoch", "figures")
    for epoch in found.history:
        table.add_row(str(epoch["epoch"]), figures(epoch.get("metrics") or {"loss": epoch["loss"]}))
    STDERR.print(f"job {found.id} {found.state} ({found.model_name}, epoch {found.epoch}/{found.epochs})"
                 + (f": {found.error}" if found.error else ""))  # fmt: skip
    _emit(found.raw, output, table)


@app.command()
def cancel(job_id: str, output: Output = "table") -> None:
    """Cancel a job: a queued one at once, a running one at its next batch."""
    found = _client().cancel(job_id)
    _emit(found.raw, output, f"{found.id} {'cancel asked' if found.state == 'running' else found.state}")


@app.command()
def logs(job_id: str, follow_: Annotated[bool, typer.Option("-f", "--follow", help="until the job ends")] = False,
         output: Output = "table") -> None:  # fmt: skip
    """A job's events as lines: every epoch so far, or with -f the live stream to its end."""
    client = _client()
    events = client.job(job_id).events() if follow_ else (("epoch", e) for e in client.job(job_id).history)
    for name, data in events:
        if output == "json":
            _emit({"event": name, "data": data}, output)
        elif name == "epoch":
            OUT.print(f"epoch {data['epoch']} {figures(data.get('metrics') or {'loss': data['loss']})}")
        elif name in ("state", "warning"):
            OUT.print(f"{name} {data.get('state') or data.get('message')}" + (f": {data['error']}" if data.get("error") else ""))


@app.command()
def models(output: Output = "table") -> None:
    """Registered models."""
    found = _client().models()
    table = _table("model", "versions", "latest", "aliases")
    for m in found:
        aliases = " ".join(f"{a}={v}" for a, v in (m.get("aliases") or {}).items())
        table.add_row(m["name"], str(m["version_count"]), str(m["latest_version"] or ""), aliases)
    _emit(found, output, table)


@app.command()
def versions(name: str, output: Output = "table") -> None:
    """A model's versions with their test metrics."""
    found = _client().versions(name)
    table = _table("version", "task", "test metrics", "aliases")
    for v in found:
        table.add_row(str(v.version), v.task or "", figures(v.metrics), " ".join(v.aliases))
    _emit([v.raw for v in found], output, table)


@app.command()
def alias(
    name: str, alias_: Annotated[str, typer.Argument(metavar="ALIAS")],
    versions: Annotated[list[str], typer.Argument(metavar="VERSION[=WEIGHT]...", help="one version, or several with relative "
                                                  "weights to split requests: 3=90 4=10")],
    mirror: Annotated[int | None, typer.Option(help="a version that gets a copy of each request")] = None, output: Output = "table",
) -> None:  # fmt: skip
    """Point an alias (production, staging, …) at a version, or split it between versions by weight."""
    try:
        pairs = [(int(v), int(w)) for v, _, w in (item.partition("=") for item in versions if "=" in item)]
        plain = [int(item) for item in versions if "=" not in item]
    except ValueError:
        raise typer.BadParameter("expected VERSION or VERSION=WEIGHT, e.g. 3=90 4=10") from None
    if plain and (pairs or len(plain) > 1):
        raise typer.BadParameter("name one version, or give every version a weight: 3=90 4=10")
    found = _client().set_alias(name, alias_, plain[0] if plain else None, weights=None if plain else dict(pairs), mirror=mirror)
    split = ", ".join(f"version {w['version']} ({w['share']:.0%})" for w in found.raw.get("rollout", {}).get("versions", []))
    shown = split if pairs else f"version {found.version}"
    _emit(found.raw, output, f"{name}@{alias_} -> {shown}" + (f"; mirrored to version {mirror}" if mirror else ""))


@app.command()
def download(
    name: str, version: int, output: Annotated[str, typer.Option("-o", "--output", help="the file to write")] = "model.onnx"
) -> None:
    """A version's ONNX file."""
    path = _client().download(name, version, output)
    STDERR.print(f"wrote {path} ({path.stat().st_size:,} bytes)")


def _target(ref: str) -> tuple[str, int | None, str | None]:
    """NAME, NAME:VERSION or NAME@ALIAS."""
    if "@" in ref:
        name, alias_ = ref.split("@", 1)
        return name, None, alias_
    if ":" in ref:
        name, number = ref.rsplit(":", 1)
        if not number.isdigit():
            raise KilnError(f"'{ref}': expected NAME, NAME:VERSION or NAME@ALIAS", code="invalid_argument")
        return name, int(number), None
    return ref, None, None


@app.command()
def predict(ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION|@ALIAS]")],
            input_: Annotated[str, typer.Option("-i", "--input", help="a .npy, .csv or image file, or some text")],
            output: Output = "table") -> None:  # fmt: skip
    """Predict: label names and probabilities as a table (a regressor's values, or a model's outputs, as they are)."""
    name, version, alias_ = _target(ref)
    result = _client().predict(name, input_, version=version, alias=alias_)
    data = {"model": result.model, "version": result.version, "labels": result.labels, "outputs": result.outputs.tolist()}
    classes = result.class_names or []
    outputs = result.outputs.reshape(len(result.outputs), -1)
    if result.labels and classes and outputs.shape[1] == 1 and len(classes) == 2:  # one sigmoid: P(the second class)
        outputs = np.concatenate([1 - outputs, outputs], axis=1)
    if result.labels and classes and outputs.shape[1] == len(classes):
        table = _table("row", "label", "probability", *(classes if len(classes) <= 10 else []))
        for i, (label, row) in enumerate(zip(result.labels, outputs, strict=True)):
            shown = [f"{p:.3f}" for p in row] if len(classes) <= 10 else []
            table.add_row(str(i), label, f"{row[classes.index(label)]:.3f}", *shown)
    else:
        table = _table("row", "output")
        for i, row in enumerate(result.outputs):
            table.add_row(str(i), np.array2string(np.asarray(row), precision=4, separator=", "))
    _emit(data, output, table)


@app.command()
def generate(name: str, n: Annotated[int, typer.Option("-n", help="how many samples")] = 16,
             seed: Annotated[int | None, typer.Option("--seed")] = None,
             output: Annotated[str, typer.Option("-o", "--output", help="a .png for the grid, or 'json'")] = "json") -> None:  # fmt: skip
    """A GAN generator's samples: a PNG grid with -o grid.png, else the arrays as JSON."""
    client = _client()
    if output != "json":
        Path(output).write_bytes(client.generate(name, n=n, seed=seed, png=True))  # type: ignore[arg-type]
        STDERR.print(f"wrote {output}")
        return
    samples = client.generate(name, n=n, seed=seed)
    _emit({"model": name, "outputs": np.asarray(samples).tolist()}, "json")


@app.command()
def detect(
    name: str, input_: Annotated[str, typer.Option("-i", "--input", help="a .npy or .csv of rows")], output: Output = "table"
) -> None:
    """An autoencoder's anomaly scores, and which rows are over its threshold."""
    ref, version, alias_ = _target(name)
    found = _client().detect(ref, input_, version=version, alias=alias_)
    table = _table("row", "score", "anomaly")
    for i, (score, anomaly) in enumerate(zip(found["scores"], found["anomalies"], strict=True)):
        table.add_row(str(i), f"{score:.5g}", "yes" if anomaly else "")
    _emit(found, output, table)


@app.command()
def upload(path: Path, target: Annotated[str | None, typer.Option("--target", help="the label column")] = None,
           format_: Annotated[str | None, typer.Option("--format", help="csv, text_csv, npz or image_zip")] = None,
           name: Annotated[str | None, typer.Option("--name")] = None,
           text_column: Annotated[str | None, typer.Option("--text-column")] = None,
           image_size: Annotated[str | None, typer.Option("--image-size", help="height,width of an image ZIP")] = None,
           output: Output = "table") -> None:  # fmt: skip
    """Upload a dataset, streamed from disk with a progress bar."""
    options = {k: v for k, v in {"target": target, "format": format_, "name": name, "text_column": text_column,
                                 "image_size": image_size}.items() if v is not None}  # fmt: skip
    with Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=STDERR) as progress:
        task = progress.add_task("upload", total=path.stat().st_size)
        dataset = _client().upload(path, progress=lambda sent, total: progress.update(task, completed=sent), **options)
    STDERR.print(f"dataset {dataset.id}: {dataset.n_samples} samples of {dataset.feature_shape}")
    _emit(dataset.raw, output, dataset.id)


@app.command()
def plot(job_id: str, output: Annotated[str | None, typer.Option("-o", "--output", help="a .png to write, or 'json'")] = None) -> None:
    """A job's training and validation curves: in the terminal, or as a PNG with -o curves.png."""
    found = _client().job(job_id)
    if output == "json":
        _emit(found.history, "json")
        return
    plot_job(found, output)
    if output:
        STDERR.print(f"wrote {output}")


@app.command()
def study(spec: Path, follow_: Annotated[bool, typer.Option("--follow", "-f", help="each trial as it moves, to the end")] = False,
          output: Output = "table") -> None:  # fmt: skip
    """Start a hyperparameter study; with --follow, watch its trials (exit 0 when it succeeded)."""
    client = _client()
    started = client.study(spec)
    STDERR.print(f"study {started.id} running: {len(started.trials)} trial(s) started")
    if not follow_:
        _emit(started.raw, output, started.id)
        return
    for name, data in client.http.events(f"/v1/studies/{started.id}/events"):
        if name == "trial" and output != "json":
            STDERR.print(
                f"trial {data['number']} {data['state']}" + (f" value {data['value']:.4g}" if data.get("value") is not None else "")
            )
        elif name == "end":
            best = data.get("best") or {}
            _emit(
                data,
                output,
                f"study {data['state']}: best trial {best.get('number')} value {best.get('value')} version {best.get('version')}",
            )
            raise typer.Exit(0 if data["state"] == "succeeded" else 1)


def main() -> None:
    try:
        app()
    except KilnError as err:
        STDERR.print(f"[red]error[/]: {err}")
        sys.exit(1)
