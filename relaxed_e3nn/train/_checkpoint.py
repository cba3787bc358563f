"""Training checkpoints: one atomic file holding everything needed to continue bit for bit."""
import hashlib
import io
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from relaxed_e3nn._atomic import atomic_write

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "save_checkpoint", "load_checkpoint",
           "rng_state", "set_rng_state"]

CHECKPOINT_FORMAT = "relaxed_e3nn.train_checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED_KEYS = ("config", "model", "optimizer", "epoch", "rng", "split", "history")


def save_checkpoint(path: Union[str, os.PathLike], state: Dict[str, Any]) -> None:
    """Write ``state`` atomically (temp file, fsync, rename) with a format marker and a checksum.

    The file is a ``torch.save`` of ``{"format", "format_version", "sha256", "payload"}`` where
    ``payload`` holds the bytes of ``torch.save(state)`` and ``sha256`` their digest, so that a
    flipped or zeroed byte anywhere is detected on loading. A process killed at any moment
    leaves either the previous checkpoint or the new one.
    """
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"save_checkpoint: state lacks {missing}")
    inner = io.BytesIO()
    torch.save(dict(state), inner)
    raw = inner.getvalue()
    outer = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
             "sha256": hashlib.sha256(raw).hexdigest(),
             "payload": torch.frombuffer(bytearray(raw), dtype=torch.uint8)}
    buffer = io.BytesIO()  # serialised first: torch.save turns a failing write into a RuntimeError
    torch.save(outer, buffer)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())


def load_checkpoint(path: Union[str, os.PathLike], map_location="cpu") -> Dict[str, Any]:
    """Read a training checkpoint written by :func:`save_checkpoint`.

    Loads with ``torch.load(weights_only=True)`` (tensors and plain containers only: a
    checkpoint cannot execute code).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        The file is truncated or corrupt, is not a relaxed_e3nn training checkpoint (e.g. a
        saved model or a foreign ``torch.save`` file), or has a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    outer = _torch_load(path.read_bytes(), path, map_location="cpu")
    if not isinstance(outer, dict) or outer.get("format") != CHECKPOINT_FORMAT:
        found = outer.get("format") if isinstance(outer, dict) else type(outer).__name__
        raise ValueError(
            f"{str(path)!r} is not a relaxed_e3nn training checkpoint (format marker {found!r}, "
            f"expected {CHECKPOINT_FORMAT!r}); a final model is read with relaxed_e3nn.load"
        )
    version = outer.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format version {version!r}; this relaxed_e3nn reads "
            f"versions <= {CHECKPOINT_VERSION}"
        )
    payload, digest = outer.get("payload"), outer.get("sha256")
    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8 or not isinstance(digest, str):
        raise ValueError(f"checkpoint {str(path)!r} is incomplete: no checksummed payload")
    raw = payload.contiguous().numpy().tobytes()
    if hashlib.sha256(raw).hexdigest() != digest:
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: its checksum does not match its content")
    state = _torch_load(raw, path, map_location=map_location)
    missing = [k for k in _REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} is incomplete: missing {missing}")
    return state


def _torch_load(raw: bytes, path: Path, map_location):
    try:
        return torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            KeyError, IndexError, TypeError, AttributeError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt, truncated or not a relaxed_e3nn training checkpoint "
            f"({type(err).__name__}: {first})"
        ) from None


def rng_state() -> Dict[str, Any]:
    """The torch, numpy and python RNG states as tensors and plain containers."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state((
        np_state["name"],
        np_state["keys"].numpy().astype(np.uint32),
        np_state["pos"],
        np_state["has_gauss"],
        np_state["cached_gaussian"],
    ))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except RuntimeError:
            pass  # different number of visible GPUs: the CUDA streams are not used for training randomness
