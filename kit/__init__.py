"""kit: a Kaggle-style competition toolkit (k-fold CV, TTA ensembles, exports, a Gradio app)."""

__version__ = "0.1.0"
