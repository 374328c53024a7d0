"""The ``reloc`` command line. Errors in user input end with a one-line message and exit code 2."""

from __future__ import annotations

import dataclasses
import functools
import json
import signal
import statistics
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import api
from .configs import config_path, shipped_names
from .datasets import DATASETS, load_dataset
from .errors import PipelineError, RelocError
from .eval.batch import SUMMARY_CSV, SUMMARY_MD, RunSummary, evaluate_all, plan_runs, summary_rows
from .eval.metrics import compute_metrics
from .eval.plots import PLOTS_FOLDER
from .eval.report import print_metrics, write_metrics
from .eval.run import evaluate
from .features.quantize import CodecConfig
from .io.map_folder import ARTIFACTS, check_files, open_artifact, read_map_record
from .io.results import GROUND_TRUTH_FILE, read_results, write_results
from .mapping.compact import CompactConfig
from .mapping.submaps import SplitConfig
from .matching.pairwise import PAIR_MATCHERS
from .pipeline.executors import ExecutorConfig, ray_session
from .pipeline.progress import reporting
from .pipeline.registry import PLANNED_STAGES, registered_stages, type_name
from .pipeline.runner import folder_bytes, load_map_pipeline
from .pipeline.spec import SOURCES, load_pipeline, parse_setting, read_yaml
from .viz.scene import load_scene


