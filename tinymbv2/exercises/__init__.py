"""The course's exercises: one ``check_...`` function per exercise, gathered from the chapters.

A chapter's exercise cell defines a starter and calls its check::

    from tinymbv2.exercises import check_conv_output_size

    def conv_output_size(h, k, s, p):
        raise NotImplementedError  # your code here

    check_conv_output_size(conv_output_size)   # shows "not yet: ..." until it is right

Each chapter's checks live in ``chNN_name.py`` (with the hidden cases they run); this module
gathers every name in their ``__all__``, so a notebook imports from one place. The mechanics
(hints, outcomes) are in [checking][tinymbv2.exercises.checking].
"""
from importlib import import_module

from .checking import Hint, Outcome, exercise, expect_close, expect_equal

CHAPTERS = (
    "ch01_autograd", "ch02_convolution", "ch03_batchnorm", "ch04_relu6_linear_bottleneck",
    "ch05_mobilenetv2", "ch06_initialization", "ch07_losses", "ch08_optimizers", "ch09_data",
    "ch10_training", "ch11_finetuning", "ch12_hyperparameter_search",
    "ch13_architecture_design", "ch14_inference", "ch15_gpu", "ch16_detection",
    "ch17_segmentation", "ch18_deployment", "ch19_data_parallel",
)

__all__ = ["Hint", "Outcome", "exercise", "expect_close", "expect_equal"]

def _gather() -> None:
    """Add every name in each chapter module's ``__all__`` to this module (the checks are many
    and each chapter adds its own; gathering them keeps this file from repeating their lists)."""
    for chapter in CHAPTERS:
        module = import_module(f".{chapter}", __name__)
        for name in module.__all__:
            if name in globals():  # one namespace for all chapters: a second check_x would hide the first
                raise ImportError(f"tinymbv2.exercises: {chapter} defines {name}, which another "
                                  "chapter (or this module) already defines")
            globals()[name] = getattr(module, name)
            __all__.append(name)


_gather()
