"""The command line: each command parses its arguments, calls the library, and turns user errors into
one-line messages with a non-zero exit."""
from __future__ import annotations

import json
import shlex
import sys
from functools import wraps
from pathlib import Path

import click

from gra_stream.errors import UserError


def user_errors(fn):
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise click.ClickException(str(e)) from None
    return wrapper


@click.group()
@click.version_option(package_name="gra-stream")
def main():
    """Synthesize training data with a committee of small language models (the GRA method)."""


@main.command()
@click.argument("seeds", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--run-dir", required=True, type=click.Path(path_type=Path),
              help="Folder that holds the run's tables: a new or empty one, or an earlier run's to resume or extend it.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="TOML config (default: configs/default.toml).")
@click.option("--backend", type=click.Choice(["fake", "vllm"]), help="Serve every pool model with this backend.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("-v", "--verbose", is_flag=True, help="Show what the libraries print (else in DIR/logs/library.log).")
@click.option("--dry-run", is_flag=True, help="Check config, API key variables, field mapping and SQL filters; show the first prompts and what the run would do (the plan of a config change, or the calls and tokens of a new run at most); write nothing.")
@click.option("--executor", type=click.Choice(["auto", "local", "processes", "ray"]), default="auto", show_default=True,
              help="Run batches in this process, in worker processes on this machine ([processes] workers), "
                   "or on a Ray cluster (pip install 'gra-stream[ray]'). auto: worker processes where the machine "
                   "has more than one core and no model runs in an in-process vLLM engine, else this process.")
@click.option("--ray-address", default="", help="Ray cluster to join (default: $RAY_ADDRESS, else a local one).")
@click.option("--max-samples", type=click.IntRange(min=1), default=None,
              help="Stop after the wave that brings the kept samples to N; the same command without it goes on.")
@user_errors
def run(seeds, run_dir, config_path, backend, quiet, verbose, dry_run, executor, ray_address, max_samples):
    """Run the GRA pipeline over SEEDS (JSONL, JSON, Parquet, CSV, TSV, Arrow, Feather; .gz/.zst/.bz2/.xz, files,
    folders or glob patterns) into --run-dir.

    Re-running the same command resumes an interrupted run; adding seed files processes only the new seeds.
    """
    from gra_stream.config import load_config
    from gra_stream.library_log import library_output_to
    from gra_stream.progress import Progress
    from gra_stream.runner import Interrupted, check_inputs, run_pipeline
    from gra_stream.status import collect_status, format_status
    from gra_stream.store import Store, check_run_dir

    if ray_address and executor != "ray":
        raise click.UsageError("--ray-address needs --executor ray")
    config = load_config(config_path, backend=backend)
    check_run_dir(run_dir)
    if dry_run:
        from gra_stream.guide import dry_run as check

        click.echo(check(list(seeds), config, run_dir))
        return
    check_inputs(list(seeds), config)  # a user error is one line here, before any log file is made
    log = None if verbose else run_dir / "logs" / "library.log"
    with library_output_to(log) as (out, err):
        progress = Progress(quiet=quiet, stream=err)
        try:
            summary = run_pipeline(list(seeds), run_dir, config, progress=progress, executor=executor,
                                   ray_address=ray_address, max_samples=max_samples or 0)
        except Interrupted:
            click.echo("stopped at a batch boundary; run the same command again to resume", file=err)
            sys.exit(130)
        if summary.stopped_at is not None:
            progress.say(f"stopped with {summary.stopped_at:,} samples kept (--max-samples {max_samples}); the same "
                         f"command without --max-samples goes on with the next wave", even_if_quiet=True)
        elif not summary.did_work:  # the status table would read every table again: say where it is instead
            done = ("up to date: this config's tables came back from where they were kept" if summary.switched
                    else "nothing to do: every stage is up to date")
            progress.say(f"{done} (no LLM calls made); `gra-stream status {run_dir}` shows the run")
        elif not quiet:
            click.echo(format_status(collect_status(Store(run_dir))), file=out)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("query", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@user_errors
def sql(run_dir, query, fmt):
    """Query a run's tables with SQL (read-only; safe while a run is writing). Without QUERY: list the tables."""
    from gra_stream.query import list_tables, open_run, read_run, run_query, write_rows

    store = open_run(run_dir)
    columns, chunks = run_query(store, query) if query else read_run(store, lambda: list_tables(store))
    write_rows(columns, chunks, fmt, sys.stdout)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def status(run_dir, as_json):
    """Show the funnel of a run: rows per stage, rejections by reason, LLM calls and tokens per role."""
    from gra_stream.query import open_run, read_run
    from gra_stream.status import collect_status, format_status

    store = open_run(run_dir)
    data = read_run(store, lambda: collect_status(store))  # a run may be writing: see Store.read
    click.echo(json.dumps(data, indent=2) if as_json else format_status(data))


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--version", "labels", multiple=True, help="Remove only this kept version (v1, v2, ...); repeatable.")
@user_errors
def prune(run_dir, labels):
    """Remove the results of earlier configs kept in RUN_DIR/versions (all of them by default)."""
    from gra_stream.kept_versions import prune as remove
    from gra_stream.query import open_run
    from gra_stream.store import RunLock

    store = open_run(run_dir)
    unknown = sorted(set(labels) - {k.label for k in store.kept()})
    if unknown:
        raise UserError(f"no kept version {', '.join(unknown)} in {run_dir} (gra-stream status {run_dir} lists them)")
    with RunLock(store.root):
        removed = remove(store, list(labels) or None)
    for label, size in removed:
        click.echo(f"removed {label} ({size / 2**20:.1f} MiB)")
    if not removed:
        click.echo("nothing to remove: no earlier config's results are kept")


@main.command()
@click.argument("labelled", required=False, type=click.Path(path_type=Path))
@click.option("--make-set", "make_set", type=click.Path(path_type=Path),
              help="Write a labelled set (good and corrupted samples) to this JSONL file instead.")
@click.option("--from", "sources", multiple=True, type=click.Path(path_type=Path),
              help="Seed files for --make-set (default: 500 GSM8K train problems shipped with gra-stream).")
@click.option("--size", default=60, show_default=True, help="Samples in the labelled set (half corrupted).")
@click.option("--config", "config_path", type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["fake", "vllm"]))
@click.option("--json", "as_json", is_flag=True)
@click.option("-v", "--verbose", is_flag=True, help="Show what the libraries print (else in LABELLED.log).")
@user_errors
def calibrate(labelled, make_set, sources, size, config_path, backend, as_json, verbose):
    """Measure how well the review committee tells good samples from corrupted ones.

    gra-stream calibrate --make-set labelled.jsonl     then     gra-stream calibrate labelled.jsonl
    """
    from gra_stream import calibrate as cal
    from gra_stream.config import load_config
    from gra_stream.ingest import check_seed_files
    from gra_stream.library_log import library_output_to
    from gra_stream.resources import calibration_source

    if make_set:
        paths = list(sources) or [calibration_source()]
        kinds = cal.make_labelled_set(check_seed_files(paths), make_set, size=size)
        click.echo(f"wrote {sum(kinds.values())} labelled samples to {make_set}: " +
                   ", ".join(f"{k} {v}" for k, v in kinds.items()))
        return
    if labelled is None:
        raise click.UsageError("give a LABELLED set, or --make-set FILE to create one")
    check_seed_files([labelled])
    config = load_config(config_path, backend=backend)
    with library_output_to(None if verbose else labelled.with_name(labelled.name + ".log")) as (out, _):
        report = cal.calibrate(labelled, config)
        click.echo(json.dumps(report, indent=2) if as_json else cal.format_report(report), file=out)


@main.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet", "alpaca", "sharegpt", "messages", "hf"]),
              default=None, help="Default: from the output's name (.jsonl, .parquet, .json for Alpaca). "
              "messages: OpenAI's and TRL's chat format.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="File (or folder for hf).")
@click.option("--metadata", is_flag=True, help="Include score, domain, keywords, summary and provenance.")
@user_errors
def export_command(run_dir, fmt, output, metadata):
    """Export the kept samples of a run."""
    from gra_stream.export import export
    from gra_stream.query import open_run, read_run

    store = open_run(run_dir)
    n, fmt = read_run(store, lambda: export(store, fmt, output, metadata=metadata))
    click.echo(f"wrote {n} sample{'' if n == 1 else 's'} to {output} ({fmt})")
    if not n:
        click.echo(f"no sample is kept in {run_dir}: `gra-stream status {run_dir}` counts the rejections by reason, "
                   f"and the rejections table says why each was dropped")


@main.command()
@click.argument("seeds", type=click.Path(path_type=Path))
@click.option("-o", "--output", default="gra-stream.toml", show_default=True, type=click.Path(path_type=Path))
@user_errors
def init(seeds, output):
    """Write a commented config for SEEDS, with its fields mapped."""
    from gra_stream.config import load_config
    from gra_stream.guide import init_config
    from gra_stream.seed_paths import left_out_splits

    guess = init_config(seeds, output, load_config(None))
    click.echo(f"wrote {output} ({guess.mapping.describe()})")
    for note in guess.unsure:
        click.echo(f"  check: {note}")
    for note in left_out_splits([seeds]):
        click.echo(note)
    click.echo(f"then: gra-stream run {shlex.quote(str(seeds))} --run-dir runs/NAME --config {shlex.quote(str(output))}")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The HTML file to write.")
@user_errors
def report(run_dir, output):
    """Write a self-contained HTML report of a run (charts, no network needed)."""
    from gra_stream.query import open_run, read_run
    from gra_stream.report import write_report

    store = open_run(run_dir)
    read_run(store, lambda: write_report(store, output))
    click.echo(f"wrote {output}")
