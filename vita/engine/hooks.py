"""The training loop's hook contract: side work that runs at fixed points of :meth:`Trainer.train`.

A hook implements any of these (each is a no-op here); the trainer calls its hooks in order::

    before_train(trainer)   after resume, before the first step (``train.eval_at_start``)
    after_step(trainer)     after each optimizer step, its metrics logged and its checkpoint saved
    after_train(trainer)    after the last step, before the final checkpoint and export
    state_dict() / load_state_dict(state)
                            what the hook must carry across a resume; saved in every checkpoint
                            under ``hooks/<name>`` and handed back before ``before_train``

What a hook may read and call on the trainer (and nothing else): ``step`` (steps done),
``total_steps``, ``cfg``, ``dist`` (rank, world size), ``ckpt_root``, ``metrics.log(step, values)``
and ``save()`` (checkpoint this step). In-loop evaluation and ``train.keep_best`` are hooks
(:mod:`vita.eval.loop`); ``vita.run`` hands them to the trainer, so the engine imports nothing above it.
"""

from __future__ import annotations


class Hook:
    """Base of the loop's hooks; ``name`` keys its state in the checkpoint."""

    name = "hook"

    def before_train(self, trainer) -> None:
        """After resume, before the first step."""

    def after_step(self, trainer) -> None:
        """After each optimizer step (``trainer.step`` counts it)."""

    def after_train(self, trainer) -> None:
        """After the last step, before the final checkpoint and export."""

    def state_dict(self) -> dict:
        """State to carry across a resume (empty: none)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Take back what :meth:`state_dict` returned, from the checkpoint resumed."""
