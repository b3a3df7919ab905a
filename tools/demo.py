#!/usr/bin/env python
r"""A web page that segments an uploaded image with GSNet, for the class names one types.

    python tools/demo.py --config configs/vitb_384.yaml --weights model.pth
    # then open http://127.0.0.1:7860

Upload a PNG, JPEG or GeoTIFF (or pick an example), type class names separated by commas, and
the page shows the image with its label colours, the legend and the per-class areas, and
offers the label PNG, the label GeoTIFF (georeferenced inputs), the statistics CSV and the
overlay with its legend for download. Large images are tiled as by tools/predict.py (same
predictor, same --tile-size), with a progress bar over the tiles. Without --weights the page
serves the toy model of the quick start (sh scripts/quickstart.sh), with its toy test images
as examples. Needs the "demo" extra (pip install -e ".[demo]"; scripts/setup.sh installs it).
"""

import argparse
import html
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from gsnet.allocator import keep_freed_memory
from gsnet.demo import (
    DEFAULT_MAX_CLASSES,
    QUICKSTART_OUTPUT,
    UPLOAD_SUFFIXES,
    DemoInputError,
    choose_model,
    quickstart_examples,
    segment_upload,
)
from gsnet.errors import MissingFileError, add_debug_flag, check_minimum, reporting_user_errors
from gsnet.predictor import Predictor

# The page must not reach the internet by itself: no usage statistics, no update check.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
try:
    import gradio as gr
    import pandas as pd
except ImportError as error:
    print(
        f"demo.py: error: the web demo needs the 'demo' extra ({error.name} is missing): "
        "pip install -e '.[demo]', or sh scripts/setup.sh.",
        file=sys.stderr,
    )
    sys.exit(2)

logger = logging.getLogger("demo")

# System fonts only: Gradio's default theme loads its fonts from Google's servers.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "monospace"],
)
CSS = """
#demo-legend ul { list-style: none; padding: 0; margin: 0; }
#demo-legend li { display: flex; align-items: center; gap: 0.5em; margin: 0.2em 0; }
#demo-legend .swatch { width: 1.1em; height: 1.1em; border: 1px solid #333; flex: none; }
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--config", help="GSNet YAML (with --weights; default configs/vitb_384.yaml)"
    )
    parser.add_argument(
        "--weights", help="checkpoint (ours or the released file); default: the toy model"
    )
    parser.add_argument(
        "--quickstart-output",
        default=str(QUICKSTART_OUTPUT),
        help="the quick start's output folder, where the toy model is looked for "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--classes",
        default="",
        help='class names in the box at first, and of the --example images: "road, tree"',
    )
    parser.add_argument(
        "--example",
        action="append",
        default=[],
        help="an image offered as example, with --classes (repeat for several)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument(
        "--precision",
        choices=["float32", "bfloat16", "float16"],
        help="inference precision (default: the config's TEST.PRECISION)",
    )
    parser.add_argument(
        "--tile-size", type=int, help="tile side in pixels (default: INPUT.MIN_SIZE_TEST)"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument(
        "--max-classes",
        type=int,
        default=DEFAULT_MAX_CLASSES,
        help="largest vocabulary a request may have (default: %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--share", action="store_true", help="also make a public gradio.live link")
    args = add_debug_flag(parser).parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    check_minimum(parser, args, 1, "tile_size", "batch_size", "max_classes")
    return args


class DemoPage:
    """The page's state: one predictor, and a folder for the downloads of the last request.

    Args:
        predictor: a :class:`~gsnet.predictor.Predictor`.
        work_dir: a folder the page owns; each request replaces the previous request's files
            (requests run one at a time, and Gradio has copied them into its cache by then).
        max_classes: the largest vocabulary accepted.
    """

    def __init__(self, predictor, work_dir, *, max_classes=DEFAULT_MAX_CLASSES):
        self.predictor = predictor
        self.work_dir = Path(work_dir)
        self.max_classes = max_classes

    def segment(self, upload, class_names, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        """The Segment button: (status line HTML, overlay, legend HTML, statistics table, files).

        Args:
            upload: the uploaded file's path (Gradio keeps its name), or None.
            class_names: the text of the class-name box.
            progress: Gradio's progress bar (Gradio passes it; it also tracks tqdm bars).
        """
        run_dir = self.work_dir / "last"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        try:
            result = segment_upload(
                self.predictor,
                upload,
                class_names,
                output_dir=run_dir,
                display_name=Path(upload).name if upload else None,
                max_classes=self.max_classes,
                progress=progress,
            )
        except DemoInputError as error:
            return f"<p><strong>Error:</strong> {_escape(error)}</p>", None, "", None, None
        height, width = result.image_size
        status = f"Segmented {Path(upload).name} ({width} x {height} px) into "
        status += f"{len(result.legend)} classes."
        if result.overlay.size != (width, height):
            status += " The overlay is shown smaller; the downloads have the image's size."
        return (
            f"<p>{_escape(status)}</p>",
            result.overlay,
            legend_html(result.legend),
            statistics_table(result.statistics, area_known=result.area_known),
            [str(path) for path in result.files],
        )


def _escape(text):
    return html.escape(str(text), quote=False)


def legend_html(legend):
    """The legend as an HTML list: a colour swatch, the class name and its share."""
    items = "".join(
        f'<li><span class="swatch" style="background: rgb{entry.colour}"></span>'
        f'<span class="name">{_escape(entry.name)}</span> {entry.percent:.1f}%</li>'
        for entry in legend
    )
    return f"<ul>{items}</ul>"


def statistics_table(rows, *, area_known):
    """Prediction.statistics() rows as the page's table (areas only for a projected CRS)."""
    table = pd.DataFrame(
        {
            "class": [row["class"] for row in rows],
            "pixels": [row["pixels"] for row in rows],
            "percent": [round(row["percent"], 2) for row in rows],
        }
    )
    if area_known:
        table["area (m²)"] = [round(row["area_m2"], 1) for row in rows]
    return table


