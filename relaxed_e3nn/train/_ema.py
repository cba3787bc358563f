r"""Exponential moving average of a model's weights.

After every optimisation step the average :math:`\bar w` moves towards the current weights
:math:`w`: :math:`\bar w \leftarrow \beta \bar w + (1 - \beta) w` with the decay :math:`\beta`.
"""
import contextlib
from typing import Dict, Iterable, Iterator, Optional

import torch

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage:
    """Averaged copies of the floating-point parameters and buffers of a module.

    Parameters
    ----------
    model : torch.nn.Module
        The module whose state is averaged (its current state is the starting average).
    decay : float
        :math:`\\beta` in ``[0, 1)``.
    exclude : iterable of str
        State entries that are not averaged: values set by fits rather than by the optimizer
        (a model's ``atomic_energies`` and ``scale``); :meth:`copy_to` and :meth:`swapped`
        leave them as the model holds them.
    """

    def __init__(self, model: torch.nn.Module, decay: float, exclude: Iterable[str] = ()):
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"ExponentialMovingAverage: decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.exclude = frozenset(exclude)
        self._shadow = {k: v.detach().clone() for k, v in model.state_dict().items()
                        if v.is_floating_point() and k not in self.exclude}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average one step towards ``model``'s current state."""
        for k, v in model.state_dict().items():
            if k in self._shadow:
                self._shadow[k].lerp_(v.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Overwrite ``model``'s averaged entries with the average."""
        state = model.state_dict()
        for k, v in self._shadow.items():
            state[k].copy_(v)

    @contextlib.contextmanager
    def swapped(self, model: torch.nn.Module) -> Iterator[None]:
        """Run the body with the averaged weights in ``model``; its whole own state is restored after."""
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                state = model.state_dict()
                for k, v in saved.items():
                    state[k].copy_(v)

    def state_dict(self) -> Dict[str, object]:
        """``{"decay", "shadow"}`` (tensors and plain values: checkpoint-safe)."""
        return {"decay": self.decay, "shadow": self._shadow}

    def load_state_dict(self, state: Dict[str, object], device: Optional[torch.device] = None) -> None:
        """Restore what :meth:`state_dict` returned (moving the tensors to ``device``)."""
        self.decay = float(state["decay"])
        self._shadow = {k: v.to(device).clone() for k, v in state["shadow"].items() if k not in self.exclude}
