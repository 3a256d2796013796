import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

# one pytest worker per core (-n): one thread each, no oversubscription
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

from worldflow.model.dit import DiT, ModelConfig  # noqa: E402


@pytest.fixture
def tiny_model():
    """A debug-size model on 16 px images with 4 classes (16 tokens)."""

    def make(**kw) -> DiT:
        torch.manual_seed(0)
        cfg = {"size": "debug", "image_size": 16, "patch": 4, "num_classes": 4, **kw}
        return DiT(ModelConfig(**cfg))

    return make


def randomize_zero_init(model: DiT, seed: int = 0) -> DiT:
    """adaLN-Zero makes a fresh model output zeros; give every parameter a value so outputs depend on t."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model
