"""What the embedded models need, checked before anything loads (the wheel test runs it in a bare venv)."""
import pytest

from gra_stream import model_assets
from gra_stream.errors import UserError


def test_cuda_builds_beside_a_cpu_torch_are_named_with_the_command_that_removes_them(monkeypatch):
    versions = {"torch": "2.13.0+cpu", "torchvision": "0.29.1", "torchaudio": "2.13.0+cpu"}

    def version(name):
        if name not in versions:
            raise model_assets.PackageNotFoundError(name)
        return versions[name]
    monkeypatch.setattr(model_assets, "version", version)
    assert model_assets._cuda_extras_beside_cpu_torch() == ["torchvision"]
    with pytest.raises(UserError, match=r"pip uninstall -y torchvision \(CUDA builds beside a CPU torch"):
        model_assets.check_engine_setup([], needs_minilm=True)
    versions["torch"] = "2.13.0"  # a CUDA torch: its CUDA torchvision is right
    assert model_assets._cuda_extras_beside_cpu_torch() == []


def test_this_environment_has_what_the_embedded_default_needs():
    model_assets.check_engine_setup(["embedded:smollm2"], needs_minilm=True)