class UntypedHelp:
    """Mixin for commands whose ``--help`` shows no value type (typer 0.29 prints ``<bool>``)."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class Command(UntypedHelp, typer.core.TyperCommand):
    pass


class Group(UntypedHelp, typer.core.TyperGroup):
    pass


app = typer.Typer(
    cls=Group,
    help="reloc: visual camera relocalization. Map a scene from posed images, then estimate the "
    "6-DoF pose (cam_from_world) of new images against the map.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings are paragraphs: rewrapped to the terminal, not line by line
)
console = Console()


ScoredDataset = Enum("ScoredDataset", {kind: kind for kind, cls in DATASETS.items() if cls.scored}, type=str)

DatasetOption = Annotated[
    ScoredDataset, typer.Option("--dataset", help=f"Layout of --root: {', '.join(k.value for k in ScoredDataset)}.")
]
RootOption = Annotated[Path, typer.Option("--root", help="Scene folder (e.g. 7scenes/chess, Cambridge/KingsCollege).")]
ConfigOption = Annotated[
    Path,
    typer.Option("--config", help=f"Pipeline YAML, or the name of a shipped one ({', '.join(shipped_names())})."),
]


def set_option(help_text: str):
    """A repeatable ``--set NODE.KEY=VALUE`` option with ``help_text``."""
    return Annotated[list[str] | None, typer.Option("--set", metavar="NODE.KEY=VALUE", help=help_text)]


SetOption = set_option(
    "Override a config value, validated like the YAML: [mapping.|localization.]NODE.KEY=VALUE "
    "(e.g. localization.pnp.confident_inliers=50); repeat for more."
)
LocalizationSetOption = set_option(
    "Change a localization setting of the map's pipeline for this run, validated like the YAML: "
    "[localization.]NODE.KEY=VALUE (e.g. features.resize_max=768: a smaller query image, faster, "
    "less accurate; figures in BENCHMARKS.md); repeat for more. Mapping settings need a new map."
)
ImagesOption = Annotated[Path | None, typer.Option(help="colmap only: image folder (default ROOT/images).")]
QueriesOption = Annotated[Path | None, typer.Option(help="colmap only: file of query image names (test split).")]
ExecutorOption = Annotated[
    str,
    typer.Option(
        "--executor",
        help="Where localization and mapping's per-image work run: local (this process), threads (one thread per "
        "chunk of queries or images) or ray "
        "(Ray tasks; a local Ray unless --address).",
    ),
]
WorkersOption = Annotated[int, typer.Option(help="Workers for --executor threads/ray (0: the machine's cores).")]
AddressOption = Annotated[
    str | None, typer.Option(help="Ray cluster to use with --executor ray ('auto', 'ray://HOST:10001').")
]


def reports_errors(command):
    """Print RelocError as a red one-liner and exit 2 instead of a traceback; Ctrl-C says what
    was kept and how to resume, and exits 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RelocError as error:
            console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print(
                "[yellow]interrupted:[/] mapping nodes that finished are kept in the map's cache/ and their files in "
                "the map folder (the map has no map.yaml until it is complete); run the same command again to resume",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(130) from None

    return wrapper


def open_dataset(dataset: ScoredDataset, root: Path, images: Path | None = None, queries: Path | None = None):
    options = {"images": images, "queries": queries} if dataset is ScoredDataset.colmap else {}
    return load_dataset(dataset.value, root, **options)


def progress_bar(*extra: TextColumn) -> Progress:
    """The one progress display of the commands: description, bar, done/total, time, and any
    ``extra`` columns (a training step's losses)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        *extra,
        console=console,
    )


class GraphProgress:
    """A rich display with a bar per graph run (its nodes) and one more for each ``track``ed loop
    inside a node (images, queries, training steps). Use as a context; ``on_node(description)``
    gives the callback a graph run reports its nodes to."""

    def __init__(self):
        self.display = progress_bar()
        self.tasks: dict[str, tuple] = {}
        self.loops = reporting(self.start_loop)

    def __enter__(self) -> GraphProgress:
        self.display.__enter__()
        self.loops.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for description, (task, total) in self.tasks.items():
            self.display.update(task, description=f"{description}: done", completed=total, total=total)
        self.loops.__exit__(*exc)
        self.display.__exit__(*exc)

    def on_node(self, description: str):
        def report(name: str, index: int, total: int) -> None:
            if description not in self.tasks:
                self.tasks[description] = (self.display.add_task(description, total=total), total)
            self.display.update(self.tasks[description][0], description=f"{description}: {name}", completed=index)

        return report

    def start_loop(self, loop: str, total: int):
        task = self.display.add_task(f"  {loop}", total=total)
        return lambda: self.display.advance(task)


SUMMARY_SHOWN = ("run", "failed", "median t (cm)", "median R (deg)", "5 cm 5° (%)", "ms per query", "wall (s)", "error")


def print_summary(summaries: list[RunSummary], out: Path) -> None:
    """The summary's main columns (all of them are in the files)."""
    header, rows = summary_rows(summaries)
    shown = [header.index(column) for column in SUMMARY_SHOWN]
    table = Table(title=f"{len(summaries)} evaluations in {out}")
    for index in shown:
        table.add_column(header[index], justify="left" if header[index] in ("run", "error") else "right")
    for row in rows:
        table.add_row(*(row[index] for index in shown), style="red" if row[-1] else None)
    console.print(table)
    console.print(f"wrote {out / SUMMARY_MD} and {out / SUMMARY_CSV} (all columns)")


def print_mapping(run, map_dir: Path) -> None:
    table = Table(title=f"Mapping into {map_dir}")
    table.add_column("node")
    table.add_column("seconds", justify="right")
    for name, seconds in run.seconds.items():
        table.add_row(name + (" (cached)" if name in run.cached else ""), f"{seconds:.2f}")
    console.print(table)


def print_localized(results: list) -> None:
    failed = sum(not r.success for r in results)
    console.print(f"localized {len(results) - failed}/{len(results)} queries ({failed} failed)")


@app.command(cls=Command)
@reports_errors
def score(
    results: Annotated[
        Path, typer.Argument(help="Results file: 'name qw qx qy qz tx ty tz' per line (cam_from_world).")
    ],
    dataset: DatasetOption,
    root: RootOption,
    out: Annotated[Path | None, typer.Option(dir_okay=False, help="Write metrics.json here.")] = None,
    map_dir: Annotated[Path | None, typer.Option("--map", help="Map folder, to report its size.")] = None,
    queries: QueriesOption = None,
):
    """Score a results file against a dataset's ground truth (median errors, recalls, failures)."""
    ground_truth = open_dataset(dataset, root, queries=queries).ground_truth()
    metrics, _ = compute_metrics(read_results(results), ground_truth, folder_bytes(map_dir) if map_dir else None)
    print_metrics(metrics, f"{results} on {root}", console)
    if out is not None:
        write_metrics(out, metrics)
        console.print(f"wrote {out}")


@app.command("map", cls=Command)
@reports_errors
def map_command(
    config: ConfigOption,
    dataset: DatasetOption,
    root: RootOption,
    out: Annotated[Path, typer.Option(file_okay=False, help="Map folder to write.")],
    images: ImagesOption = None,
    queries: QueriesOption = None,
    overrides: SetOption = None,
    executor: ExecutorOption = "local",
    workers: WorkersOption = 0,
    address: AddressOption = None,
):
    """Build a map from the posed mapping split of a dataset. With --executor threads or ray the
    per-image work (features, FaVoR's patches, keyframe copies) is spread over workers; the map
    is the same bytes."""
    with GraphProgress() as progress:
        run = api.map(
            config,
            dataset.value,
            root,
            out,
            overrides,
            progress.on_node("mapping"),
            ExecutorConfig(executor, workers, address),
            images=images,
            queries=queries,
        )
    print_mapping(run, out)


@app.command("export", cls=Command)
@reports_errors
def export_command(
    map_dir: Annotated[Path, typer.Argument(help="Map folder written by 'reloc map' or 'reloc eval' (RUN/map).")],
    out: Annotated[Path, typer.Argument(file_okay=False, help="New folder for the exported map.")],
    compact: Annotated[
        bool, typer.Option("--compact", help="Re-code descriptors, whiten retrieval, strip the COLMAP model.")
    ] = False,
    descriptors: Annotated[str, typer.Option(help="Descriptor codec: pq, sq8 or float16.")] = "pq",
    pq_subvectors: Annotated[int, typer.Option(help="Bytes per descriptor with --descriptors pq.")] = 32,
    whitened_dims: Annotated[int, typer.Option(help="Retrieval dimensions after PCA whitening (0: keep).")] = 0,
):
    """Export a map as a compact one: only what its localization (and the viewer) reads, landmark
    descriptors quantized, retrieval vectors PCA-whitened. The map's accuracy is measured again
    with 'reloc eval --map OUT'."""
    if not compact:
        raise typer.BadParameter("only --compact export exists: give --compact")
    try:
        codec = CodecConfig(kind=descriptors, pq_subvectors=pq_subvectors)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    sizes = api.export_compact(map_dir, out, CompactConfig(codec, whitened_dims))
    table = Table(title=f"{map_dir} -> {out}")
    for column in ("artifact", "before (MB)", "after (MB)"):
        table.add_column(column, justify="right" if column != "artifact" else "left")
    for name, (before, after) in sizes.items():
        table.add_row(name, f"{before / 1e6:.2f}", f"{after / 1e6:.2f}" if after else "dropped")
    before, after = (sum(size[i] for size in sizes.values()) for i in (0, 1))
    table.add_row("total", f"{before / 1e6:.2f}", f"{after / 1e6:.2f}")
    console.print(table)


@app.command("split", cls=Command)
@reports_errors
def split_command(
    map_dir: Annotated[Path, typer.Argument(help="Map folder written by 'reloc map' or 'reloc eval' (RUN/map).")],
    out: Annotated[Path, typer.Argument(file_okay=False, help="New folder for the submaps.")],
    parts: Annotated[int, typer.Option(help="Submaps (k-means regions of the keyframe centres).")] = 4,
    overlap: Annotated[
        float, typer.Option(help="A keyframe also joins regions within (1 + OVERLAP) x its nearest centre distance.")
    ] = 0.25,
    router_dims: Annotated[int, typer.Option(help="Dimensions of the router's whitened retrieval vectors.")] = 128,
):
    """Split a map into submaps by region, for maps too large for one worker. 'reloc localize OUT'
    and 'reloc eval --map OUT' route each query by retrieval to the submaps holding its top
    keyframes; with --executor ray a worker reads only the submaps of its queries."""
    split = api.split_map(map_dir, out, SplitConfig(parts, overlap, router_dims))
    table = Table(title=f"{map_dir} split into {out}")
    for column in ("submap", "keyframes", "landmarks", "MB", "centre (m)"):
        table.add_column(column, justify="left" if column == "submap" else "right")
    for entry in split["submaps"]:
        size = folder_bytes(out / entry["folder"]) / 1e6
        centre = ", ".join(f"{v:.1f}" for v in entry["centre"])
        table.add_row(entry["folder"], str(len(entry["keyframes"])), str(entry["landmarks"]), f"{size:.1f}", centre)
    console.print(table)


@app.command("localize", cls=Command)
@reports_errors
def localize_command(
    map_dir: Annotated[Path, typer.Argument(help="Map folder written by 'reloc map'.")],
    images: Annotated[list[Path], typer.Argument(help="Query images or folders of images.")],
    out: Annotated[Path, typer.Option(dir_okay=False, help="Results file to write.")],
    focal: Annotated[float | None, typer.Option(help="Focal length in pixels (principal point at the centre).")] = None,
    camera: Annotated[
        Path | None, typer.Option(help="Camera file: 'MODEL W H PARAMS...' or 'NAME MODEL W H PARAMS...' lines.")
    ] = None,
    overrides: LocalizationSetOption = None,
    executor: ExecutorOption = "local",
    workers: WorkersOption = 0,
    address: AddressOption = None,
):
    """Localize unposed images against a map. Intrinsics: --focal, --camera, or the images' EXIF."""
    if focal is not None and camera is not None:
        raise typer.BadParameter("give either --focal or --camera, not both")
    with GraphProgress() as progress:
        results = api.localize(
            map_dir,
            images,
            focal,
            camera,
            progress.on_node(f"localizing {len(images)} inputs"),
            ExecutorConfig(executor, workers, address),
            overrides,
        )
    print_localized(results)
    write_results(out, results)
    console.print(f"wrote {out}")


@app.command("serve", cls=Command)
@reports_errors
def serve_command(
    map_dir: Annotated[Path, typer.Argument(help="Map folder written by 'reloc map'.")],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_request_mb: Annotated[float, typer.Option(help="Largest request accepted, in MB (413 above).")] = 20.0,
    max_megapixels: Annotated[float, typer.Option(help="Largest image accepted, in megapixels (413 above).")] = 40.0,
    max_concurrent: Annotated[
        int, typer.Option(help="Localizations at once; others wait up to --queue seconds, then get 503.")
    ] = 2,
    queue: Annotated[float, typer.Option(help="Seconds a request waits for a free localization slot.")] = 30.0,
    timeout: Annotated[float, typer.Option(help="Seconds a localization may take; longer gets 504.")] = 60.0,
    ray: Annotated[bool, typer.Option("--ray", help="Run the app as a Ray Serve deployment.")] = False,
    replicas: Annotated[int, typer.Option(help="--ray: replicas (processes of one CPU, each with the map).")] = 2,
    address: AddressOption = None,
    overrides: LocalizationSetOption = None,
):
    """Serve a map over HTTP: POST /localize (image + focal or camera line) returns the pose as JSON;
    GET /health, GET /map, OpenAPI docs at /docs. Needs 'pip install reloc[serve]' ('reloc[ray]'
    for --ray). --max-concurrent is per replica with --ray."""
    try:
        import uvicorn
    except ImportError:
        raise RelocError("reloc serve needs FastAPI and uvicorn: pip install 'reloc[serve]'") from None
    from .serve import ServiceLimits, create_app

    limits = ServiceLimits(int(max_request_mb * 1e6), int(max_megapixels * 1e6), max_concurrent, queue, timeout)
    if ray:
        serve_on_ray(map_dir, limits, replicas, host, port, ExecutorConfig("ray", replicas + 1, address), overrides)
        return
    app_instance = create_app(map_dir, limits, overrides)
    console.print(f"serving {map_dir} on http://{host}:{port} (docs at /docs)")
    uvicorn.run(app_instance, host=host, port=port, log_level="warning")


def interrupt(*_) -> None:
    """SIGTERM handler: stop as Ctrl-C does, so that the ``finally`` blocks clean up."""
    raise KeyboardInterrupt


def serve_on_ray(
    map_dir: Path, limits, replicas: int, host: str, port: int, executor: ExecutorConfig, overrides: list[str] | None
) -> None:
    """Run the service as a Ray Serve application until interrupted (Ctrl-C or SIGTERM), then shut
    Serve and the local Ray down."""
    from ray import serve

    from .serve import ray_serve_application

    load_map_pipeline(map_dir, overrides)  # a folder that is not a map, or a bad --set, fails here, before Ray starts
    ray_module = ray_session(executor)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(ray_serve_application(map_dir, limits, replicas, overrides), route_prefix="/")
        console.print(f"serving {map_dir} on http://{host}:{port} with {replicas} Ray Serve replicas (docs at /docs)")
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray_module.shutdown()


@app.command("eval", cls=Command)
@reports_errors
def eval_command(
    config: Annotated[
        list[Path],
        typer.Option(
            "--config",
            help=f"Pipeline YAML, or the name of a shipped one ({', '.join(shipped_names())}); repeat to "
            "evaluate several.",
        ),
    ],
    dataset: DatasetOption,
    root: Annotated[
        list[Path],
        typer.Option("--root", help="Scene folder (e.g. 7scenes/chess, Cambridge/KingsCollege); repeat for several."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            file_okay=False,
            help="Run folder: map/, results.txt, metrics.json, report.md. With several scenes or configs: one "
            "run folder per pair under it, and summary.md / summary.csv.",
        ),
    ],
    images: ImagesOption = None,
    queries: QueriesOption = None,
    overrides: SetOption = None,
    map_dir: Annotated[
        Path | None,
        typer.Option(
            "--map",
            help="Localize against this existing map folder instead of "
            "building OUT/map; only the config's localization graph runs. Compares "
            "localizers on one map (its mapping must produce what they read).",
        ),
    ] = None,
    executor: ExecutorOption = "local",
    workers: WorkersOption = 0,
    address: AddressOption = None,
):
    """Map the training split, localize the test split and score it (the map is reused when unchanged).

    With several --root or --config, every (scene, config) pair is evaluated into OUT/SCENE-CONFIG
    (as Ray tasks of one CPU with --executor ray, on threads, or one after another) and one table
    of them all is written to OUT/summary.md and OUT/summary.csv."""
    executor_config = ExecutorConfig(executor, workers, address)
    if len(config) > 1 or len(root) > 1:
        if map_dir is not None:
            raise typer.BadParameter("--map localizes one config against one map; give one --root and one --config")
        options = {"images": images, "queries": queries} if dataset is ScoredDataset.colmap else {}
        runs = plan_runs([str(c) for c in config], dataset.value, root, overrides, **options)
        with GraphProgress():
            summaries = evaluate_all(runs, out, executor_config)
        print_summary(summaries, out)
        return
    config_path, root = config[0], root[0]
    pipeline = load_pipeline(config_path, overrides=overrides)
    scene = open_dataset(dataset, root, images, queries)
    if map_dir is not None:
        console.print(f"localizing against the given map {map_dir}")
    with GraphProgress() as progress:
        evaluation = evaluate(
            pipeline,
            scene,
            out,
            map_dir,
            progress.on_node("mapping"),
            progress.on_node("localizing"),
            executor_config,
        )
    if evaluation.mapping is not None:
        print_mapping(evaluation.mapping, evaluation.map_dir)
    elif map_dir is None:
        console.print(f"reusing the map in {evaluation.map_dir} (same mapping config and frames)")
    print_localized(evaluation.results)
    print_metrics(evaluation.metrics, f"{pipeline.name} on {root}", console)
    console.print(
        f"wrote {out}/results.txt, {GROUND_TRUTH_FILE}, metrics.json, report.md and {len(evaluation.plots)} figures in "
        f"{out / PLOTS_FOLDER}"
    )


@app.command(cls=Command)
@reports_errors
def check(
    map_dir: Annotated[Path, typer.Argument(help="Map folder written by 'reloc map' or 'reloc eval' (RUN/map).")],
):
    """Check a map folder before trusting it: every file its map.yaml records is there with the size and
    content it had when the map was built, each artifact is in a format this reloc reads, and each opens."""
    recorded = read_map_record(map_dir).get("artifacts") or {}
    checked = check_files(map_dir, recorded, contents=True)
    table = Table(title=f"{map_dir}: {checked} files as recorded")
    for column in ("artifact", "written by", "files", "format", "opens"):
        table.add_column(column)
    for name, entry in recorded.items():
        artifact = ARTIFACTS.get(name)
        if artifact is not None and entry.get("format", artifact.format_version) != artifact.format_version:
            raise PipelineError(
                f"{map_dir / name}: format {entry['format']}, but this reloc reads format "
                f"{artifact.format_version}; rebuild the map"
            )
        opens = "-"
        if artifact is not None and artifact.reader:
            try:
                open_artifact(map_dir, name)
            except RelocError:
                raise
            except Exception as error:  # a damaged file fails in its reader's own terms
                raise PipelineError(f"{map_dir / name}: does not open ({type(error).__name__}: {error})") from None
            opens = "yes"
        table.add_row(
            name, entry.get("stage", "?"), str(len(entry.get("files") or {})), str(entry.get("format", "-")), opens
        )
    console.print(table)
    console.print(f"[green]{map_dir} is as it was built[/]")


@app.command("view", cls=Command)
@reports_errors
def view_command(
    map_dir: Annotated[Path, typer.Argument(help="Map folder written by 'reloc map' or 'reloc eval' (RUN/map).")],
    results: Annotated[
        Path | None,
        typer.Option(
            help="Results file (RUN/results.txt) whose queries to draw: estimates, "
            "ground truth (from ground_truth.txt beside it, as 'reloc eval' writes), "
            "errors, failures."
        ),
    ] = None,
    ground_truth: Annotated[
        Path | None,
        typer.Option(help="Ground-truth poses in the results format (default: ground_truth.txt beside --results)."),
    ] = None,
    screenshot: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="Render headless to this PNG (no window, no display needed) "
            "from a viewpoint that frames the map, and exit. The view camera "
            "goes to OUT.view.json (K, cam_from_world).",
        ),
    ] = None,
    width: Annotated[int, typer.Option(min=64, help="Window or screenshot width in pixels.")] = 1280,
    height: Annotated[int, typer.Option(min=64, help="Window or screenshot height in pixels.")] = 800,
    point_size: Annotated[float, typer.Option(min=1.0, help="Landmark point size in pixels.")] = 3.0,
    query: Annotated[str | None, typer.Option(help="Select this query at start (fly to it, show its matches).")] = None,
    quit_after: Annotated[
        float | None,
        typer.Option(hidden=True, help="Close the window this many seconds after the first frame (smoke tests)."),
    ] = None,
):
    """Show a map and where each query landed: landmarks, mapping cameras, query cameras (ground
    truth green, estimate orange, joined by a line coloured by error; failed queries red and
    crossed), FaVoR voxels coloured by training PSNR, NeuMap voxels by the share of codes kept
    (with a sample of their labelled points). The window (Open3D GUI) has layer toggles, point
    size, the queries sorted by error (select one to fly to it and see its inlier matches) and a
    screenshot button; --screenshot renders the same scene without a display."""
    with console.status(f"loading {map_dir}"):
        scene = load_scene(map_dir, results, ground_truth)
    console.print(
        f"{len(scene.points)} landmarks, {len(scene.keyframes)} mapping cameras, {len(scene.queries)} queries"
        + (f" ({sum(q.failed for q in scene.queries)} failed)" if scene.queries else "")
        + (f", {len(scene.voxels.centres)} {scene.voxels.method} voxels" if scene.voxels is not None else "")
    )
    if len(scene.colors) and not scene.colors.any():
        console.print(
            "[yellow]the landmarks have no colours (the map was built before reloc stored them): rebuild the map "
            "to see them"
        )
    if screenshot is not None:
        from .viz.geometry import automatic_view, build_layers
        from .viz.render import render_image, save_view

        view = automatic_view(scene, width, height)
        image = render_image(build_layers(scene), view, point_size)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(screenshot)
        save_view(view, screenshot.with_suffix(".view.json"))
        console.print(f"wrote {screenshot}")
        return
    from reloc_viewer.app import run_viewer

    viewer = run_viewer(scene, width, height, point_size, Path.cwd(), query, quit_after)
    console.print(f"viewer closed after {viewer.frames_drawn} frames")


