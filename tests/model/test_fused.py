"""The lean local spec computes what the paths it replaces compute.

* RMSNorm in the activation dtype (torch's ``rms_norm``) against the previous fp32 round trip:
  output and gradients within 1e-6 relative in fp32 and 1e-2 (about one bf16 ulp) in bf16; on a
  CPU torch upcasts bf16 internally, so both agree exactly there;
* RoPE applied by ``LeanSelfAttention`` (the interception alone, fp32 and bf16) and RoPE compiled
  with ``torch.compile`` together with megatron-core's compiled SwiGLU (``bias_activation_fusion``)
  against megatron-core's unfused RoPE and SwiGLU: logits and all 15 gradients of a two-layer
  model (GQA for the interception, MHA for the compiled kernels so RoPE compiles once).
  torch.compile runs on this CPU (inductor's C++ backend), so the compiled kernels are
  checked here, in fp32 (1e-5 relative);
* the SDPA kernel torch picks is stated once per dtype in the log.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.launch import REPO


def test_lean_paths_match_the_paths_they_replace():
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests/model/workers/fused_parity.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["norm_fp32"] <= 1e-6 and r["norm_bf16"] <= 1e-2, r
    assert r["rope_calls"] == [4, 2, 4, 2], r  # q (4 heads) and k (2 groups) in both layers
    for case, tol in (
        ("rope_plain_fp32", 1e-6),
        ("rope_plain_bf16", 1e-2),
        ("compiled_fp32", 1e-5),
    ):
        assert r[case]["grad_names"] == 15, r[case]
        assert r[case]["logits"] <= tol and r[case]["grads"] <= tol, (case, r[case])
    assert r["sdpa_log"] == [
        "SDPA on cpu float32: kernel FLASH_ATTENTION (enabled: n/a on CPU)",
        "SDPA on cpu bfloat16: kernel FLASH_ATTENTION (enabled: n/a on CPU)",
    ], r["sdpa_log"]
