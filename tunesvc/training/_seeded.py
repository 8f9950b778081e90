"""Random draws as pure functions of a seed and a counter: the dropout masks and data
shuffles of :func:`tunesvc.fit`, which a population of trials reproduces member by member.

``torch.nn.Dropout`` draws its masks from the global RNG, one call after another, so the masks
of a trial depend on everything else that drew before them, and many trials stacked into one
tensor cannot each get their own stream. Here the mask of every element is a hash of a 32-bit
key per optimizer step (from the trial's seed and the step number), the layer's index and the
element's position in the layer's input: integer arithmetic only, exact on every device, so a
trial gets the same masks alone or as one member of a stacked population, whatever the other
members do. An epoch's shuffle is the order of the hashes of the row numbers under one key
drawn from the trial's shuffle generator: one draw per epoch and one sort, on the device, for
any number of members (``torch.randperm`` per member would cost a CPU call each).

The hash is a counter-based generator in the manner of SplitMix: a Weyl sequence over the
elements, then Chris Wellons' ``lowbias32`` finalizer. It runs on int32 tensors, whose
products wrap modulo 2**32 on the CPU and CUDA alike (a test holds the results to a
pure-Python reference); on the CPU it is cheaper than ``torch.nn.Dropout``'s Bernoulli draw.

Example::

    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 4))
    swap = DropoutSwap(model)                 # nn.Dropout -> SeededDropout, same rate
    keys = swap.layer_keys(step_keys(seed_words([7]), torch.tensor([0]), steps=10)[0])
    for step in range(10):
        swap.set_keys([k[step] for k in keys])  # before each training batch
        ...
    swap.restore()                            # the nn.Dropout modules again
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tunesvc._errors import TrainingError

_THRESHOLD_BITS = 24  # a mask compares 24 hash bits with round(rate * 2**24)


def _signed(word: int) -> int:
    """A 32-bit word as the int32 value with the same bits."""
    word &= 0xFFFFFFFF
    return word - (1 << 32) if word >= 1 << 31 else word


_GOLDEN = _signed(0x9E3779B9)  # 2**32 / phi: the Weyl step
_MUL1, _MUL2 = _signed(0x7FEB352D), _signed(0x846CA68B)  # lowbias32's multipliers


def _mix32(x: Tensor) -> Tensor:
    """lowbias32 on int32 tensors: shifts are logical (the sign bits masked off), products wrap."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _MUL1
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _MUL2
    return x ^ ((x >> 16) & 0xFFFF)