def stage_status(stage: str, stages: dict) -> str:
    if stage in stages:
        return "[green]ok[/]"
    if stage in PLANNED_STAGES:
        return f"[yellow]planned: {PLANNED_STAGES[stage]}[/]"
    return "[red]unknown stage[/]"


def describe_ports(ports: dict, optional: frozenset[str] = frozenset()) -> str:
    return "\n".join(
        f"{name}: {type_name(port)}{' (optional)' if name in optional else ''}" for name, port in ports.items()
    )


@app.command(cls=Command)
@reports_errors
def graph(config: Annotated[Path, typer.Argument(help="Pipeline YAML, or the name of a shipped one.")]):
    """Print a pipeline's nodes and edges, and validate it."""
    config = config_path(config)
    content = read_yaml(config)
    stages = registered_stages()
    planned = []
    for section in ("mapping", "localization"):
        nodes = (content.get(section) or {}).get("nodes") or {}
        table = Table(title=f"{config} — {section}", show_lines=False)
        for column in ("node", "stage", "config", "inputs ← producers", "status"):
            table.add_column(column)
        for name, node in nodes.items():
            node = node or {}
            stage = str(node.get("stage"))
            status = stage_status(stage, stages)
            if stage not in stages and stage in PLANNED_STAGES:
                planned.append(stage)
            wiring = "\n".join(f"{port} ← {ref}" for port, ref in (node.get("inputs") or {}).items())
            table.add_row(name, stage, json.dumps(node.get("with") or {}), wiring, status)
        console.print(table)
        console.print(
            f"sources: {', '.join(SOURCES[section])}; output: {(content.get(section) or {}).get('output', '-')}"
        )
    if planned:
        console.print(
            f"[yellow]not implemented yet:[/] {', '.join(sorted(set(planned)))}; this pipeline cannot run until "
            "they land."
        )
        return
    pipeline = load_pipeline(config, content)
    for section_graph in (pipeline.mapping, pipeline.localization):
        console.print(f"[bold]{section_graph.section}[/] order: {' → '.join(section_graph.order)}")
    console.print("[green]valid[/]")


