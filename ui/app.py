"""Gradio app over everything in exports/: drop images, or fill a generated form, get the fold ensemble's answer.

    python -m ui.app [--port 7860] [--exports exports] [--trust-code]

It loads models only through kit.runtime (never the training code) and caches each loaded export. Each tabular
export gets a tab whose form is generated from the raw input contract in its meta.json (one input per column);
a tabular export that carries feature code loads only with --trust-code, otherwise its tab shows why it cannot.
Without --port the app takes the first free port from 7860 (or GRADIO_SERVER_PORT) and prints its address.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.data_classes import FileData, GradioRootModel, ListFiles
from pydantic import ValidationError

from kit import runtime
from kit.errors import KitError

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {"ONNX Runtime": "onnx", "TorchScript": "torchscript"}
BACKEND_NAMES = {code: name for name, code in BACKENDS.items()}  # what a loaded Predictor's .backend is called here


def find_exports(root: Path) -> tuple[dict[str, dict], list[str]]:
    """({competition: meta} for every readable export under `root`, [problems with the others])."""
    found, problems = {}, []
    for folder in sorted(p for p in Path(root).glob("*") if p.is_dir() and not p.name.startswith(".")):
        try:
            found[folder.name] = runtime.read_meta(folder)
        except KitError as exc:
            problems.append(f"{exc} (make export COMP={folder.name})")
    return found, problems


def devices() -> list[str]:
    """`auto` first (kit.runtime takes the GPU where the chosen backend can use one), then this machine's devices."""
    import torch

    return ["auto", "cpu", "cuda"] if torch.cuda.is_available() else ["auto", "cpu"]


def about(meta: dict) -> str:
    cv = meta.get("cv") or {}
    score = f"{cv['mean']:.4f} ± {cv['std']:.4f} (OOF {cv['oof']:.4f})" if cv else "n/a"
    tta = ", ".join(meta["tta"]["views"]) if meta.get("tta") else "none"
    metric = (meta.get("metric") or {}).get("name", "accuracy")
    target = meta.get("target") or {}
    count = len(meta["classes"])
    kind = f"{count} ordered classes" if meta["output"].get("ordinal") else f"regression of {target.get('column')}" \
        if runtime.predicts_values(meta) else f"{count} tags" if runtime.predicts_tags(meta) else f"{count} classes"
    return (f"**{meta['competition']}** ({meta['task']}, {kind}) · CV {metric} {score} · "
            f"{meta.get('folds', '?')} folds · TTA: {tta} · exported {meta.get('created', '?')}")


def loaded(predictor: runtime.Predictor) -> str:
    """The backend and device a Predictor really runs on (not the ones asked for)."""
    return f"{BACKEND_NAMES.get(predictor.backend, predictor.backend)}, {predictor.device}"


# ---- the image list: one file or a path string where a list is expected gets an answer, not a server error ----

@dataclass(frozen=True)
class NotUploaded:
    """An item of `files` that is not an uploaded file (e.g. a client's path string without handle_file)."""

    what: str


def readable(item: Any, predictor: runtime.Predictor, problems: list[str]) -> tuple[str, np.ndarray] | None:
    """(path, model input) of one dropped item, or None with the reason added to `problems`."""
    if isinstance(item, NotUploaded):
        problems.append(f"- `{item.what}`: not an uploaded file; send files as a list of uploads, e.g. "
                        "gradio_client's files=[handle_file(path)] (a path string is not read)")
        return None
    path = item if isinstance(item, str) else item.name
    try:
        return path, predictor.prepare([path])[0]
    except KitError as exc:
        problems.append(f"- `{Path(path).name}`: {exc}")
        return None


class AnyFiles(GradioRootModel):
    """The raw `files` payload, whatever its shape; dropped_files sorts it out."""

    root: Any


def dropped_files(label: str) -> gr.File:
    """gr.File(file_count="multiple") that takes one uploaded file as a one-item list, and passes anything that is
    not an uploaded file on as NotUploaded (classify names it) instead of failing Gradio's validation with a server
    error. Uploaded files still go through Gradio's upload-folder check and gr.File's own preprocess; a path string
    is never opened.

    Set on the instance: a gr.File subclass would make Gradio write a .pyi stub beside this file on import."""
    files = gr.File(file_count="multiple", label=label)
    files.data_model = AnyFiles  # Gradio validates the payload against this before preprocess
    schema = ListFiles.model_json_schema()  # documented as what it is meant to take: a list of files
    schema["additional_description"] = schema.pop("description", None)
    files.api_info = lambda: schema
    checked = files.preprocess  # gr.File's own public preprocess, kept: FileData in, its cached path out

    def preprocess(payload: AnyFiles | None) -> list[str | NotUploaded] | None:
        items = payload.root if payload is not None else None
        if items is None:
            return None
        out: list[str | NotUploaded] = []
        for item in items if isinstance(items, list) else [items]:
            try:
                upload = FileData.model_validate(item, context={"validate_meta": True})
            except (ValidationError, TypeError, ValueError):
                out.append(NotUploaded(Path(item).name if isinstance(item, str) else type(item).__name__))
            else:
                out.extend(checked(ListFiles(root=[upload])))  # file_count="multiple": a one-item list
        return out

    files.preprocess = preprocess
    return files


