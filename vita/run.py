"""Entry point: ``python -m vita.run [experiment=NAME] [overrides] [-m sweeps]``.

compose (Hydra) -> validate -> init distributed -> build tokenizer, model, stage, data
-> ``Trainer.train()`` -> close, in ``finally``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vita.config import register_configs, register_resolvers, validate
from vita.errors import CheckpointError, one_line_errors
from vita.job_errors import report_job_error
from vita.slurm_jobs import expose_launcher_plugin

log = logging.getLogger("vita")
register_configs()
register_resolvers()
expose_launcher_plugin()  # hydra/launcher=slurm from any working directory (vita/slurm_jobs.py)


def train(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """Run one training job described by ``cfg`` in ``run_dir`` (default: Hydra's); returns its final metrics."""
    from vita.console import quiet_console

    quiet_console(cfg.logging.all_ranks)  # before DeepSpeed, peft, bitsandbytes are imported (vita/console.py)
    import torch
    from hydra.core.hydra_config import HydraConfig

    from vita.artefacts import checkpoints_of, final_of
    from vita.data import build_data
    from vita.engine.distributed import broadcast_object, close_distributed, init_distributed
    from vita.engine.engine import Trainer
    from vita.engine.parent_watch import watch_launcher
    from vita.engine.run_dir import prepare_run_dir
    from vita.engine.run_lock import hold_run_dir
    from vita.eval.loop import eval_hooks
    from vita.interop import adopt_vita_config, build_vita_model, is_whole_model, vita_path
    from vita.interop.importer import read_tokenizer, zero3_build_config
    from vita.model.builder import build_for, torch_dtype
    from vita.model.init_from import load_init
    from vita.model.sequence_parallel import check_sp_size, data_rank
    from vita.model.sources import resolve_sources
    from vita.stage import apply_stage, trainable_table

    validate(cfg)
    vita_src = vita_path(cfg.stage.init_from)
    if vita_src is not None and not vita_src.exists():
        raise CheckpointError(f"stage.init_from=vita:{vita_src}: no such folder or file")
    if vita_src is not None and is_whole_model(vita_src):
        adopt_vita_config(cfg, vita_src)  # cfg.model := the VITA folder's model (before the run dir records it)
    else:
        vita_src = None
    resolve_sources(cfg)  # hub ids -> local folders (or one error line), before any process group or file
    dist_info = trainer = lock = None
    try:
        dist_info = init_distributed(cfg.engine.timeout_min)
        watch_launcher()  # torchrun killed -> its workers stop at a step's end (vita/engine/parent_watch.py)
        check_sp_size(cfg.engine.sequence_parallel, dist_info.world_size, None, None)  # before anything is built
        run_dir = Path(broadcast_object(str(run_dir or HydraConfig.get().runtime.output_dir)))
        lock = hold_run_dir(run_dir, dist_info)  # one writer per run dir, or one line naming the holder
        if prepare_run_dir(run_dir, cfg, dist_info) == "complete":
            return {}
        if cfg.stage.task == "codec":  # stage 3.1: fit the speech codec, no optimizer (vita/codec_stage.py)
            from vita.codec_stage import run_codec_stage

            if dist_info.is_main:
                log.info("run dir %s, world size %d (stage %s: the codec is fitted, no optimizer runs)", run_dir,
                         dist_info.world_size, cfg.stage.name)
            return run_codec_stage(cfg, run_dir) if dist_info.is_main else {}
        torch.manual_seed(cfg.train.seed)
        dtype = torch_dtype(cfg.engine.precision, torch.float32)
        if vita_src is not None:  # built on the meta device, filled from the shards one tensor at a time
            # in the engine's dtype: DeepSpeed casts to it anyway (its fp32 master copies come from these values);
            # under ZeRO-3 built in its partitions, each rank filling only its part; the folder's own tokenizer
            # (without transformers' note that vita-Qwen2 is unknown to it)
            tokenizer = read_tokenizer(vita_src)
            built = build_for(cfg.model, tokenizer, build=build_vita_model, folder=vita_src, dtype=dtype,
                              allow_bin=cfg.stage.init_allow_bin, progress=dist_info.is_main,
                              ds_config=zero3_build_config(cfg, vita_src, tokenizer, dist_info.world_size))
        else:
            built = build_for(cfg.model, work_dir=run_dir, compute_dtype=dtype,
                              gradient_checkpointing=cfg.engine.gradient_checkpointing)
        model, tokenizer = built.model, built.tokenizer
        if cfg.stage.init_from and vita_src is None:
            loaded = load_init(model, cfg.stage.init_from, allow_bin=cfg.stage.init_allow_bin)
            log.info("initialised %s from %s", ", ".join(loaded), cfg.stage.init_from)
        group_lrs = apply_stage(model, cfg.stage, cfg.optim.lr)
        if dist_info.is_main:
            log.info("run dir %s, world size %d (%s)\n%s", run_dir, dist_info.world_size, dist_info.launcher,
                     trainable_table(model, group_lrs))
        # the encoders' tile size and token counts; a text-only model leaves it to data.media_spec
        # a sequence-parallel group's ranks read one data stream (vita/model/sequence_parallel.py)
        data = build_data(cfg, tokenizer, *data_rank(dist_info.rank, dist_info.world_size, cfg.engine.sequence_parallel),
                          spec=built.spec)
        hooks = eval_hooks(cfg, model, tokenizer, dist_info, checkpoints_of(run_dir))  # data.eval: fails now
        trainer = Trainer(cfg, model, data, tokenizer, dist_info, run_dir, group_lrs, hooks)
        metrics = trainer.train()
        if dist_info.is_main:
            print(f"\nrun complete: {run_dir}\n  final model : {final_of(run_dir)}\n"
                  f"  checkpoints : {checkpoints_of(run_dir)}\n  metrics     : {run_dir / 'metrics.jsonl'}\n"
                  f"  loss plot   : {run_dir / 'loss.png'}", flush=True)
        return metrics
    finally:
        if trainer is not None:
            trainer.close()
        if lock is not None:
            lock.release()
        close_distributed(dist_info)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@one_line_errors(report=lambda e: report_job_error(e, log), exit=True)  # said once (vita/job_errors.py)
def main(cfg: DictConfig) -> float | None:
    """Hydra task: one job of a run or of a sweep. Returns the final loss (for sweepers)."""
    if cfg.recipe:
        from vita.recipe import run_recipe

        return run_recipe(cfg, train).get("loss")
    return train(cfg).get("loss")


def cli() -> None:
    from vita.cli import precheck, prepare_run_argv

    err = precheck(sys.argv[1:])
    if err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = prepare_run_argv(sys.argv[1:])  # + hydra.searchpath from conf/local
    main()


if __name__ == "__main__":
    cli()
