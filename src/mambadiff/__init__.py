"""mambadiff.

``from mambadiff import Paraphraser`` loads a trained diffusion seq2seq model for generation
(see `mambadiff.tasks.paraphrase`); it is imported on first use, so ``import mambadiff`` stays light.
"""
__version__ = "0.1.0"

__all__ = ["Paraphraser", "__version__"]


def __getattr__(name: str):
    if name == "Paraphraser":
        from mambadiff.tasks.paraphrase import Paraphraser
        return Paraphraser
    raise AttributeError(f"module 'mambadiff' has no attribute {name!r}")
