"""The CPU layer: CUDA calls resolve to the CPU, RNG forking works, and it is inert with CUDA.

Each check runs in a fresh interpreter, because activation is process-wide by design.
"""

import subprocess
import sys
import textwrap

import pytest

from tests.launch import REPO


def run_snippet(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_cuda_calls_resolve_to_cpu():
    out = run_snippet("""
        import torch
        from megatron_dscoder.parallel import cpu_compat
        assert cpu_compat.activate() and cpu_compat.is_active()
        t = torch.zeros(3, device="cuda")
        assert t.device.type == "cpu"
        assert torch.empty(2, device=torch.device("cuda", 0)).device.type == "cpu"
        assert t.cuda().device.type == "cpu" and t.to("cuda").device.type == "cpu"
        assert t.type() == "torch.cuda.FloatTensor"
        assert t.type(torch.float64).dtype == torch.float64
        assert torch.cuda.current_device() == torch.device("cpu")
        torch.cuda.synchronize(); torch.cuda.current_stream().wait_stream(None)
        with torch.cuda.stream(torch.cuda.Stream()):
            pass
        print("ok")
    """)
    assert out.strip() == "ok"


def test_tensor_parallel_rng_tracker_forks_and_restores():
    out = run_snippet("""
        import torch
        from megatron_dscoder.parallel import cpu_compat
        cpu_compat.activate()
        from megatron.core.tensor_parallel.random import get_cuda_rng_tracker
        torch.manual_seed(0)
        expected_default = torch.rand(4)
        torch.manual_seed(0)
        tracker = get_cuda_rng_tracker()
        tracker.add("model-parallel-rng", 123)
        with tracker.fork():
            forked = torch.rand(4)
        after = torch.rand(4)
        torch.manual_seed(123)
        expected_forked = torch.rand(4)
        assert torch.equal(forked, expected_forked), (forked, expected_forked)
        assert torch.equal(after, expected_default), "fork leaked into the default stream"
        print("ok")
    """)
    assert out.strip() == "ok"


def test_custom_function_backward_stays_on_cpu():
    # Autograd runs backward without Python modes; recomputation re-runs forward code there.
    out = run_snippet("""
        import torch
        from megatron_dscoder.parallel import cpu_compat
        cpu_compat.activate()

        class Twice(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, g):
                return g * torch.full((1,), 2.0, device="cuda")

        x = torch.ones(3, requires_grad=True)
        Twice.apply(x).sum().backward()
        assert x.grad.tolist() == [2.0, 2.0, 2.0]
        print("ok")
    """)
    assert out.strip() == "ok"


def test_inert_when_cuda_is_available():
    out = run_snippet("""
        import torch
        original = torch.cuda.current_device
        torch.cuda.is_available = lambda: True
        from megatron_dscoder.parallel import cpu_compat
        assert cpu_compat.activate() is False and not cpu_compat.is_active()
        assert torch.cuda.current_device is original
        assert torch._C._is_torch_function_mode_enabled() is False
        print("ok")
    """)
    assert out.strip() == "ok"


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_real_gpu_is_left_alone():
    out = run_snippet("""
        import torch
        from megatron_dscoder.parallel import cpu_compat
        assert cpu_compat.activate() is False
        assert torch.zeros(1, device="cuda").device.type == "cuda"
        print("ok")
    """)
    assert out.strip() == "ok"
