"""bench/gpu.py: a clean no-op without CUDA, every part on the CPU with --cpu-reference, and the
real run on a CUDA machine (marked gpu)."""

from __future__ import annotations

import json

import pytest

from dupstream.bench import gpu


def test_without_cuda_it_says_so_and_writes_nothing(capsys, tmp_path):
    if gpu.cuda_available():
        pytest.skip("CUDA present: the script runs for real")
    assert gpu.main(["--out", str(tmp_path / "gpu")]) == 0
    assert capsys.readouterr().out.strip() == "no CUDA: not run"
    assert not (tmp_path / "gpu").exists()


def test_cpu_reference_runs_every_part(tmp_path):
    if gpu.cuda_available():
        pytest.skip("CUDA present: test_gpu_run covers the script")
    out = tmp_path / "ref"
    assert gpu.main(["--cpu-reference", "--images", "4", "--batches", "1,2", "--repeats", "1",
                     "--index-size", "2000", "--out", str(out)]) == 0
    r = json.loads((out / "cpu-reference.json").read_text())
    assert r["mode"] == "cpu-reference" and r["images"] == 4
    assert r["detect_torch"]["device"] == "cpu" and not r["detect_torch"]["half"]
    for part in ("detect_torch", "detect_ort", "embed"):
        assert [x["batch"] for x in r[part]["runs"]] == [1, 2]
        assert all(x["images_per_s"] > 0 for x in r[part]["runs"])
    assert r["detect_ort"]["provider"] == "CPUExecutionProvider"
    assert r["faiss"]["cpu"]["describe"]["ntotal"] == 2000
    assert [x["batch"] for x in r["e2e"]["runs"]] == [1, 2]
    assert "| e2e Deduper | 2 |" in (out / "cpu-reference.md").read_text()


@pytest.mark.gpu
def test_gpu_run(tmp_path):
    if not gpu.cuda_available():
        pytest.skip("no CUDA device")
    out = tmp_path / "gpu"
    assert gpu.main(["--images", "16", "--batches", "1,8", "--repeats", "1",
                     "--index-size", "20000", "--out", str(out)]) == 0
    r = json.loads((out / "gpu.json").read_text())
    assert r["mode"] == "cuda" and r["detect_torch"]["half"]
    assert r["detect_torch"]["device"].startswith("cuda")
    assert [x["batch"] for x in r["e2e"]["runs"]] == [1, 8]
    assert "gpu" in r["faiss"] or "skipped" in r["faiss"]
    for part in ("detect_ort", "embed"):
        assert "runs" in r[part] or "skipped" in r[part]