def build_app(page, *, note="", classes="", examples=()):
    """The Gradio page around a :class:`DemoPage`.

    Args:
        note: a line shown under the title (which model is served).
        classes: the class names in the box at first.
        examples: (image path, class names) pairs offered as examples.
    Returns:
        gr.Blocks (not launched).
    """
    with gr.Blocks(title="GSNet demo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            "# GSNet: open-vocabulary segmentation\n"
            "Upload an image, name the classes you are looking for, press *Segment*."
        )
        if note:
            gr.Markdown(note, elem_id="demo-note")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.File(
                    label="Image (PNG, JPEG or GeoTIFF)",
                    file_types=list(UPLOAD_SUFFIXES),
                    elem_id="demo-image",
                )
                names = gr.Textbox(
                    value=classes,
                    label="Class names",
                    placeholder="building, road, tree, water",
                    info="separated by commas",
                    elem_id="demo-classes",
                )
                run = gr.Button("Segment", variant="primary", elem_id="demo-run")
                if examples:
                    gr.Examples(
                        examples=[[str(path), text] for path, text in examples],
                        inputs=[image, names],
                    )
            with gr.Column(scale=2):
                status = gr.HTML(elem_id="demo-status")
                with gr.Row():
                    overlay = gr.Image(
                        label="Overlay",
                        type="pil",
                        format="png",
                        height=420,
                        buttons=["download", "fullscreen"],
                        elem_id="demo-overlay",
                        scale=3,
                    )
                    legend = gr.HTML(label="Legend", elem_id="demo-legend")
        with gr.Row():
            table = gr.Dataframe(label="Area per class", elem_id="demo-stats", interactive=False)
            files = gr.File(label="Downloads", file_count="multiple", elem_id="demo-files")
        # One model serves every visitor: requests run one at a time.
        run.click(
            page.segment,
            inputs=[image, names],
            outputs=[status, overlay, legend, table, files],
            concurrency_limit=1,
        )
    return app


def main(argv=None):
    args = parse_args(argv)
    keep_freed_memory()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with reporting_user_errors("demo.py", debug=args.debug):
        model = choose_model(args.config, args.weights, quickstart_output=args.quickstart_output)
        predictor = Predictor(
            model.config,
            model.weights,
            device=args.device,
            precision=args.precision,
            tile_size=args.tile_size,
            batch_size=args.batch_size,
        )
        missing = [path for path in args.example if not Path(path).is_file()]
        if missing:
            raise MissingFileError(f"--example {missing[0]}: no such file.")
    examples = [(Path(path), args.classes) for path in args.example]
    if not examples and model.note:
        examples = quickstart_examples(args.quickstart_output)
    with tempfile.TemporaryDirectory(prefix="gsnet-demo-") as work_dir:
        page = DemoPage(predictor, work_dir, max_classes=args.max_classes)
        app = build_app(page, note=model.note, classes=args.classes, examples=examples)
        app.launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            allowed_paths=sorted({str(Path(path).resolve().parent) for path, _ in examples}),
            theme=THEME,
            css=CSS,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
