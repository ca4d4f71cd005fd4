"""Warnings that only matter when training: held back while a model is built, raised when training starts.

nerfstudio builds a model the same way for ``ns-train``, ``ns-viewer``, ``ns-render`` and ``ns-eval`` and loads the
checkpoint afterwards, so a warning such as "no ImageNet weights, training the encoder from scratch" is wrong for
every command but ``ns-train``. Models collect such warnings with :func:`collect` while they are built and raise them
with :func:`emit` from ``get_param_groups``, which only the trainer calls (it builds the optimizers).
"""

import warnings
from contextlib import contextmanager
from typing import Iterator, List


@contextmanager
def collect(store: List[warnings.WarningMessage]) -> Iterator[None]:
    """Record the warnings raised inside the block into ``store`` instead of showing them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    store.extend(caught)


def emit(store: List[warnings.WarningMessage]) -> None:
    """Raise the collected warnings (once: ``store`` is emptied)."""
    while store:
        message = store.pop(0)
        warnings.warn_explicit(message.message, message.category, message.filename, message.lineno)
