"""The C core through the binding against PyTorch CPU: forward logits, loss, input gradient, weight and bias
gradients, the importance sums (dense gradient at pruned weights too) and SGD with momentum and weight decay,
for the PruneFL Conv-2 and an MLP, dense and sparse, at several densities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunefl_common.model_spec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU
from prunefl_edge.engine import Network, SGDConfig

torch.set_num_threads(2)

CONV2 = ModelSpec(
    (1, 28, 28),
    (Conv2d(32, (5, 5), padding=(2, 2)), ReLU(), MaxPool2d((2, 2)), Conv2d(64, (5, 5), padding=(2, 2)), ReLU(),
     MaxPool2d((2, 2)), Flatten(), Linear(2048), ReLU(), Linear(62)),
    name="conv2",
)
assert CONV2.num_parameters == 6_603_710  # PruneFL's FEMNIST Conv-2
MLP = ModelSpec((1, 8, 8), (Flatten(), Linear(48), ReLU(), Linear(32, bias=False), ReLU(), Linear(10)), name="mlp")


def torch_model(spec: ModelSpec) -> torch.nn.Sequential:
    mods: list[torch.nn.Module] = []
    shapes = spec.shapes()
    for i, layer in enumerate(spec.layers):
        c_in = shapes[i][0]
        if isinstance(layer, Linear):
            mods.append(torch.nn.Linear(c_in, layer.out_features, bias=layer.bias))
        elif isinstance(layer, Conv2d):
            mods.append(torch.nn.Conv2d(c_in, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                                        bias=layer.bias))
        elif isinstance(layer, MaxPool2d):
            mods.append(torch.nn.MaxPool2d(layer.kernel_size, layer.effective_stride, layer.padding))
        elif isinstance(layer, ReLU):
            mods.append(torch.nn.ReLU())
        else:
            mods.append(torch.nn.Flatten())
    return torch.nn.Sequential(*mods)


def paired(spec: ModelSpec, density: float, sparse: bool, seed: int = 0) -> tuple[Network, torch.nn.Sequential]:
    """Our network and a torch model with the same weights, pruned by the same random masks."""
    net = Network(spec, threads=2)
    net.init_weights(seed)
    rng = np.random.default_rng(seed + 1)
    masks = {i: rng.random(net.param_shapes[i].shape) < density for i in net.weight_params}
    weights = net.get_weights()
    net.set_masks(masks)
    net.set_weights(weights)  # newly kept = all kept: set the values again after the mask
    for layer in spec.prunable_layers():
        net.set_sparse_threshold(layer, 1.0 if sparse else 0.0)
        assert net.layer_info(layer).is_sparse == sparse
    model = torch_model(spec)
    with torch.no_grad():
        for p, w in zip(model.parameters(), net.get_weights()):
            p.copy_(torch.from_numpy(w))
    return net, model


def batch(spec: ModelSpec, n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, *spec.input_shape), dtype=np.float32), rng.integers(0, spec.num_classes, n)


def assert_close(ours: np.ndarray, ref: np.ndarray, what: str, rtol: float = 2e-4) -> None:
    scale = float(np.abs(ref).max()) or 1.0
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * scale, err_msg=what)


CASES = [(spec, d, s) for spec in (MLP, CONV2) for d in (1.0, 0.5, 0.1, 0.01) for s in (False, True)]


@pytest.mark.parametrize("spec,density,sparse", CASES,
                         ids=[f"{c[0].name}-d{c[1]}-{'sparse' if c[2] else 'dense'}" for c in CASES])
def test_forward_and_gradients_match_torch(spec: ModelSpec, density: float, sparse: bool) -> None:
    net, model = paired(spec, density, sparse)
    x, y = batch(spec, 20)
    net.enable_input_grad(True)
    net.set_importance(True)
    res = net.forward_backward(x, y)

    xt = torch.from_numpy(x).requires_grad_(True)
    logits = model(xt)
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
    loss.backward()

    assert_close(net.logits(x), logits.detach().numpy(), "logits")
    assert res.loss == pytest.approx(loss.item(), rel=1e-5)
    assert res.correct == int((logits.argmax(1).numpy() == y).sum())
    assert_close(net.input_grad(), xt.grad.numpy(), "input gradient")
    masks = net.get_masks()
    for i, (g, s, p) in enumerate(zip(net.grads(), net.grad_sums(), model.parameters())):
        ref = p.grad.numpy()
        keep = masks.get(i, np.ones(ref.shape, bool))
        assert_close(g, np.where(keep, ref, 0.0), f"gradient of {net.param_shapes[i].name}")
        assert_close(s, ref, f"importance sum of {net.param_shapes[i].name} (pruned positions included)")


@pytest.mark.parametrize("sparse", [False, True])
def test_sgd_with_momentum_and_weight_decay_matches_torch(sparse: bool) -> None:
    net, model = paired(MLP, 0.3, sparse)
    masks = net.get_masks()
    cfg = SGDConfig(lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    params = list(model.parameters())
    for step in range(6):
        x, y = batch(MLP, 16, seed=10 + step)
        net.train_step(x, y, cfg)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        for i, p in enumerate(params):  # masked SGD: pruned gradient (and so momentum) is zero
            if i in masks:
                p.grad.mul_(torch.from_numpy(masks[i]))
        opt.step()
    for i, (w, p) in enumerate(zip(net.get_weights(), params)):
        assert_close(w, p.detach().numpy(), f"weights of {net.param_shapes[i].name} after 6 steps", rtol=1e-4)
        if i in masks:
            assert np.all(w[~masks[i]] == 0.0), "a pruned weight moved"


@pytest.mark.parametrize("density", [0.5, 0.1, 0.01])
@pytest.mark.parametrize("threads", [1, 2])
def test_sparse_paths_without_importance_match_torch(density: float, threads: int) -> None:
    """Importance off: the sparse convolutions run directly on batch-innermost planes (no im2col) and the sparse
    linear layers' backward is one fused pass over the kept weights. Values and gradients against PyTorch, with a
    batch that changes size between calls (the direct path's padded planes follow it)."""
    net, model = paired(CONV2, density, sparse=True)
    net.set_threads(threads)
    net.enable_input_grad(True)
    masks = net.get_masks()
    for n, seed in ((20, 3), (7, 4), (20, 5)):
        x, y = batch(CONV2, n, seed=seed)
        res = net.forward_backward(x, y)
        xt = torch.from_numpy(x).requires_grad_(True)
        model.zero_grad()
        logits = model(xt)
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
        loss.backward()
        assert res.loss == pytest.approx(loss.item(), rel=1e-5)
        assert_close(net.input_grad(), xt.grad.numpy(), f"input gradient, batch {n}")
        for i, (g, p) in enumerate(zip(net.grads(), model.parameters())):
            ref = p.grad.numpy()
            keep = masks.get(i, np.ones(ref.shape, bool))
            assert_close(g, np.where(keep, ref, 0.0), f"gradient of {net.param_shapes[i].name}, batch {n}")
        assert_close(net.logits(x), logits.detach().numpy(), f"logits, batch {n}")