# ---- generated tabular forms ----

def _identifiers(names: list[str], reserved: set[str]) -> list[str]:
    """Column names as distinct Python identifiers (API parameter names): other characters become `_`."""
    out: list[str] = []
    for name in names:
        ident = re.sub(r"\W", "_", name) or "column"
        if ident[0].isdigit():
            ident = f"c_{ident}"
        base, n = ident, 1
        while ident in reserved or ident in out:
            ident, n = f"{base}_{n}", n + 1
        out.append(ident)
    return out


def _number(value: float | None, integer: bool) -> str:
    return "?" if value is None else str(int(value)) if integer else f"{value:g}"


def field(column: dict) -> gr.components.Component:
    """One form input for a column of meta.json["input"]["columns"]."""
    name, default, missing = column["name"], column.get("default"), bool(column.get("missing"))
    empty = "; empty = missing" + (", as in some training rows" if missing else "")
    if column.get("type") == "number":
        integer = bool(column.get("integer"))
        seen = f"seen {_number(column.get('min'), integer)} to {_number(column.get('max'), integer)} in training"
        value = None if default is None else int(default) if integer else default
        return gr.Number(value, label=name, precision=0 if integer else None,
                         info=f"{'integer, ' if integer else ''}{seen}, median {_number(default, integer)}{empty}")
    if column.get("categories"):
        choices: list[Any] = list(column["categories"])
        if missing:
            choices.append(("(missing)", ""))
        return gr.Dropdown(choices, value=default, label=name,
                           info=f"{len(column['categories'])} values seen in training"
                                + ("; (missing) = missing" if missing else ""))
    example = f", e.g. {default!r}" if default else ""
    return gr.Textbox(default or "", label=name, info=f"free text{example}{empty}")


