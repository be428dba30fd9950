"""benchmarks.floor: the work of a training step, against a count from the paper's table 2."""
import pytest

pytest.importorskip("torch")  # benchmarks.ops, which benchmarks.floor uses, imports it

from benchmarks.floor import STAGE, step_work  # noqa: E402
from tinymbv2.models import mobilenet_v2  # noqa: E402

# Table 2 of the paper: expansion t, output channels c, repeats n, first stride s
BOTTLENECKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def table_activations(resolution):
    """(BatchNorm outputs, depthwise (input, output) pairs, fused stages' (e, d) pairs) in
    values per image, from table 2. A block's stage (the BN before the depthwise layer,
    the depthwise layer, its BN) is fused where its planes are above 256 pixels (16x16)."""
    size = (resolution - 1) // 2 + 1  # the stride-2 stem, padding 1
    channels = 32
    bn, dw, stages = [channels * size * size], [], []
    for t, c, n, s in BOTTLENECKS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = channels * t
            out = (size - 1) // stride + 1
            if size * size > 256:  # fused: with the expansion's BN, or block 1 the stem's
                stages.append((hidden * size * size, hidden * out * out))
                if t == 1:
                    bn.remove(hidden * size * size)
            else:
                if t != 1:
                    bn.append(hidden * size * size)  # expansion
                dw.append((hidden * size * size, hidden * out * out))
                bn.append(hidden * out * out)  # depthwise
            bn.append(c * out * out)  # projection
            channels, size = c, out
    bn.append(1280 * size * size)
    return bn, dw, stages


@pytest.mark.parametrize("resolution,batch", [(224, 2), (32, 3)])
def test_step_work_counts_each_layer_type(resolution, batch):
    work = step_work(mobilenet_v2(seed=0), resolution, batch)
    bn, dw, stages = table_activations(resolution)
    stem_out = (resolution - 1) // 2 + 1
    assert work["batch norm"] == (0, 5 * 4 * batch * sum(bn))
    assert work["depthwise conv"] == (0, 3 * 4 * batch * sum(x + y for x, y in dw))
    # forward: e + 2 d; backward: 2 e + 2 d
    assert work.get(STAGE, (0, 0)) == (0, 4 * batch * sum(3 * e + 4 * d for e, d in stages))
    assert (len(stages), STAGE in work) == ((7, True) if resolution == 224 else (0, False))
    assert work["stem (dense) conv"] == (2 * 2 * batch * stem_out ** 2 * 32 * 27, 0)
    assert work["linear"] == (2 * 3 * batch * 1280 * 1000, 0)
    assert work["optimizer (RMSprop)"] == (0, 7 * 4 * 3_504_872)
    flop, nbytes = work["pointwise conv"]
    assert nbytes == 0 and flop % (6 * batch) == 0


def test_pointwise_work_at_224_is_the_papers_share():
    # summary's split at 224 px: 267.9 M of the 300.8 M multiply-adds are pointwise
    flop, _ = step_work(mobilenet_v2(seed=0), 224, 1)["pointwise conv"]
    assert round(flop / 6 / 1e6, 1) == 267.9