class SynthLayout(str, Enum):
    sevenscenes = "7scenes"
    cambridge = "cambridge"


def parse_frames(text: str) -> tuple[int, int]:
    try:
        mapping, queries = (int(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected MAPPING,QUERIES frame counts such as 300,100, got {text!r}") from None
    if mapping < 1 or queries < 1:
        raise typer.BadParameter("frame counts must be positive")
    return mapping, queries


@app.command(cls=Command)
@reports_errors
def synth(
    layout: Annotated[
        SynthLayout,
        typer.Option(help="7scenes: indoor room, 640x480, depth; cambridge: outdoor courtyard, 640x360, NVM."),
    ],
    out: Annotated[Path, typer.Option(file_okay=False, help="Scene folder to write.")],
    seed: Annotated[int, typer.Option(help="Everything (scene, paths, noise) follows from the seed.")] = 0,
    frames: Annotated[str, typer.Option(help="MAPPING,QUERIES frame counts.")] = "300,100",
    sequences: Annotated[str, typer.Option(help="MAPPING,QUERIES sequence counts.")] = "3,2",
    appearance: Annotated[
        str,
        typer.Option(
            help="Query appearance: a preset (none, harsh) or key=value,... with keys "
            "exposure, gamma, white_balance (R:G:B), noise, motion_blur, jpeg_quality."
        ),
    ] = "none",
    query_offset: Annotated[
        float,
        typer.Option(
            help="Metres by which queries leave the mapping trajectory: each query "
            "sequence follows a mapping sequence, every camera moved this far sideways "
            "(left or right) and re-aimed at what the mapping camera looked at "
            "(2 m ahead indoors, 8 m outdoors). 0: queries on paths of their own."
        ),
    ] = 0.0,
):
    """Generate a synthetic scene with exact ground truth in the 7-Scenes or Cambridge layout."""
    from .datasets.synthetic.appearance import parse_appearance
    from .datasets.synthetic.generate import SynthConfig, generate

    (mapping_frames, query_frames), (mapping_sequences, query_sequences) = parse_frames(frames), parse_frames(sequences)
    config = SynthConfig(
        layout.value,
        seed,
        mapping_frames,
        query_frames,
        mapping_sequences,
        query_sequences,
        parse_appearance(appearance),
        query_offset,
    )
    progress = progress_bar()
    with progress:
        task = progress.add_task(f"rendering {layout.value} scene (seed {seed})", total=mapping_frames + query_frames)
        generate(config, out, lambda done, total: progress.update(task, completed=done))
    console.print(f"wrote {mapping_frames} mapping and {query_frames} query frames to {out}")


PairMatcherName = Enum("PairMatcherName", {name.replace("-", "_"): name for name in PAIR_MATCHERS}, type=str)


class AreaMatching(str, Enum):
    none = "none"
    mesa = "mesa"
    dmesa = "dmesa"


@app.command("match-eval", cls=Command)
@reports_errors
def match_eval(
    matcher: Annotated[
        PairMatcherName,
        typer.Option(
            help="casp (CasP + HomoMatcher), casp-coarse (CasP's 1/8 matches), "
            "xfeat-star (XFeat*), aliked-lightglue, sift (RootSIFT, mutual NN + ratio 0.8)."
        ),
    ],
    pairs: Annotated[
        Path, typer.Option(help="pairs_with_gt.txt: name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16), cam1_from_cam0.")
    ],
    images: Annotated[Path, typer.Option(help="Folder the pair file's image names are relative to.")],
    out: Annotated[
        Path,
        typer.Option(
            dir_okay=False,
            help="metrics.json to write (auc_5/10/20 in percent, matches_per_pair, ms_per_pair, per pair).",
        ),
    ],
    resize_max: Annotated[int, typer.Option(help="Long side the matcher sees, in pixels (0: original size).")] = 640,
    max_keypoints: Annotated[
        int, typer.Option(help="Keypoints of the sparse matchers; XFeat*'s top-k dense cells.")
    ] = 4096,
    ransac_px: Annotated[
        float, typer.Option(help="LO-RANSAC epipolar threshold, in pixels of the matcher's resized image.")
    ] = 1.0,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default).")] = 0,
    areas: Annotated[
        AreaMatching,
        typer.Option(
            help="none: the matcher alone; dmesa: DMESA area matching around it (areas from a weight-free "
            "segmentation, area pairs by splatting the matcher's own matches, crops matched, fused); "
            "mesa: the same with MESA's graphical area matching (graph cut over the area graphs)."
        ),
    ] = AreaMatching.none,
    area_pairs: Annotated[
        int | None,
        typer.Option(help="Area pairs whose crops are matched (default: the matcher's, 1 for xfeat-star, 3 else)."),
    ] = None,
    crop_size: Annotated[
        int | None,
        typer.Option(
            help="Long side, in pixels, an area crop is matched at (default: the matcher's, 640 for xfeat-star, "
            "256 else)."
        ),
    ] = None,
    crop_keypoints: Annotated[
        int | None,
        typer.Option(
            help="Keypoints per area crop (XFeat*: top-k cells; default: 512 for sift, the matcher's 4096 else)."
        ),
    ] = None,
    min_zoom: Annotated[
        float, typer.Option(help="Skip area pairs whose crops are matched at under this x the global resolution.")
    ] = 0.0,
    em_iterations: Annotated[int, typer.Option(help="dmesa: EM refinement of each splatted area box (0: none).")] = 0,
    fine_iterations: Annotated[
        int, typer.Option(help="casp: HomoMatcher iterations (1: the search window only; trained with 3).")
    ] = 1,
    casp_checkpoint: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="casp: a CasP checkpoint of `reloc train casp` (default: shipped)."
        ),
    ] = None,
    homomatcher_checkpoint: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="casp: a HomoMatcher checkpoint of `reloc train homomatcher` (default: shipped).",
        ),
    ] = None,
):
    """Relative pose from a matcher's matches on image pairs with ground truth: AUC@5/10/20 degrees
    of max(rotation error, translation direction error), matches and milliseconds per pair."""
    import torch

    from .eval.matching import evaluate_pairs, pair_metrics
    from .matching.mesa.dmesa import SplatConfig
    from .matching.mesa.matcher import AreaMatcher, AreaMatcherConfig
    from .matching.pairwise import PairMatcherConfig, build_pair_matcher

    if threads:
        torch.set_num_threads(threads)
    matcher_config = PairMatcherConfig(
        resize_max=resize_max,
        max_keypoints=max_keypoints,
        fine_iterations=fine_iterations,
        casp_checkpoint=str(casp_checkpoint or ""),
        homomatcher_checkpoint=str(homomatcher_checkpoint or ""),
    )
    if areas != AreaMatching.none:
        splat = SplatConfig(em_iterations=em_iterations)
        area_config = AreaMatcherConfig(
            areas.value,
            max_area_pairs=area_pairs,
            crop_size=crop_size,
            crop_keypoints=crop_keypoints,
            min_zoom=min_zoom,
            splat=splat,
        )
        pair_matcher = AreaMatcher(matcher.value, matcher_config, area_config)
    else:
        pair_matcher = build_pair_matcher(matcher.value, matcher_config)
    area_details = []

    def on_pair(result) -> None:
        progress.advance(task)
        if areas != AreaMatching.none:
            area_details.append(dataclasses.asdict(pair_matcher.details))

    pair_count = (
        sum(1 for line in pairs.read_text().splitlines() if line.strip() and not line.startswith("#"))
        if pairs.is_file()
        else 0
    )
    progress = progress_bar()
    with progress:
        task = progress.add_task(f"{matcher.value} on {pairs}", total=pair_count)
        results = evaluate_pairs(pair_matcher, pairs, images, ransac_px, on_pair, resize_max)
    metrics = pair_metrics(results)
    if area_details:
        parts = sorted({part for details in area_details for part in details["seconds"]})
        metrics["ms_per_pair_by_part"] = {
            part: 1000 * float(statistics.median([d["seconds"].get(part, 0.0) for d in area_details])) for part in parts
        }
        metrics["pairs_on_plain_matches"] = sum(bool(d["fallback"]) for d in area_details)
    metrics.update(
        {
            "areas": areas.value,
            "area_pairs": pair_matcher.max_area_pairs if areas != AreaMatching.none else None,
            "crop_size": pair_matcher.crop_size if areas != AreaMatching.none else None,
            "crop_keypoints": pair_matcher.crop_matcher.config.max_keypoints if areas != AreaMatching.none else None,
            "min_zoom": min_zoom if areas != AreaMatching.none else None,
            "em_iterations": em_iterations,
            "fine_iterations": fine_iterations,
            "per_pair_areas": area_details,
            "matcher": matcher.value,
            "pairs": str(pairs),
            "resize_max": resize_max,
            "max_keypoints": max_keypoints,
            "ransac_px": ransac_px,
            "per_pair": [dataclasses.asdict(r) for r in results],
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=1))
    table = Table(title=f"{matcher.value} on {pairs} ({metrics['n_pairs']} pairs, {metrics['n_failed']} failed)")
    for column in ("AUC@5", "AUC@10", "AUC@20", "matches/pair", "ms/pair"):
        table.add_column(column, justify="right")
    table.add_row(
        *(f"{metrics[k]:.1f}" for k in ("auc_5", "auc_10", "auc_20", "matches_per_pair")),
        f"{metrics['ms_per_pair']:.0f}",
    )
    console.print(table)
    console.print(f"wrote {out}")


