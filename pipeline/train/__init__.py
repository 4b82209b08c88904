"""Stage ``train``: tune a method (P-Tuning v2 today) on a frozen causal LM from prompts-stage rows.

    python -m pipeline train --config pipeline/configs/train_demo.yaml [key=value ...]
    deepspeed --num_gpus 8 --no_local_rank --module pipeline train --config pipeline/configs/train_paper.yaml

* :mod:`pipeline.train.config` -- :class:`TrainConfig` and its sections (model, method, data, optim,
  engine, eval, checkpoint);
* :mod:`pipeline.train.recipe` -- :class:`TrainRecipe`: setup / train loop / evaluate / save / cleanup;
* :mod:`pipeline.train.checkpoint`, :mod:`pipeline.train.dev_eval`, :mod:`pipeline.train.runtime` -- its parts.
"""

import dataclasses

from pipeline.core.stage import Stage
from pipeline.train.checkpoint import plan_resume, step_checkpoints
from pipeline.train.config import TrainConfig, check_config, train_inputs
from pipeline.train.recipe import TrainRecipe, run_train

STAGE = Stage(
    name="train",
    config_cls=TrainConfig,
    inputs=train_inputs,
    run=run_train,
    default_config="pipeline/configs/train_demo.yaml",
    help="train a tuning method (P-Tuning v2) on prompts-stage rows (DeepSpeed or torch engine)",
    check=check_config,
    resumable=True,  # an interrupted run's step checkpoints stay in out_dir/.staging for resume=auto
    fresh=lambda cfg: dataclasses.replace(
        cfg, checkpoint=dataclasses.replace(cfg.checkpoint, resume="never")) if cfg.checkpoint.resume == "auto" else cfg,
)

__all__ = ["STAGE", "TrainConfig", "TrainRecipe", "plan_resume", "run_train", "step_checkpoints"]