def _cell(value: Any) -> Any:
    """A form value as a row value: empty inputs are missing values (None)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def tabular_endpoint(columns: list[dict], predict_row) -> Any:
    """fn(<one parameter per column, in meta.json's order>, backend, device) -> (probabilities, status), with a
    signature naming the columns, so that a gradio_client can pass the values by position or by name."""
    names = [c["name"] for c in columns]

    def predict(*values: Any):
        *cells, backend, device = values
        return predict_row({n: _cell(v) for n, v in zip(names, cells, strict=True)}, backend, device)

    idents = _identifiers(names, reserved={"backend", "device"})
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [inspect.Parameter(i, kind, default=field_default(c)) for i, c in zip(idents, columns, strict=True)]
    parameters += [inspect.Parameter("backend", kind, default="ONNX Runtime"),
                   inspect.Parameter("device", kind, default="auto")]
    predict.__signature__ = inspect.Signature(parameters)  # what Gradio documents and gradio_client fills in
    return predict


def field_default(column: dict) -> Any:
    default = column.get("default")
    if column.get("type") == "number" and column.get("integer") and default is not None:
        return int(default)
    return default


def api_name(competition: str) -> str:
    """The endpoint of a tabular export's form: predict_<competition, other characters as _>."""
    return "predict_" + re.sub(r"\W", "_", competition)


def build(exports: Path = ROOT / "exports", trust_code: bool = False) -> gr.Blocks:
    """The app; raises KitError when there is nothing to serve. `trust_code` lets tabular exports run the feature
    code they carry (kit.runtime.load(..., trust_code=True)); without it such an export's tab says how to opt in."""
    exports = Path(exports)
    metas, problems = find_exports(exports)
    for problem in problems:
        print(f"warning: skipping an export: {problem}", file=sys.stderr)
    if not metas:
        raise KitError(f"no usable exports in {exports}; train and export first: "
                       "make train COMP=food101-10 && make export COMP=food101-10")

    @functools.lru_cache(maxsize=8)
    def model(comp: str, backend: str, device: str) -> runtime.Predictor:
        return runtime.load(exports / comp, backend=BACKENDS.get(backend, backend), device=device,
                            trust_code=trust_code)

    with gr.Blocks(title="kit") as app:
        gr.Markdown("# kit · classify with the exported fold ensemble")
        image_comps = [c for c, m in metas.items() if runtime.takes_images(m)]
        if image_comps:
            image_tab({c: metas[c] for c in image_comps}, model)
        for comp, meta in metas.items():
            if not runtime.takes_images(meta):
                table_tab(comp, meta, model)
        with gr.Tab("About"):
            gr.Markdown("\n\n".join(about(m) for m in metas.values()))
            keys = ("target", "metric", "classes", "input", "tta", "cv", "parity", "versions")
            gr.Code(json.dumps({c: {k: m.get(k) for k in keys}
                                for c, m in metas.items()}, indent=1), language="json", label="meta.json")
    return app.queue(default_concurrency_limit=2, max_size=64)


def classifier(model, default_comp: str):
    """The /classify endpoint: top-k per image over the predictors `model(comp, backend, device)` loads."""
    # The API endpoint /classify takes these names; all but `files` have defaults, so a client may pass only files.
    def classify(files: list[str] | None, picture: str | None = None, competition: str = "",
                 backend: str = "ONNX Runtime", device: str = "auto", top_k: int = 5):
        """Top-k per image; unreadable files get a message, the rest are still classified."""
        if isinstance(files, (str, NotUploaded)):  # called directly with one item
            files = [files]
        files = [*(files or []), *([picture] if picture else [])]
        if not files:
            return [], {}, "Drop one or more images first."
        try:
            predictor = model(competition or default_comp, backend, device)
        except KitError as exc:
            return [], {}, f"**Cannot load the export:** {exc}"
        gallery, first, problems, answered = [], {}, [], 0
        start = time.perf_counter()
        # A chunk the runtime's memory budget sizes at a time: decoded, answered and let go, so a drop of any size
        # holds one chunk of photos.
        for at in range(0, len(files), predictor.chunk):
            ok = [x for x in (readable(item, predictor, problems) for item in files[at : at + predictor.chunk]) if x]
            if not ok:
                continue
            for (path, _), p in zip(ok, predictor.outputs([x for _, x in ok]), strict=True):
                caption, answer = answered_as(predictor, p, int(top_k))
                # The uploaded file itself: already in Gradio's cache, so concurrent requests never rewrite it.
                gallery.append((path, caption))
                first = first or answer
            answered += len(ok)
        if answered:
            per_image_ms = (time.perf_counter() - start) * 1000 / answered
            status = f"{answered} image(s) classified in {per_image_ms:.1f} ms each ({loaded(predictor)})."
        else:
            status = "No readable image."
        if problems:
            status += "\n\nSkipped:\n" + "\n".join(problems)
        return gallery, first, status
    return classify


def answered_as(predictor: runtime.Predictor, p: np.ndarray, top_k: int) -> tuple[str, dict | str]:
    """One image's (gallery caption, label): its top class and the top-k classes' probabilities; every tag that
    reaches its threshold with its probability (none: the likeliest tag, captioned "no tag"); its ordered class (with
    the value it falls from); or its value."""
    if predictor.ordinal:
        name = predictor.classes[int(predictor.class_index(p[:1])[0])]
        return f"{name} ({p[0]:.2f})", name
    if predictor.regression:
        value = f"{(predictor.meta.get('target') or {}).get('column', 'value')} {p[0]:.4g}"
        return value, value
    if predictor.tags:
        shown = [i for i in np.argsort(p)[::-1] if p[i] >= predictor.thresholds[i]]
        caption = " ".join(predictor.classes[i] for i in shown) or "no tag"
        return caption, {predictor.classes[i]: float(p[i]) for i in shown or [int(p.argmax())]}
    best = np.argsort(p)[::-1][:top_k]
    return f"{predictor.classes[best[0]]} {p[best[0]]:.0%}", {predictor.classes[i]: float(p[i]) for i in best}


def image_tab(metas: dict[str, dict], model) -> None:
    """The Images tab: drop photos (or take one), get each one's top classes."""
    comps = list(metas)
    with gr.Tab("Images"):
        with gr.Row():
            with gr.Column():
                comp = gr.Dropdown(comps, value=comps[0], label="Competition")
                backend = gr.Radio(list(BACKENDS), value="ONNX Runtime", label="Backend")
                device = gr.Radio(devices(), value="auto", label="Device")
                top_k = gr.Slider(1, 10, value=5, step=1, label="Top k")
                # No file_types: Gradio would refuse a whole drop for one non-image file, before classify
                # could skip just that file with its reason.
                files = dropped_files("Drop images here")
                with gr.Accordion("Or one picture from the webcam or clipboard", open=False):
                    picture = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", label="Picture")
                button = gr.Button("Classify", variant="primary")
            with gr.Column():
                label = gr.Label(label="First image: top classes, its tags or its value")
                gallery = gr.Gallery(label="Images and their answer", columns=3, height="auto")
                status = gr.Markdown(label="status")
                info = gr.Markdown(about(metas[comps[0]]))
        comp.change(lambda c: about(metas[c]), comp, info, api_visibility="private")  # UI only, not an API
        classify = classifier(model, comps[0])
        inputs, outputs = [files, picture, comp, backend, device, top_k], [gallery, label, status]
        button.click(classify, inputs, outputs, api_name="classify")
        # Classify on drop (and on an example, a webcam shot or clearing): no click needed. The same function as
        # /classify, so not a second endpoint.
        gr.on([files.change, picture.change], classify, inputs, outputs, api_visibility="private")
        examples = sorted((ROOT / "competitions" / comps[0] / "data" / "test").glob("*.jpg"))[:4]
        if examples:
            gr.Examples([[[str(e)]] for e in examples], inputs=[files], label="Examples (shipped sample)")


def table_tab(comp: str, meta: dict, model) -> None:
    """A tabular export's tab: one field per input column, the predicted value or the class probabilities."""
    columns = meta["input"].get("columns") or []

    def predict_row(row: dict, backend: str, device: str):
        try:
            predictor = model(comp, backend, device)
        except KitError as exc:
            return {}, f"**Cannot load the export:** {exc}"
        start = time.perf_counter()
        try:
            p = predictor.outputs(row)[0]
        except KitError as exc:
            return {}, f"**Cannot predict:** {exc}"
        ms = (time.perf_counter() - start) * 1000
        answer = f"{p[0]:.6g}" if predictor.regression and not predictor.ordinal else \
            answered_as(predictor, p, len(predictor.classes))[1]
        return answer, f"Answered in {ms:.1f} ms ({loaded(predictor)})."

    with gr.Tab(comp):
        with gr.Row():
            with gr.Column():
                fields = [field(c) for c in columns]
                backend = gr.Radio(list(BACKENDS), value="ONNX Runtime", label="Backend")
                device = gr.Radio(devices(), value="auto", label="Device")
                button = gr.Button("Predict", variant="primary")
            with gr.Column():
                regression = runtime.predicts_values(meta)
                label = gr.Label(label=f"Predicted {meta['target']['column']}" if regression
                                 else "Class probabilities", num_top_classes=len(meta["classes"]) or None)
                status = gr.Markdown(load_problem(comp, columns, model), label="status")
                gr.Markdown(about(meta))
        button.click(tabular_endpoint(columns, predict_row), [*fields, backend, device], [label, status],
                     api_name=api_name(comp))


def load_problem(comp: str, columns: list[str], model) -> str:
    """Why a tabular export cannot serve (shown in its tab from the start), or ''."""
    if not columns:
        return (f"**Cannot serve this export:** its meta.json lists no input columns (an older export); "
                f"re-run `make export COMP={comp}`")
    try:
        model(comp, "ONNX Runtime", "auto")
    except KitError as exc:
        return f"**Cannot load the export:** {exc}"
    return ""


def serve(app: gr.Blocks, port: int | None = None) -> str:
    """Start `app` on 127.0.0.1 without blocking and return its address. Without `port`, Gradio takes the first
    port from 7860 (or GRADIO_SERVER_PORT) on which its server really starts, so there is no pick-then-bind race."""
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               allowed_paths=[str(ROOT / "competitions")])
    return app.local_url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Gradio app over the exported models")
    p.add_argument("--port", type=int, default=None,
                   help="port on 127.0.0.1 (default: the first free one from 7860, or from GRADIO_SERVER_PORT)")
    p.add_argument("--exports", type=Path, default=ROOT / "exports")
    p.add_argument("--trust-code", action="store_true",
                   help="let tabular exports run the feature code they carry (features.py, checked against the "
                        "sha256 in its meta.json); only for exports you made or trust")
    args = p.parse_args(argv)
    try:
        app = build(args.exports, trust_code=args.trust_code)
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        url = serve(app, args.port)
    except OSError as exc:
        where = f"on port {args.port}" if args.port else "on a free port"
        print(f"error: cannot serve {where} ({exc}); choose another port (make ui PORT=...), or leave --port out "
              "to take the first free one from 7860", file=sys.stderr)
        return 2
    print(f"kit app: {url}", flush=True)
    app.block_thread()  # until Ctrl-C
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
