"""Compute the empirical diagonal Fisher information of a torch model, for `--fisher`.

    from git_theta.fisher_tools import diagonal_fisher, save_fisher

    fisher = diagonal_fisher(model, loader)  # loader yields (inputs, targets) batches
    save_fisher(fisher, "fisher.safetensors")
    # then: git theta add model.safetensors --fisher fisher.safetensors

The empirical Fisher of parameter theta is F = (1/N) sum_n (d/dtheta log p(y_n | x_n))^2,
with y_n the observed label: the mean of squared per-example gradients of the loss. By
default the model returns logits and the loss is cross-entropy; pass `loss_fn(outputs,
targets)` for anything else (it must return the per-example negative log-likelihood summed
over the one example it is given). torch is imported only when a function is called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

Batch = tuple[Any, Any]


def diagonal_fisher(
    model: Any,
    batches: Iterable[Batch],
    *,
    loss_fn: Callable[[Any, Any], Any] | None = None,
    max_examples: int | None = None,
    expected: bool = False,
) -> dict[str, Any]:
    """{parameter name (as in `model.state_dict()`): float32 tensor of its diagonal Fisher}.

    Per-example gradients come from `torch.func` (vmap over grad) with the model in eval
    mode (no dropout); the model's training flag is restored afterwards. With
    `expected=True` (classifiers returning logits) the labels are not the observed ones but
    every class c, weighted by the model's p(c | x): the "true" Fisher, which stays
    informative where the model fits its training data perfectly (there the empirical
    gradients vanish). It costs one backward pass per class.
    """
    import torch
    import torch.nn.functional as fn
    from torch.func import functional_call, grad, vmap

    loss = loss_fn or (lambda out, y: fn.cross_entropy(out, y, reduction="sum"))
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    total = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in params.items()}

    def example_loss(p: Mapping[str, Any], x: Any, y: Any) -> Any:
        out = functional_call(model, (dict(p), buffers), (x.unsqueeze(0),))
        return loss(out, y.unsqueeze(0))

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for x, y in batches:
            if max_examples is not None:
                if seen >= max_examples:
                    break
                x, y = x[: max_examples - seen], y[: max_examples - seen]
            if expected:
                with torch.no_grad():
                    probs = torch.softmax(functional_call(model, (params, buffers), (x,)), -1)
                for c in range(probs.shape[-1]):
                    grads = per_example(params, x, torch.full_like(y, c))
                    w = probs[:, c]
                    for k, g in grads.items():
                        wk = w.reshape(-1, *([1] * (g.dim() - 1)))
                        total[k] += (wk * g.float().pow(2)).sum(dim=0)
            else:
                grads = per_example(params, x, y)
                for k, g in grads.items():
                    total[k] += g.float().pow(2).sum(dim=0)
            seen += int(x.shape[0])
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("diagonal_fisher got no examples")
    return {k: v / seen for k, v in total.items()}


def save_fisher(fisher: Mapping[str, Any], path: str | Path) -> None:
    """Write the Fisher diagonals as a safetensors file (float32, contiguous)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().float().contiguous() for k, v in fisher.items()}, str(path))
