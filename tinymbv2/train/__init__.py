"""Training (layer 7): the loop, metrics and plots, checkpoints, fine-tuning, search."""
from .checkpoint import load_checkpoint, load_state, save_checkpoint, save_state  # noqa: F401
from .metrics import (accuracy, confusion_matrix, diagnose, precision_recall,  # noqa: F401
                      top_k_accuracy)
from .search import grid, random_configs, run_search  # noqa: F401
from .trainer import (evaluate, fit, new_history, recalibrate_batchnorm,  # noqa: F401
                      train_one_epoch)
