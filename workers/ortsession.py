"""ONNX Runtime session options shared by the models that run on it (SSCD, YOLOv3-tiny)."""

from __future__ import annotations

from typing import Any


def session_options(*, threads: int, spinning: bool) -> Any:
    """``threads`` intra-op threads, one inter-op thread; ``spinning``: the idle intra-op
    threads busy-wait between runs (ONNX Runtime's default). Off, a spinning thread no longer
    takes a core from the threads that run beside the model (``Deduper.process_many``, the
    stream's fetches, OpenCV; docs/PERFORMANCE.md, session 7)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts
