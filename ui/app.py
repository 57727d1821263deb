"""Gradio app over everything in exports/: drop images, get the fold ensemble's answer.

    python -m ui.app [--port 7860] [--exports exports]

It loads models only through kit.runtime (never the training code) and caches each loaded export.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import gradio as gr
import numpy as np

from kit import runtime
from kit.errors import KitError

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = {"ONNX Runtime": "onnx", "TorchScript": "torchscript"}


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
    return (f"**{meta['competition']}** ({meta['task']}, {len(meta['classes'])} classes) · CV accuracy {score} · "
            f"{meta.get('folds', '?')} folds · TTA: {tta} · exported {meta.get('created', '?')}")


def build(exports: Path = ROOT / "exports") -> gr.Blocks:
    """The app; raises KitError when there is nothing to serve."""
    metas, problems = find_exports(exports)
    for problem in problems:
        print(f"warning: skipping an export: {problem}", file=sys.stderr)
    if not metas:
        raise KitError(f"no usable exports in {exports}; train and export first: "
                       "make train COMP=food101-10 && make export COMP=food101-10")
    image_comps = [c for c, m in metas.items() if m["task"] == "image"]
    tabular = next((c for c, m in metas.items() if m["task"] == "tabular"), None)

    @functools.lru_cache(maxsize=8)
    def model(comp: str, backend: str, device: str) -> runtime.Predictor:
        return runtime.load(exports / comp, backend=BACKENDS.get(backend, backend), device=device)

    # The API endpoint /classify takes these names; all but `files` have defaults, so a client may pass only files.
    def classify(files: list[str] | None, picture: str | None = None, competition: str = "",
                 backend: str = "ONNX Runtime", device: str = "auto", top_k: int = 5):
        """Top-k per image; unreadable files get a message, the rest are still classified."""
        files = [*(files or []), *([picture] if picture else [])]
        if not files:
            return [], {}, "Drop one or more images first."
        try:
            predictor = model(competition or image_comps[0], backend, device)
        except KitError as exc:
            return [], {}, f"**Cannot load the export:** {exc}"
        paths = [f if isinstance(f, str) else f.name for f in files]
        gallery, first, problems, ok = [], {}, [], []
        for path in paths:
            try:
                ok.append((path, predictor.prepare([path])[0]))
            except KitError as exc:
                problems.append(f"- `{Path(path).name}`: {exc}")
        if ok:
            start = time.perf_counter()
            probs = predictor.run(np.stack([x for _, x in ok]))  # one batched call for all readable images
            per_image_ms = (time.perf_counter() - start) * 1000 / len(ok)
            for (path, _), p in zip(ok, probs, strict=True):
                best = np.argsort(p)[::-1][: int(top_k)]
                label = {predictor.classes[i]: float(p[i]) for i in best}
                # The uploaded file itself: already in Gradio's cache, so concurrent requests never rewrite it.
                gallery.append((path, f"{predictor.classes[best[0]]} {p[best[0]]:.0%}"))
                first = first or label
            status = f"{len(ok)} image(s) classified in {per_image_ms:.1f} ms each ({backend}, {predictor.device})."
        else:
            status = "No readable image."
        if problems:
            status += "\n\nSkipped:\n" + "\n".join(problems)
        return gallery, first, status

    def survival(comp, pclass, sex, age, fare, sibsp, parch, embarked, title, cabin, backend, device):
        surname_title = {"Mr": "Mr.", "Mrs": "Mrs.", "Miss": "Miss.", "Master": "Master.", "Rare": "Dr."}[title]
        row = {"Pclass": int(pclass), "Name": f"Doe, {surname_title} Pat", "Sex": sex, "Age": age,
               "SibSp": int(sibsp), "Parch": int(parch), "Ticket": "UI", "Fare": fare, "Cabin": cabin or None,
               "Embarked": embarked}
        try:
            p = model(comp, backend, device).predict_proba(row)[0]
        except KitError as exc:
            return {}, f"**Error:** {exc}"
        return {"survived": float(p[1]), "died": float(p[0])}, ""

    with gr.Blocks(title="kit") as app:
        gr.Markdown("# kit · classify with the exported fold ensemble")
        if image_comps:
            with gr.Tab("Images"):
                with gr.Row():
                    with gr.Column():
                        comp = gr.Dropdown(image_comps, value=image_comps[0], label="Competition")
                        backend = gr.Radio(list(BACKENDS), value="ONNX Runtime", label="Backend")
                        device = gr.Radio(devices(), value="auto", label="Device")
                        top_k = gr.Slider(1, 10, value=5, step=1, label="Top k")
                        # No file_types: Gradio would refuse a whole drop for one non-image file, before classify
                        # could skip just that file with its reason.
                        files = gr.File(file_count="multiple", label="Drop images here")
                        with gr.Accordion("Or one picture from the webcam or clipboard", open=False):
                            picture = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath",
                                              label="Picture")
                        button = gr.Button("Classify", variant="primary")
                    with gr.Column():
                        label = gr.Label(label="First image: top classes")
                        gallery = gr.Gallery(label="Images and their top class", columns=3, height="auto")
                        status = gr.Markdown(label="status")
                        info = gr.Markdown(about(metas[image_comps[0]]))
                comp.change(lambda c: about(metas[c]), comp, info, api_visibility="private")  # UI only, not an API
                button.click(classify, [files, picture, comp, backend, device, top_k], [gallery, label, status],
                             api_name="classify")
                examples = sorted((ROOT / "competitions" / image_comps[0] / "data" / "test").glob("*.jpg"))[:4]
                if examples:
                    gr.Examples([[[str(e)]] for e in examples], inputs=[files], label="Examples (shipped sample)")
        if tabular:
            with gr.Tab("Titanic"):
                with gr.Row():
                    with gr.Column():
                        t_comp = gr.State(tabular)
                        pclass = gr.Radio(["1", "2", "3"], value="3", label="Class")
                        sex = gr.Radio(["female", "male"], value="male", label="Sex")
                        title = gr.Dropdown(["Mr", "Mrs", "Miss", "Master", "Rare"], value="Mr", label="Title")
                        age = gr.Number(30, label="Age")
                        fare = gr.Number(8.05, label="Fare")
                        sibsp = gr.Number(0, label="Siblings/spouses aboard", precision=0)
                        parch = gr.Number(0, label="Parents/children aboard", precision=0)
                        embarked = gr.Radio(["S", "C", "Q"], value="S", label="Embarked")
                        cabin = gr.Textbox("", label="Cabin (optional)")
                        t_backend = gr.Radio(list(BACKENDS), value="ONNX Runtime", label="Backend")
                        t_device = gr.Radio(devices(), value="auto", label="Device")
                        t_button = gr.Button("Predict", variant="primary")
                    with gr.Column():
                        t_label = gr.Label(label="Survival probability")
                        t_status = gr.Markdown(label="status")
                        gr.Markdown(about(metas[tabular]))
                t_button.click(survival, [t_comp, pclass, sex, age, fare, sibsp, parch, embarked, title, cabin,
                                          t_backend, t_device], [t_label, t_status], api_name="survival")
        with gr.Tab("About"):
            gr.Markdown("\n\n".join(about(m) for m in metas.values()))
            gr.Code(json.dumps({c: {k: m.get(k) for k in ("classes", "input", "tta", "cv", "parity", "versions")}
                                for c, m in metas.items()}, indent=1), language="json", label="meta.json")
    return app.queue(default_concurrency_limit=2, max_size=64)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Gradio app over the exported models")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--exports", type=Path, default=ROOT / "exports")
    args = p.parse_args(argv)
    try:
        app = build(args.exports)
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"kit app: http://127.0.0.1:{args.port}", flush=True)
    app.launch(server_name="127.0.0.1", server_port=args.port, allowed_paths=[str(ROOT / "competitions")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