def _seed_word(seed: int) -> int:
    """SplitMix64 of any Python int seed, folded to 32 bits."""
    z = (seed * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    return _signed(z ^ (z >> 32))


def seed_words(seeds: Sequence[int], device: torch.device | None = None) -> Tensor:
    """One 32-bit word per seed (int32 tensor of ``len(seeds)``), the root of its masks."""
    return torch.tensor([_seed_word(s) for s in seeds], dtype=torch.int32, device=device)


def shuffle_key(generator: torch.Generator) -> int:
    """One epoch's shuffle key, drawn from a trial's shuffle generator (advanced by one draw)."""
    return int(torch.randint(-(2**31), 2**31, (), generator=generator, dtype=torch.int64))


def shuffle_order(keys: Tensor, rows: int) -> Tensor:
    """One permutation of ``range(rows)`` per key (int32 ``(K,)``): ``(K, rows)`` int64, the
    row numbers ordered by their hash under the key (ties, rare, keep row order)."""
    words = element_words((rows,), keys.device)
    return torch.argsort(_mix32(words + _mix32(keys).unsqueeze(1)), dim=1, stable=True)


def step_keys(words: Tensor, first_step: Tensor, steps: int) -> Tensor:
    """Keys of ``steps`` consecutive optimizer steps per member: ``(len(words), steps)``.

    ``first_step`` holds each member's global step number (epochs done times batches per
    epoch) of the first of them; a member's key of step ``s`` depends only on its seed and ``s``.
    """
    counter = first_step.to(device=words.device, dtype=torch.int32).unsqueeze(1) + torch.arange(
        steps, dtype=torch.int32, device=words.device
    )
    return _mix32(words.unsqueeze(1) ^ _mix32(counter * _GOLDEN + _signed(0x3C6EF372)))


def layer_keys(keys: Tensor, layer: int) -> Tensor:
    """Step keys (any shape) made the keys of dropout layer number ``layer``."""
    return _mix32(keys + _signed((layer + 1) * 0x85EBCA77))


class SeededDropout(nn.Module):
    """``nn.Dropout`` with masks hashed from ``key``, the :func:`layer_keys` of the step, set
    before each training batch.

    ``threshold`` and ``scale`` hold the rate as the mask compares it and the factor kept
    elements are multiplied by (``1 / (1 - p)``, 0 for ``p = 1``); they are buffers, not
    Python floats, so that a population stacks one per member. None of the three is saved in
    a state dict. ``layer`` tells the dropout layers of one model apart. ``p`` is ``None`` in
    a population's shared module, whose members each bring their own rate.
    """

    def __init__(self, p: float | None, layer: int) -> None:
        super().__init__()
        if p is not None and not 0.0 <= p <= 1.0:
            raise TrainingError(f"dropout probability must be in [0, 1], got p = {p!r}")
        self.p = p
        self.layer = layer
        self._words: dict[tuple[int, ...], Tensor] = {}  # element_words per input shape
        self.key: Tensor
        self.threshold: Tensor
        self.scale: Tensor
        self.register_buffer("key", torch.zeros((), dtype=torch.int32), persistent=False)
        self.register_buffer("threshold", rate_threshold(p or 0.0), persistent=False)
        self.register_buffer("scale", rate_scale(p or 0.0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        words = self._words.get(tuple(x.shape))
        if words is None or words.device != x.device:
            words = self._words[tuple(x.shape)] = element_words(tuple(x.shape), x.device)
        return seeded_dropout(x, self.key, self.threshold, self.scale, words)

    def extra_repr(self) -> str:
        return f"p={self.p}, layer={self.layer}"


def rate_threshold(p: float) -> Tensor:
    """The integer a mask's hash bits are compared with for dropout probability ``p``."""
    return torch.tensor(round(p * 2**_THRESHOLD_BITS), dtype=torch.int32)


def rate_scale(p: float) -> Tensor:
    """What kept elements are multiplied by: ``1 / (1 - p)``, 0 when everything is dropped."""
    return torch.tensor(1.0 / (1.0 - p) if p < 1.0 else 0.0, dtype=torch.float64)


def element_words(shape: tuple[int, ...], device: torch.device) -> Tensor:
    """Each element's position times the Weyl step, mod 2**32 (int32 of ``shape``): the same
    for every key, so callers keep one per shape."""
    positions = torch.arange(math.prod(shape), dtype=torch.int32, device=device)
    return (positions * _GOLDEN).view(shape)


def seeded_dropout(
    x: Tensor, key: Tensor, threshold: Tensor, scale: Tensor, words: Tensor
) -> Tensor:
    """``x`` with each element zeroed with probability ``threshold / 2**24`` and the others
    multiplied by ``scale``; which ones is a pure function of the layer's ``key`` and the
    element's position in one member's input.

    ``words`` is :func:`element_words` of one member's input shape. For one model ``key``,
    ``threshold`` and ``scale`` are 0-d (or batched by ``torch.func.vmap``); for a stack of
    members along the first dimension of ``x`` they are shaped to broadcast over it, e.g.
    ``(K, 1, 1)`` for ``x`` of ``(K, B, H)``.
    """
    bits = _mix32(words + key)
    keep = ((bits >> (32 - _THRESHOLD_BITS)) & ((1 << _THRESHOLD_BITS) - 1)) >= threshold
    return x * (keep.to(x.dtype) * scale.to(x.dtype))


class DropoutSwap:
    """The :class:`SeededDropout` layers that replaced a model's ``nn.Dropout`` modules,
    numbered in ``named_modules`` order; :meth:`restore` puts the originals back."""

    def __init__(self, model: nn.Module) -> None:
        self.layers: list[SeededDropout] = []
        self._replaced: list[tuple[nn.Module, str, nn.Module, SeededDropout]] = []
        for path, child in list(model.named_modules()):  # numbered in named_modules order
            if type(child) is nn.Dropout:
                where, _, name = path.rpartition(".")
                parent = model.get_submodule(where)
                seeded = SeededDropout(float(child.p), len(self.layers))
                seeded.train(child.training)
                setattr(parent, name, seeded)
                self.layers.append(seeded)
                self._replaced.append((parent, name, child, seeded))

    def layer_keys(self, keys: Tensor) -> list[Tensor]:
        """Each layer's :func:`layer_keys` of the step ``keys`` (computed once an epoch)."""
        return [layer_keys(keys, layer.layer) for layer in self.layers]

    def set_keys(self, keys: Sequence[Tensor]) -> None:
        """Give each layer its key of the coming optimizer step."""
        for layer, key in zip(self.layers, keys, strict=True):
            layer.key.copy_(key)

    def restore(self) -> None:
        for parent, name, original, seeded in self._replaced:
            original.train(seeded.training)
            setattr(parent, name, original)
        self._replaced.clear()
