"""Training (layer 7): configuration, building, the loop, the report, checkpoints,
fine-tuning, search.

* [tinymbv2.train.config][]: ``TrainConfig``, every choice of a run in one place;
* [tinymbv2.train.build][]: model, optimizer, schedule and loss from a config;
  ``load_trained``, the model back from a checkpoint;
* [tinymbv2.train.trainer][]: the loop (``train_one_epoch``, ``fit``), what stops
  it (``TrainingDiverged``) and ``recalibrate_batchnorm``;
* [tinymbv2.train.tasks][]: what the loop trains: ``Classification``,
  ``Detection`` or ``Segmentation`` (loss, score, validation pass);
* [tinymbv2.train.run][]: ``run_training``, a whole run top to bottom;
* [tinymbv2.train.report][]: ``metrics.json``, the plots ([tinymbv2.train.plots][])
  and ``diagnose``;
* [tinymbv2.train.checkpoint][], [tinymbv2.train.finetune][],
  [tinymbv2.train.search][].

``evaluate`` and the metrics live in ``tinymbv2.evaluation``; they are re-exported
here because a training script wants them at hand.
"""
from ..evaluation import (accuracy, confusion_matrix, evaluate, precision_recall,  # noqa: F401
                          top_k_accuracy)
from .build import load_trained  # noqa: F401
from .checkpoint import (load_checkpoint, load_state, read_checkpoint,  # noqa: F401
                         save_checkpoint, save_state)
from .config import TrainConfig  # noqa: F401
from .finetune import run_finetune  # noqa: F401
from .report import diagnose  # noqa: F401
from .run import run_training  # noqa: F401
from .search import grid, random_configs, run_search, search_job  # noqa: F401
from .trainer import (TrainingDiverged, fit, new_history, recalibrate_batchnorm,  # noqa: F401
                      train_one_epoch)
