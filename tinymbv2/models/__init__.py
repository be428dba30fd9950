"""Models: MobileNetV2 (Table 2 of the paper), its variants, summaries and interop, the
smallest image a network takes (``smallest_input_size``, from its strides), and the SSDLite
detector on MobileNetV2 (section 6.2), and Mobile DeepLabv3 for segmentation (section 6.3).

    from tinymbv2.models import mobilenet_v2, summary
    model = mobilenet_v2(width_mult=0.5, num_classes=10, small_input=True, seed=0)
    print(summary(model, input_size=(3, 32, 32)))
"""
from .deeplabv3 import (ASPP, ATROUS_RATES, ASPPPooling, DeepLabHead, DeepLabV3,  # noqa: F401
                        IntermediateLayers, LRASPPHead, SimpleHead, deeplabv3_mobilenet_v2, dilate)
from .input_size import check_input_size, smallest_input_size  # noqa: F401
from .interop import from_torchvision, to_torch_state_dict  # noqa: F401
from .memory import chunked_block, memory_efficient_inference  # noqa: F401
from .mobilenetv2 import (  # noqa: F401
    LAST_CHANNEL, SEED_ARTICLE_SETTING, STEM_CHANNELS, TABLE2, Conv2dNormActivation,
    InvertedResidual, MobileNetV2, make_divisible, mobilenet_v2, seed_article_net,
)
from .ssdlite import (SSDLite, SSDLiteBackbone, SSDLiteHead, extra_block,  # noqa: F401
                      prediction_block, ssdlite_mobilenet_v2)
from .summary import LayerRow, Summary, summary  # noqa: F401
