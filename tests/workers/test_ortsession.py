"""ONNX Runtime session options of the SSCD embedder and the YOLO detector."""

from dupstream.workers.ortsession import session_options


def test_threads_and_spinning():
    opts = session_options(threads=2, spinning=False)
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    on = session_options(threads=1, spinning=True)
    assert on.get_session_config_entry("session.intra_op.allow_spinning") == "1"