train_app = typer.Typer(
    cls=Group,
    help="Train the models reloc ships in reloc/weights/ (checkpoints go to runs/train/ unless --out).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(train_app, name="train")


def run_training(model: str, steps: int, train: Callable[[Callable[[int, dict], None]], tuple[Path, dict]]) -> None:
    """Run ``train(on_step)`` under a progress bar showing each step's metrics, then print the
    mean of the last 100 steps and the checkpoint written."""
    progress = progress_bar(TextColumn("{task.fields[status]}"))
    with progress:
        task = progress.add_task(f"training {model}", total=steps, status="")

        def on_step(step: int, record: dict) -> None:
            status = " ".join(f"{key} {value:.3g}" for key, value in record.items() if key != "step")
            progress.update(task, completed=step + 1, status=status)

        path, summary = train(on_step)
    table = Table(title=f"{model}: mean of the last 100 steps")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.4g}")
    console.print(table)
    console.print(f"wrote {path}")


def parse_model_settings(settings: list[str]) -> dict:
    """``KEY=VALUE`` strings -> {key: value parsed as YAML} (:func:`reloc.pipeline.spec.parse_setting`)."""
    parsed = {}
    for setting in settings:
        try:
            key, value = parse_setting(setting, "KEY=VALUE, e.g. fit=regression")
        except ValueError as error:
            raise typer.BadParameter(f"--model-set {setting!r}: {error}") from None
        parsed[key] = value
    return parsed


