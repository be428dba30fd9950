"""benchmarks/inference_ops.py: the fused inference timed op by op, with each op's FLOPs."""
import numba
import numpy as np

from benchmarks import inference_ops


def test_every_op_is_timed_and_the_ops_fit_in_the_forward(capsys):
    before = numba.get_num_threads()
    try:
        results = inference_ops.main(["--batches", "2", "--size", "32", "--repeats", "2",
                                      "--threads", "1"])
    finally:
        numba.set_num_threads(before)
    ops = results[2]["ops"]
    names = [op[0] for op in ops]
    assert names[0] == "ConvBatchNormEval" and names.count("InvertedResidualEval") == 17
    assert names[-1] == "Linear" and ops[-1][2] == 2 * 2 * 1280 * 1000
    assert ops[0][1] == (2, 3, 32, 32) and ops[0][2] == 2 * 2 * 16 * 16 * 32 * 27
    assert all(op[3] > 0 for op in ops)
    # each op's minimum is at most its time in the fastest forward, which holds them all
    assert sum(op[3] for op in ops) <= results[2]["forward_min"]
    assert "sum of the ops" in capsys.readouterr().out


def test_a_block_counts_expansion_depthwise_and_projection():
    zeros = np.zeros
    args = (zeros((1, 16, 8, 8)), (zeros((96, 16, 1, 1)), None), (zeros((96, 1, 3, 3)), None),
            (zeros((24, 96, 1, 1)), None), 2, False)
    flops = inference_ops.op_flops("InvertedResidualEval", args, (1, 24, 4, 4))
    assert flops == 2 * 64 * 96 * 16 + 2 * 16 * 96 * 9 + 2 * 16 * 24 * 96
    assert inference_ops.op_flops("AdaptiveAvgPool2d", args, (1, 24, 1, 1)) == 0
