"""The loop's hook contract (vita/engine/hooks.py): called in order, with their state carried across a resume."""

from __future__ import annotations

import pytest

from vita.engine.hooks import Hook


class Recorder(Hook):
    """Records the calls it gets and counts steps in its resumable state."""

    name = "recorder"

    def __init__(self, log: list) -> None:
        self.log, self.seen = log, 0

    def before_train(self, trainer) -> None:
        self.log.append(("before_train", trainer.step, self.seen))

    def after_step(self, trainer) -> None:
        self.seen += 1
        self.log.append(("after_step", trainer.step, self.seen))

    def after_train(self, trainer) -> None:
        self.log.append(("after_train", trainer.step, self.seen))

    def state_dict(self) -> dict:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.seen = state.get("seen", -1)


def _train(tmp_path, max_steps: int, log: list) -> None:
    from vita.bench.harness import build, compose, init_single_process
    from vita.data import build_data
    from vita.engine.engine import Trainer
    from vita.stage import apply_stage

    cfg = compose(["experiment=smoke", f"train.max_steps={max_steps}", "train.ckpt_every=2", "data.limit=32",
                   "logging.progress_bar=false", "logging.plot=false"])
    dist_info = init_single_process(cfg)
    tokenizer, model = build(cfg)
    lrs = apply_stage(model, cfg.stage, cfg.optim.lr)
    data = build_data(cfg, tokenizer, 0, 1)
    trainer = Trainer(cfg, model, data, tokenizer, dist_info, tmp_path, lrs, [Recorder(log)])
    try:
        trainer.train()
    finally:
        trainer.close()


@pytest.fixture(scope="module", autouse=True)
def _own_process_group():
    yield
    from vita.engine.distributed import end_process_group

    end_process_group()  # later tests (in-process or subprocesses) start their own group


def test_hooks_are_called_in_order_and_resume_with_their_state(tmp_path):
    first: list = []
    _train(tmp_path, 2, first)
    assert first == [("before_train", 0, 0), ("after_step", 1, 1), ("after_step", 2, 2), ("after_train", 2, 2)]
    again: list = []
    _train(tmp_path, 3, again)  # resumes from step 2's checkpoint: the hook gets its count back first
    assert again == [("before_train", 2, 2), ("after_step", 3, 3), ("after_train", 3, 3)]