def matcher_trainer(model: str, summary: str):
    """The ``reloc train MODEL`` command of a matcher trained on view pairs (casp, homomatcher)."""

    @reports_errors
    def command(
        out: Annotated[
            Path | None,
            typer.Option(
                dir_okay=False,
                help="Checkpoint to write (default: runs/train/MODEL-TIME.pt), not the shipped one in reloc/weights/.",
            ),
        ] = None,
        steps: Annotated[int, typer.Option(help="Optimisation steps, each on a fresh batch.")] = 1500,
        batch_size: Annotated[int, typer.Option(help="Image pairs per step.")] = 4,
        width: Annotated[int, typer.Option(help="Training image width (multiple of 32).")] = 320,
        height: Annotated[int, typer.Option(help="Training image height (multiple of 32).")] = 256,
        learning_rate: Annotated[
            float, typer.Option(help="Peak AdamW learning rate (warm-up, then cosine decay).")
        ] = 1e-3,
        photos: Annotated[
            str,
            typer.Option(
                help="Real photographs for homographic pairs: 'bundled' (scikit-image's), a "
                "folder of .jpg/.png, or '' for synthetic scene pairs only."
            ),
        ] = "bundled",
        max_baseline_m: Annotated[
            float, typer.Option(help="Synthetic pairs: the second camera moves up to this far.")
        ] = 1.5,
        max_view_angle_deg: Annotated[
            float, typer.Option(help="Synthetic pairs: and turns up to this many degrees.")
        ] = 40.0,
        min_overlap: Annotated[
            float, typer.Option(help="Synthetic pairs: least share of image 0 seen by image 1.")
        ] = 0.25,
        max_corner_shift: Annotated[
            float, typer.Option(help="Warped photographs: corner displacement, fraction of the side.")
        ] = 0.3,
        scene_seeds: Annotated[int, typer.Option(help="Synthetic scenes of each kind (room, courtyard).")] = 2,
        seed: Annotated[int, typer.Option(help="Seeds the scenes, the pair sampling and the initial weights.")] = 0,
        threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default).")] = 0,
        init: Annotated[
            Path | None,
            typer.Option(
                exists=True, dir_okay=False, help="Start from this checkpoint's heads (e.g. the shipped one)."
            ),
        ] = None,
        validation_every: Annotated[
            int,
            typer.Option(
                help="Steps between scores on held-out synthetic pairs (scenes no training seed renders); 0: none."
            ),
        ] = 200,
        validation_pairs: Annotated[int, typer.Option(help="Size of the held-out validation set.")] = 32,
        patience: Annotated[
            int, typer.Option(help="Stop after this many validations without a better loss (0: run every step).")
        ] = 0,
        model_set: Annotated[
            list[str] | None,
            typer.Option(
                "--model-set",
                metavar="KEY=VALUE",
                help="Fresh weights: a model config value (YAML), e.g. fit=regression for HomoMatcher's corner "
                "head; repeat for more.",
            ),
        ] = None,
    ):
        """Trained on synthetic view pairs (exact correspondences from depth and pose) and
        homographic warps of real photographs, with photometric augmentation. The XFeat backbone
        stays frozen; the checkpoint holds the trained heads and a training summary. With
        validation, the checkpoint is rewritten at each better validation loss and the run ends
        with the best weights (early stopping with --patience)."""
        from .matching.trained import train_and_save
        from .matching.training import TrainConfig
        from .matching.training_pairs import TrainingDataConfig

        if width % 32 or height % 32:
            raise typer.BadParameter("--width and --height must be multiples of 32")
        config = TrainConfig(
            steps=steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            threads=threads,
            init=str(init or ""),
            model=parse_model_settings(model_set or []),
            validation_pairs=validation_pairs,
            validation_every=validation_every,
            patience=patience,
            data=TrainingDataConfig(
                width=width,
                height=height,
                photos=photos,
                scene_seeds=scene_seeds,
                max_baseline_m=max_baseline_m,
                max_view_angle_deg=max_view_angle_deg,
                min_overlap=min_overlap,
                max_corner_shift=max_corner_shift,
            ),
        )
        run_training(model, steps, lambda on_step: train_and_save(model, config, out, on_step))

    command.__doc__ = f"{summary} {command.__doc__}"
    return command


