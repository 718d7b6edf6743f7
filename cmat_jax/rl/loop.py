"""The CMAT loop (`python -m cmat_jax.train` with mode='cmat').

    SFT warm start: train.steps steps on the oracle's episodes of the training tasks
    evaluation at iteration 0 (greedy, held-out tasks)
    for each iteration:
        the User draws rollout.tasks_per_iteration tasks (curriculum)
        the engine plays G samples of each (sampling), with the Checker role and reflection
        rewards -> advantages per (role, task) -> packed segments -> rl.update_epochs of updates
        per trained role (the Assistant; the learned Checker's own adapter with checker.train)
        every rl.eval_every iterations (and at the end): greedy evaluation on the held-out tasks
    a plot of train and eval success over iterations, and a summary table

metrics.jsonl holds one record per warm-start step (phase 'sft'), per iteration
(phase 'rl') and per evaluation (phase 'eval'); TensorBoard shows the same
values under sft/, rl/ and eval/.

Determinism and resume. Iteration i samples with fold_in(key(seed), i); the
User's RNG and curriculum, the reflection memory, the advantage baseline and
the data position are host items of the checkpoint, saved with the adapters
and optimizer states after the warm start and every checkpoint.every
iterations. A killed run resumed with --config.resume=true therefore repeats
exactly what the uninterrupted run did (every metric except wall-clock times).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional

import jax
import numpy as np
import optax
from absl import logging

from cmat_jax import distributed, interrupts
from cmat_jax.agents.engine import RolloutConfig, RolloutEngine
from cmat_jax.agents.memory import ReflectionMemory
from cmat_jax.agents.prompts import SHORT_INSTRUCTIONS
from cmat_jax.agents.replies import ModelReplies, SamplingSettings
from cmat_jax.agents.trajectory import ASSISTANT_ROLE, CHECKER_ROLE
from cmat_jax.agents.user import User
from cmat_jax.envs.sql.env import SqlEnvConfig
from cmat_jax.envs.sql.metrics import dbbench_metrics
from cmat_jax.eval_report import final_trajectories
from cmat_jax.rl import episodes as episode_lib
from cmat_jax.rl.advantages import make_advantage
from cmat_jax.rl.objectives import ObjectiveConfig, check_reference, objective_loss
from cmat_jax.rl.report import plot_success, summary_table
from cmat_jax.rl.rows import RL_BATCH_KEYS, pack_segments
from cmat_jax.rl.tasks import task_pools
from cmat_jax.rl.warmup import demonstrations, write_demonstrations
from cmat_jax.sampling.sampler import Sampler, SamplerConfig
from cmat_jax.training import build
from cmat_jax.training.metrics import MetricsWriter, check_metrics_file
from cmat_jax.training.run_state import (NonFiniteError, RunState, absolute_paths, check_batch_layout,
                                         check_nonfinite_mode, make_checkpointer, record_run, restore_intact,
                                         resume_step)
from cmat_jax.training.step import BATCH_KEYS

INSTRUCTIONS = {"dbbench": None, "short": SHORT_INSTRUCTIONS}
PATH_SETTINGS = ("model.hf_dir", "data.tokenizer", "data.general", "tasks.train", "tasks.eval")
# What a resumed CMAT run may change: as SFT, plus how many iterations it runs in all.
RESUMABLE_CHANGES = ("rl.iterations", "train.log_every", "resume", "overwrite", "workdir", "mesh", "checkpoint",
                     "distributed")
TIMING_METRICS = ("tokens_per_s", "step_s", "rollout_s", "update_s", "eval_s")
# DBBench's scores in each evaluation record (the held-out tasks' types decide which are meaningful).
DBBENCH_SCORES = ("overall_cat_accuracy", "SELECT_accuracy", "INSERT_accuracy", "UPDATE_accuracy")


def check_config(config) -> None:
    """Refuses settings that cannot run or would do nothing, naming the field."""
    if config.mode != "cmat":
        raise ValueError(f"mode is {config.mode!r}; the CMAT loop runs configs with mode='cmat' (cmat_config())")
    if config.data.agent:
        raise ValueError("data.agent is set, but a CMAT run's warm start trains on the oracle's episodes of "
                         "tasks.train; leave data.agent empty (data.general may add general chat data)")
    if config.rollout.instructions not in INSTRUCTIONS:
        raise ValueError(f"rollout.instructions is {config.rollout.instructions!r}; choose from "
                         f"{', '.join(INSTRUCTIONS)}")
    if int(config.rl.iterations) < 0 or int(config.train.steps) < 0:
        raise ValueError("rl.iterations and train.steps must be >= 0")
    if int(config.rl.eval_every) < 1:
        raise ValueError(f"rl.eval_every must be >= 1, found {config.rl.eval_every}")
    if config.checker.train and "learned" not in config.checker.mode:
        raise ValueError(f"checker.train is true but checker.mode is {config.checker.mode!r}: there is no learned "
                         "Checker to train; use checker.mode='learned' or 'static+learned'")
    if int(config.rl.update_epochs) < 1:
        raise ValueError(f"rl.update_epochs must be >= 1, found {config.rl.update_epochs}")
    if not 0.0 <= float(config.train.recovery_fraction) <= 1.0:
        raise ValueError(f"train.recovery_fraction must be in [0, 1] (the share of warm-start tasks played with a "
                         f"mistaken first statement), found {config.train.recovery_fraction}")
    if not 0.0 <= float(config.train.reflection_fraction) <= 1.0:
        raise ValueError(f"train.reflection_fraction must be in [0, 1] (the share of warm-start tasks played as a "
                         f"failed trial, its reflection and the retry), found {config.train.reflection_fraction}")
    check_nonfinite_mode(config.train.nonfinite)


class CmatRun:
    """Builds a CMAT run from its config; `run()` runs the warm start, the iterations and the evaluations."""

    def __init__(self, config):
        check_config(config)
        absolute_paths(config, PATH_SETTINGS)
        self.config = config
        self.workdir = os.path.abspath(config.workdir)
        self.is_main = jax.process_index() == 0
        self.checkpointer = make_checkpointer(config, self.workdir)
        start = resume_step(config, self.checkpointer, self.workdir, resumable=RESUMABLE_CHANGES,
                            extra_checks=lambda saved, current: [],
                            end_step=int(config.train.steps) + int(config.rl.iterations), end_field="rl.iterations")

        learned = "learned" in config.checker.mode
        roles = (ASSISTANT_ROLE, CHECKER_ROLE) if learned else (ASSISTANT_ROLE,)
        self.trained_roles = (ASSISTANT_ROLE, CHECKER_ROLE) if config.checker.train else (ASSISTANT_ROLE,)
        # The update's settings are checked before tasks or a model are built.
        r, rollout = config.rl, config.rollout
        # The Checker's groups are its verdicts on one task, which may be a single one: such a group is masked.
        self.estimators = {role: make_advantage(r.advantage, group_size=int(rollout.group_size),
                                                **({"singletons": "mask"} if role == CHECKER_ROLE
                                                   and r.advantage != "reinforce" else {}))
                           for role in self.trained_roles}
        objective = ObjectiveConfig(
            name=r.objective, clip_eps=float(r.clip_eps), clip_eps_high=float(r.clip_eps_high),
            kl_coef=float(r.kl_coef), measure_kl=bool(r.measure_kl), temperature=float(rollout.temperature),
            top_k=int(rollout.top_k) or None, top_p=float(rollout.top_p) if float(rollout.top_p) < 1.0 else None)

        from cmat_jax.data import load_tokenizer

        self.tokenizer = load_tokenizer(build.tokenizer_path(config))
        self.train_tasks, self.eval_tasks = task_pools(config.tasks)
        instructions = INSTRUCTIONS[rollout.instructions]
        self.user = User(self.train_tasks, seed=int(config.seed), curriculum=bool(rollout.curriculum),
                         boost=float(rollout.curriculum_boost), instructions=instructions)
        self.eval_user = User(self.eval_tasks, seed=int(config.seed), curriculum=False, instructions=instructions)
        self.memory = ReflectionMemory(int(config.reflection.omega))
        self.env_config = SqlEnvConfig(max_rounds=int(rollout.max_rounds))
        self.warm_batches = self._warm_start_data() if int(config.train.steps) > 0 else None
        frozen = [role for role in roles if role not in self.trained_roles]
        self.state = RunState(config, roles=roles, frozen_roles=frozen, checkpointer=self.checkpointer)
        if len(self.tokenizer) > self.state.model_config.vocab_size:
            raise ValueError(f"the tokenizer has {len(self.tokenizer)} ids but the model's vocabulary has "
                             f"{self.state.model_config.vocab_size}; use the tokenizer that belongs to the model")
        check_batch_layout(int(r.rows), int(config.train.microbatches), self.state.mesh, rows_field="rl.rows")
        if self.warm_batches is not None:
            check_batch_layout(int(config.data.batch_size), int(config.train.microbatches), self.state.mesh)
        check_reference(objective, self.state.adapters[ASSISTANT_ROLE])
        self.sft_step = self.state.make_step() if self.warm_batches is not None else None
        self.rl_step = self.state.make_step(objective_loss(objective),
                                            schedule=optax.constant_schedule(float(r.learning_rate)))
        self._build_engines()

        self.step = 0  # checkpoint steps: warm-start updates, then train.steps + iteration
        self.iteration = 0
        self.updates = 0  # RL updates made (the RL step's index)
        self.skipped = 0
        if start is not None:
            restore_intact(self.checkpointer, self._restore, start)
        record_run(config, self.workdir, self.step)

    # -- setup -------------------------------------------------------------

    def _warm_start_data(self):
        from cmat_jax.data import make_sft_batches

        d = self.config.data
        # Every process reads its own copy (another host may not see the workdir); process 0's is the run's record.
        path = os.path.join(self.workdir if self.is_main else distributed.scratch_dir(), "warmup_demonstrations.jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_demonstrations(path, demonstrations(self.train_tasks, self.user, SqlEnvConfig(),
                                                  recovery_fraction=float(self.config.train.recovery_fraction),
                                                  seed=int(self.config.seed),
                                                  reflection_fraction=float(self.config.train.reflection_fraction),
                                                  tokenizer=self.tokenizer))
        return make_sft_batches(self.tokenizer, path, d.general or None, agent_fraction=float(d.agent_fraction),
                                batch_size=int(d.batch_size), seq_len=int(d.seq_len), mode=d.mode,
                                seed=int(d.seed), overlong=d.overlong)

    def _build_engines(self) -> None:
        c = self.config
        sampler_config = SamplerConfig(max_len=int(c.rollout.max_len),
                                       unroll_decode_layers=bool(c.rollout.unroll_decode_layers))
        sampler = Sampler(self.state.model(ASSISTANT_ROLE), sampler_config, mesh=self.state.mesh)
        replies = ModelReplies(sampler, self.tokenizer)
        learned = "learned" in c.checker.mode
        trials = int(c.reflection.trials)

        def engine(temperature: float) -> RolloutEngine:
            settings = SamplingSettings(int(c.rollout.max_new_tokens), temperature, int(c.rollout.top_k) or None,
                                        float(c.rollout.top_p) if float(c.rollout.top_p) < 1.0 else None)
            config = RolloutConfig(
                assistant=settings, trials=trials, checker=c.checker.mode, cache=c.rollout.cache,
                checker_sampling=dataclasses.replace(settings, max_new_tokens=int(c.checker.max_new_tokens)),
                reflection=dataclasses.replace(settings, max_new_tokens=int(c.reflection.max_new_tokens)))
            return RolloutEngine(self.env_config, config, assistant=replies, tokenizer=self.tokenizer,
                                 checker_model=replies if learned else None,
                                 reflector=replies if trials > 1 else None, max_len=int(c.rollout.max_len))

        self.train_engine = engine(float(c.rollout.temperature))
        self.eval_engine = engine(0.0)

    def _weights(self) -> dict:
        return {role: self.state.sampling_weights(role)[1] for role in self.state.roles}

    # -- checkpoints -------------------------------------------------------

    def _host_state(self) -> dict:
        return {"iteration": self.iteration, "updates": self.updates, "skipped": self.skipped,
                "user": self.user.state(), "memory": self.memory.state(),
                "advantages": {role: e.state() for role, e in self.estimators.items()},
                "data": self.warm_batches.state() if self.warm_batches is not None else {}}

    def _save(self, force: bool = False) -> None:
        self.state.save(self.step, self._host_state(), force=force)

    def _restore(self, step: int) -> None:
        host = self.state.restore(step)
        self.step, self.iteration = step, int(host["iteration"])
        self.updates, self.skipped = int(host["updates"]), int(host["skipped"])
        self.user.restore(host["user"])
        self.memory.restore(host["memory"])
        for role, estimator in self.estimators.items():
            estimator.restore(host["advantages"][role])
        if self.warm_batches is not None and host["data"]:
            self.warm_batches.restore(host["data"])
        logging.info("resumed %s at step %d (iteration %d)", self.workdir, step, self.iteration)

    # -- the run -----------------------------------------------------------

    def run(self) -> list[dict]:
        """Runs to the end; returns the records it wrote."""
        from tqdm import tqdm

        c = self.config
        warm_steps, iterations = int(c.train.steps), int(c.rl.iterations)
        writer = MetricsWriter(self.workdir, enabled=self.is_main, start_step=self.step or None)
        bar = tqdm(total=warm_steps + iterations, initial=self.step, desc="cmat", unit="step",
                   disable=not self.is_main, dynamic_ncols=True)
        records: list[dict] = []

        def write(record: dict) -> None:
            records.append(record)
            writer.write(self.step, record, group=record["phase"])

        try:
            if warm_steps == 0 and self.step == 0 and iterations > 0:
                write(self._evaluate())  # the starting point: the base model
            while self.step < warm_steps:
                interrupts.check()  # a signal stops the run here, between steps (and iterations below)
                record = self._warm_step()
                bar.update(1)
                bar.set_postfix(phase="sft", loss=f"{record['loss']:.3f}")
                if self.step % max(int(c.train.log_every), 1) == 0 or self.step == warm_steps:
                    write(record)
                if self.step == warm_steps:
                    # Evaluated before the save, so a run resumed from this checkpoint has the record.
                    write(self._evaluate())
                    self._save(force=True)
                elif self.checkpointer.should_save(self.step):
                    self._save()
            while self.iteration < iterations:
                interrupts.check()
                record = self._iteration()
                write(record)
                bar.update(1)
                bar.set_postfix(phase="rl", success=f"{record['success_rate']:.2f}")
                if self.iteration % int(c.rl.eval_every) == 0 or self.iteration == iterations:
                    write(self._evaluate())
                if self.iteration == iterations or self.iteration % int(c.checkpoint.every) == 0:
                    self._save(force=True)  # checkpoint.every counts iterations here, not step numbers
        finally:
            self.checkpointer.wait()
            bar.close()
            writer.close()
        if self.is_main:
            history = self._history()
            if any(r["phase"] == "eval" for r in history):
                plot_success(history, os.path.join(self.workdir, "success.png"))
                print(summary_table(history))
        return records

    def _history(self) -> list[dict]:
        """Every record of the run's metrics.jsonl, those written before a resume included."""
        return [line.value for line in check_metrics_file(os.path.join(self.workdir, "metrics.jsonl"))]

    def _warm_step(self) -> dict:
        start = time.perf_counter()
        host_batch = next(self.warm_batches)
        batch = self.state.put_batch(host_batch, keys=BATCH_KEYS, rows=int(self.config.data.batch_size))
        metrics = self._read(self.state.update(ASSISTANT_ROLE, self.sft_step, batch, self.step), "sft")
        self.step += 1
        tokens = int(np.count_nonzero(host_batch["segment_ids"]))
        step_s = time.perf_counter() - start
        return {"phase": "sft", "iteration": 0, "loss": metrics["loss"], "grad_norm": metrics["grad_norm"],
                "tokens_per_s": tokens / max(step_s, 1e-9), "step_s": step_s}

    def _iteration(self) -> dict:
        c = self.config
        start = time.perf_counter()
        tasks = self.user.draw(int(c.rollout.tasks_per_iteration))
        key = jax.random.fold_in(jax.random.key(int(c.seed)), self.iteration)
        trajectories = self.train_engine.run(tasks, group_size=int(c.rollout.group_size), key=key,
                                             weights=self._weights(), memory=self.memory, user=self.user)
        for task in tasks:
            self.user.record(task.task_id, [t.correct for t in trajectories if t.task_id == task.task_id])
        rollout_s = time.perf_counter() - start

        start = time.perf_counter()
        record = {"phase": "rl", "iteration": self.iteration + 1,
                  **episode_lib.rollout_metrics(trajectories, float(c.rl.format_penalty))}
        tokens = 0
        for role in self.trained_roles:
            segments, report = episode_lib.training_segments(trajectories, role, float(c.rl.format_penalty),
                                                             self.estimators[role],
                                                             positive_only=bool(c.rl.positive_only))
            batches = pack_segments(segments, rows=int(c.rl.rows), seq_len=int(c.rl.seq_len),
                                    pad_id=self._pad_id())
            means = self._update(role, batches)
            tokens += sum(int(np.count_nonzero(b["segment_ids"])) for b in batches) * int(c.rl.update_epochs)
            prefix = "" if role == ASSISTANT_ROLE else f"{role}_"
            record.update({f"{prefix}{k}": v for k, v in {**report, **means}.items()})
        update_s = time.perf_counter() - start
        self.iteration += 1
        self.step = int(c.train.steps) + self.iteration
        record.update(rollout_s=rollout_s, update_s=update_s, tokens_per_s=tokens / max(update_s, 1e-9),
                      skipped=float(self.skipped))
        return record

    def _update(self, role: str, batches: list[dict]) -> dict:
        """rl.update_epochs passes over `batches`; token-weighted means of the step's metrics."""
        sums: dict[str, float] = {}
        weight = 0.0
        for _ in range(int(self.config.rl.update_epochs)):
            for host_batch in batches:
                batch = self.state.put_batch(host_batch, keys=RL_BATCH_KEYS, rows=int(self.config.rl.rows),
                                             rows_field="rl.rows")
                metrics = self._read(self.state.update(role, self.rl_step, batch, self.updates), "rl")
                self.updates += 1
                n = metrics.pop("loss_tokens")
                weight += n
                for k in ("loss", "kl", "entropy", "clip_frac"):
                    if k in metrics:
                        sums[k] = sums.get(k, 0.0) + metrics[k] * n
        return {k: v / weight for k, v in sums.items()} if weight else {k: 0.0 for k in ("loss", "kl", "entropy",
                                                                                          "clip_frac")}

    def _read(self, device_metrics, phase: str) -> dict:
        m = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        if not m.pop("finite"):
            if self.config.train.nonfinite == "stop":
                raise NonFiniteError(f"a {phase} update at step {self.step} had a non-finite loss or gradient; it "
                                     "was not applied and the run stopped. Lower the learning rate or set "
                                     "train.nonfinite='skip'")
            self.skipped += 1
            logging.warning("non-finite %s update skipped (%d so far)", phase, self.skipped)
        return m

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        return int(pad or 0)

    def _evaluate(self) -> dict:
        start = time.perf_counter()
        trajectories = self.eval_engine.run(self.eval_tasks, weights=self._weights(), memory=ReflectionMemory(
            int(self.config.reflection.omega)), user=self.eval_user)
        finals = {}
        for t in trajectories:  # a task counts as solved if any of its trials is
            finals[t.task_id] = finals.get(t.task_id, False) or t.correct
        first_trials = [t for t in trajectories if t.trial == 0]
        record = {"phase": "eval", "iteration": self.iteration,
                  **episode_lib.rollout_metrics(first_trials, float(self.config.rl.format_penalty))}
        record["success_rate"] = sum(finals.values()) / max(len(finals), 1)
        # DBBench's scores: over each task's last trial (any trial solved it), and over first trials alone
        # (DBBench's own single-attempt protocol).
        for prefix, outcomes in (("", final_trajectories(trajectories)), ("trial1_", first_trials)):
            dbbench = dbbench_metrics([t.final_info for t in outcomes])
            record.update({f"{prefix}{k}": dbbench[k] for k in DBBENCH_SCORES})
        record["eval_s"] = time.perf_counter() - start
        return record

    def close(self) -> None:
        self.checkpointer.wait()
        self.checkpointer.close()


def without_timings(records: list[dict]) -> list[dict]:
    """Records minus wall-clock measurements: what an interrupted and an uninterrupted run share."""
    return [{k: v for k, v in r.items() if k not in TIMING_METRICS} for r in records]


def run_cmat(config) -> Optional[list[dict]]:
    run = CmatRun(config)
    try:
        return run.run()
    finally:
        run.close()
