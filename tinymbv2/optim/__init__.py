"""Optimizers and learning-rate schedules (layer 7), PyTorch's names and numbers.

>>> opt = optim.RMSpropTF(model.parameters(), lr=0.045, alpha=0.9, momentum=0.9, eps=1.0)
>>> sched = optim.lr_scheduler.ExponentialLR(opt, gamma=0.98)   # the paper's recipe

``SGD``, ``RMSprop`` and ``Adam``/``AdamW`` reproduce ``torch.optim`` step for step;
``RMSpropTF`` is the TensorFlow-1 RMSProp the MobileNetV2 paper trained with.
"""
from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import RMSprop, RMSpropTF
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "RMSprop", "RMSpropTF", "Adam", "AdamW", "lr_scheduler"]