train_app.command("casp", cls=Command)(matcher_trainer("casp", "CasP: the coarse matcher heads."))
train_app.command("homomatcher", cls=Command)(matcher_trainer("homomatcher", "HomoMatcher: the fine stage."))


@train_app.command("neumap", cls=Command)
@reports_errors
def train_neumap_command(
    scenes: Annotated[
        list[Path],
        typer.Argument(
            file_okay=False,
            exists=True,
            help="Scene folders (7-Scenes or Cambridge layout, e.g. from `reloc synth`); never one you report on.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            dir_okay=False,
            help="Decoder checkpoint to write; OUT.resume.pt beside it lets the same command resume.",
        ),
    ] = Path("runs/train/neumap.pt"),
    work: Annotated[Path, typer.Option(file_okay=False, help="Where each scene's XFeat features are cached.")] = Path(
        "runs/neumap-work"
    ),
    steps: Annotated[int, typer.Option(help="Optimisation steps (batches of voxel samples).")] = 10000,
    seed: Annotated[int, typer.Option(help="Seeds the initial weights, codes and the sampling.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default).")] = 0,
    held_out_queries: Annotated[
        bool,
        typer.Option(
            help="Samples of each scene's query frames train the decoder only, through codes learnt from its "
            "mapping frames (as a new scene's codes are), instead of training the codes too."
        ),
    ] = False,
):
    """NeuMap: the scene-agnostic transdecoder, trained jointly with each scene's voxel codes on
    keypoints labelled with world coordinates (depth, or triangulated landmarks). Resumes from
    OUT.resume.pt when it exists; one line per step in OUT.log.jsonl."""
    import torch

    from .neumap.train import TrainConfig
    from .neumap.trained import train_neumap

    if threads:
        torch.set_num_threads(threads)
    config = TrainConfig(steps=steps, seed=seed, held_out_queries=held_out_queries)
    run_training("neumap", steps, lambda on_step: train_neumap(scenes, out, config, work, on_step))


@app.command(cls=Command)
def stages():
    """List the registered stages with their inputs, outputs and config keys."""
    table = Table(title="Registered stages")
    for column in ("stage", "inputs", "outputs", "config"):
        table.add_column(column)
    registered = registered_stages()
    for name, stage in registered.items():
        fields = "\n".join(f.name for f in dataclasses.fields(stage.Config))
        table.add_row(name, describe_ports(stage.inputs, stage.optional_inputs), describe_ports(stage.outputs), fields)
    console.print(table)
    for name, where in PLANNED_STAGES.items():
        if name not in registered:
            console.print(f"[yellow]planned[/] {name}: {where}")


if __name__ == "__main__":
    app()
