"""The diagonal Fisher helper, against per-example gradients computed by plain autograd."""

from __future__ import annotations

from pathlib import Path


def test_diagonal_fisher_is_the_mean_of_squared_per_example_gradients(tmp_path: Path) -> None:
    import torch
    from safetensors.numpy import load_file

    from git_theta.fisher_tools import diagonal_fisher, save_fisher

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x = torch.randn(10, 3)
    y = torch.randint(0, 2, (10,))
    batches = [(x[:6], y[:6]), (x[6:], y[6:])]
    got = diagonal_fisher(model, batches)

    expected = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for i in range(10):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for k, v in model.named_parameters():
            expected[k] += v.grad**2 / 10
    assert sorted(got) == sorted(dict(model.state_dict()))
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-7)

    assert model.training  # restored
    save_fisher(got, tmp_path / "f.safetensors")
    back = load_file(str(tmp_path / "f.safetensors"))
    assert back["0.weight"].shape == (4, 3) and str(back["0.weight"].dtype) == "float32"
    assert diagonal_fisher(model, batches, max_examples=4)["2.bias"].shape == (2,)


def test_expected_fisher_weights_every_class_by_the_models_probability() -> None:
    import torch

    from git_theta.fisher_tools import diagonal_fisher

    torch.manual_seed(1)
    model = torch.nn.Linear(3, 3)
    x = torch.randn(5, 3)
    y = torch.zeros(5, dtype=torch.long)
    got = diagonal_fisher(model, [(x, y)], expected=True)
    expected = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for i in range(5):
        probs = torch.softmax(model(x[i : i + 1]), -1)[0].detach()
        for c in range(3):
            model.zero_grad()
            target = torch.tensor([c])
            torch.nn.functional.cross_entropy(model(x[i : i + 1]), target).backward()
            for k, v in model.named_parameters():
                expected[k] += probs[c] * v.grad**2 / 5
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-7)
