"""The CMAT loop (`python -m cmat_jax.train` with mode='cmat').

    SFT warm start: train.steps steps on the oracle's episodes of the training tasks (with tasks.demo_count,
        of its first N tasks only; the others are reward-only: rl/tasks.py)
    evaluation at iteration 0 (greedy, held-out tasks)
    for each iteration:
        the User draws rollout.tasks_per_iteration tasks (curriculum)
        the engine plays G samples of each (sampling), with the Checker role and reflection
        with rl.groups_per_update: more rounds of new tasks until that many groups carry signal (bounded by
        rl.max_sampling_rounds); the others are dropped (rl/dynamic_sampling.py)
        rewards -> advantages per (role, task) -> packed segments -> rl.update_epochs of updates
        per trained role (the Assistant; the learned Checker's own adapter with checker.train)
        every rl.eval_every iterations (and at the end): greedy evaluation on the held-out tasks
    with rl.sft_twin: the SFT twin, more SFT from the warm start for the iterations' time (rl/sft_twin.py)
    a plot of train and eval success over iterations, and the summary (summary.txt, summary.json: rl/report.py)

metrics.jsonl holds one record per warm-start step (phase 'sft'), per iteration
(phase 'rl') and per evaluation (phase 'eval'); TensorBoard shows the same
values under sft/, rl/ and eval/.

Determinism and resume. Iteration i samples with fold_in(key(seed), i); the
User's RNG and curriculum, the reflection memory, the advantage baseline and
the data position are host items of the checkpoint, saved with the adapters
and optimizer states after the warm start and every checkpoint.every
iterations. A killed run resumed with --config.resume=true therefore repeats
exactly what the uninterrupted run did (every metric except wall-clock times).
The checkpoints also record which tasks were the warm start's demonstrations,
and a resume is held to them.

Settings are typed and checked before anything runs (cmat_jax/settings/); the
lengths that depend on the prompts (rollout.max_len, rl.seq_len) are checked
once the tokenizer and the tasks are loaded, before the model is built. Start,
resume, the non-finite guard, records, checkpoints and close are the lifecycle
the SFT trainer shares (training/driver.py); both engines are built by
cmat_jax/rollout.py's build_rollout_engine.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
import optax

from cmat_jax import distributed, interrupts
from cmat_jax.agents.memory import ReflectionMemory
from cmat_jax.agents.prompts import SHORT_INSTRUCTIONS
from cmat_jax.agents.replies import ModelReplies
from cmat_jax.agents.rewards import add_statement_credit
from cmat_jax.agents.trajectory import ASSISTANT_ROLE, CHECKER_ROLE
from cmat_jax.agents.user import User
from cmat_jax.envs.sql.env import SqlEnvConfig
from cmat_jax.envs.sql.metrics import dbbench_metrics
from cmat_jax.eval_report import final_trajectories
from cmat_jax.rl import episodes as episode_lib
from cmat_jax.rl.advantages import make_advantage
from cmat_jax.rl.dynamic_sampling import Rollouts, play_rounds
from cmat_jax.rl.grounding import withhold_luck
from cmat_jax.rl.objectives import ObjectiveConfig, check_reference, objective_loss
from cmat_jax.rl.report import plot_success, write_summary
from cmat_jax.rl.rows import RL_BATCH_KEYS, pack_segments
from cmat_jax.rl.sft_twin import SftTwin
from cmat_jax.rl.tasks import check_restored_demonstrations, split_demonstrations, task_pools
from cmat_jax.demos.warmup import check_lengths, demonstrations, write_demonstrations
from cmat_jax.rollout import build_rollout_engine, longest_opening
from cmat_jax.sampling.sampler import Sampler, SamplerConfig
from cmat_jax.settings.run import RunSettings
from cmat_jax.training import build
from cmat_jax.training.driver import Driver
from cmat_jax.training.metrics import check_metrics_file
from cmat_jax.training.run_state import check_batch_layout
from cmat_jax.training.step import BATCH_KEYS

INSTRUCTIONS = {"dbbench": None, "short": SHORT_INSTRUCTIONS}  # rollout.instructions -> the User's text
# What a resumed CMAT run may change: as SFT, plus how many iterations it runs in all.
RESUMABLE_CHANGES = ("rl.iterations", "train.log_every", "resume", "overwrite", "workdir", "mesh", "checkpoint",
                     "distributed")
TIMING_METRICS = ("tokens_per_s", "step_s", "rollout_s", "update_s", "eval_s")
# DBBench's scores in each evaluation record (the held-out tasks' types decide which are meaningful).
DBBENCH_SCORES = ("overall_cat_accuracy", "SELECT_accuracy", "INSERT_accuracy", "UPDATE_accuracy")
METRIC_MEANS = ("loss", "kl", "entropy", "clip_frac")  # token-weighted over an iteration's updates


class CmatRun(Driver):
    """Builds a CMAT run from its settings; `run()` runs the warm start, the iterations and the evaluations."""

    def __init__(self, settings: RunSettings):
        c = self.cmat = settings.cmat
        # The tasks, and the lengths their prompts need, first: a refused length leaves no workdir behind.
        self._load_tasks(settings)
        super().__init__(settings, resumable=RESUMABLE_CHANGES, extra_checks=lambda saved, current: [],
                         end_step=settings.train.steps + c.rl.iterations, end_field="rl.iterations")
        try:  # inside the workdir's lock and past the resume checks; closed before the lock goes (close())
            self.twin = SftTwin(settings, resume_at=self.resume_at, is_main=self.is_main)
        except BaseException:  # a refused resume leaves the workdir's lock free
            super().close()
            raise
        learned = c.checker.learned
        roles = (ASSISTANT_ROLE, CHECKER_ROLE) if learned else (ASSISTANT_ROLE,)
        self.trained_roles = (ASSISTANT_ROLE, CHECKER_ROLE) if c.checker.train else (ASSISTANT_ROLE,)
        self.warm_steps = settings.train.steps
        check_batch_layout(c.rl.rows, settings.train.microbatches, self.mesh, rows_field="rl.rows")
        if self.warm_steps > 0:
            check_batch_layout(settings.data.batch_size, settings.train.microbatches, self.mesh)
        # The Checker's groups are its verdicts on one task, which may be a single one: such a group is masked.
        self.estimators = {role: make_advantage(c.rl.advantage, group_size=c.rollout.group_size,
                                                **({"singletons": "mask"} if role == CHECKER_ROLE
                                                   and c.rl.advantage != "reinforce" else {}))
                           for role in self.trained_roles}
        sampling = c.rollout.sampling(c.rollout.temperature)
        objective = ObjectiveConfig(
            name=c.rl.objective, clip_eps=c.rl.clip_eps, clip_eps_high=c.rl.clip_eps_high, kl_coef=c.rl.kl_coef,
            measure_kl=c.rl.measure_kl, sampling=sampling)

        self.warm_batches = self._warm_start_data() if self.warm_steps > 0 else None
        self.build_state(self.tokenizer, roles=roles, frozen_roles=[r for r in roles if r not in self.trained_roles])
        check_reference(objective, self.state.adapters[ASSISTANT_ROLE])
        self.sft_step = self.state.make_step() if self.warm_batches is not None else None
        self.rl_step = self.state.make_step(objective_loss(objective),
                                            schedule=optax.constant_schedule(c.rl.learning_rate))
        self._build_engines()

        self.iteration = 0  # checkpoint steps: warm-start updates, then train.steps + iteration
        self.updates = 0  # RL updates made (the RL step's index)
        self.resume()

    # -- setup -------------------------------------------------------------

    def _load_tasks(self, settings: RunSettings) -> None:
        from cmat_jax.data import load_tokenizer

        c, seed = self.cmat, settings.seed
        self.tokenizer = load_tokenizer(build.tokenizer_path(settings))
        self.train_tasks, self.eval_tasks = task_pools(c.tasks)
        # Only these tasks' oracle episodes are played; the rest of the pool is reward-only.
        self.demo_tasks, _ = split_demonstrations(self.train_tasks, c.tasks.demo_count)
        instructions = INSTRUCTIONS[c.rollout.instructions]
        self.user = User(self.train_tasks, seed=seed, curriculum=c.rollout.curriculum,
                         boost=c.rollout.curriculum_boost, frontier=c.rollout.curriculum_frontier,
                         window=c.rollout.curriculum_window, instructions=instructions)
        self.eval_user = User(self.eval_tasks, seed=seed, curriculum=False, instructions=instructions)
        c.check_lengths(longest_opening(self.train_tasks, self.user, self.tokenizer),
                        longest_opening(self.eval_tasks, self.eval_user, self.tokenizer))
        self.memory = ReflectionMemory(c.reflection.omega)

    def _warm_start_data(self):
        warm = self.cmat.warm_start
        # Every process reads its own copy (another host may not see the workdir); process 0's is the run's record.
        path = os.path.join(self.workdir if self.is_main else distributed.scratch_dir(), "warmup_demonstrations.jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        conversations = demonstrations(self.demo_tasks, self.user, SqlEnvConfig(),
                                       recovery_fraction=warm.recovery_fraction, seed=self.settings.seed,
                                       reflection_fraction=warm.reflection_fraction, tokenizer=self.tokenizer,
                                       checker=self.cmat.checker.mode)
        check_lengths(conversations, self.tokenizer, self.settings.data.seq_len)
        write_demonstrations(path, conversations)
        return build.build_batches(self.settings.data, self.tokenizer, path)

    def _build_engines(self) -> None:
        rollout = self.cmat.rollout
        sampler = Sampler(self.state.model(ASSISTANT_ROLE),
                          SamplerConfig(max_len=rollout.max_len, unroll_decode_layers=rollout.unroll_decode_layers),
                          mesh=self.state.mesh)
        sources = self._reply_sources(ModelReplies(sampler, self.tokenizer))
        engine = lambda temperature: build_rollout_engine(  # noqa: E731
            self.cmat.engine(temperature), tokenizer=self.tokenizer, **sources)
        self.train_engine = engine(rollout.temperature)
        self.eval_engine = engine(0.0)

    def _reply_sources(self, replies: ModelReplies) -> dict:
        """Each role's reply source: the one sampler for all (bench/bench_iteration.py times them apart)."""
        return dict(assistant=replies, checker=replies, reflector=replies)

    def _weights(self) -> dict:
        return {role: self.state.sampling_weights(role)[1] for role in self.state.roles}

    # -- checkpoints -------------------------------------------------------

    def _host_state(self) -> dict:
        return {"iteration": self.iteration, "updates": self.updates, "skipped": self.skipped_steps,
                "user": self.user.state(), "memory": self.memory.state(),
                "advantages": {role: e.state() for role, e in self.estimators.items()},
                "data": self.warm_batches.state() if self.warm_batches is not None else {},
                "demonstrations": [t.task_id for t in self.demo_tasks]}

    def restore_host(self, host: dict) -> None:
        self.iteration = int(host["iteration"])
        self.updates, self.skipped_steps = int(host["updates"]), int(host["skipped"])
        self.user.restore(host["user"])
        self.memory.restore(host["memory"])
        for role, estimator in self.estimators.items():
            estimator.restore(host["advantages"][role])
        if self.warm_batches is not None and host["data"]:
            self.warm_batches.restore(host["data"])
        check_restored_demonstrations(host.get("demonstrations"), [t.task_id for t in self.demo_tasks])

    # -- the run -----------------------------------------------------------

    def run(self) -> list[dict]:
        """Runs to the end; returns the records it wrote."""
        warm_steps, iterations = self.warm_steps, self.cmat.rl.iterations
        records: list[dict] = []
        with self.records(warm_steps + iterations, "cmat") as (writer, bar):

            def write(record: dict) -> None:
                records.append(record)
                writer.write(self.step, record, group=record["phase"])

            if warm_steps == 0 and self.step == 0 and iterations > 0:
                write(self._evaluate())  # the starting point: the base model
            while self.step < warm_steps:
                interrupts.check()  # a signal stops the run here, between steps (and iterations below)
                record = self._sft_update(self.step)
                self.step += 1
                bar.update(1)
                bar.set_postfix(phase="sft", loss=f"{record['loss']:.3f}")
                if self.step % self.settings.train.log_every == 0 or self.step == warm_steps:
                    write(record)
                if self.step == warm_steps:
                    # Evaluated before the save, so a run resumed from this checkpoint has the record.
                    write(self._evaluate())
                    self.twin.save_warm_start(self.state, self._host_state())
                    self.save(self._host_state(), force=True)
                elif self.checkpointer.should_save(self.step):
                    self.save(self._host_state())
            while self.iteration < iterations:
                interrupts.check()
                record = self._iteration()
                write(record)
                bar.update(1)
                bar.set_postfix(phase="rl", success=f"{record['success_rate']:.2f}")
                if self.iteration % self.cmat.rl.eval_every == 0 or self.iteration == iterations:
                    write(self._evaluate())
                if self.iteration == iterations or self.iteration % self.settings.checkpoint.every == 0:
                    self.save(self._host_state(), force=True)  # checkpoint.every counts iterations here
        # Process 0 alone writes the records; every process plans the twin from them. The twin runs once the run's
        # last save is written (records() waits for it), as it replaces the adapters.
        history = distributed.on_main(self._history)
        twin = self.twin.run(self.state, history, train_step=self._sft_update, evaluate=self._evaluate,
                             restore_host=lambda host: self.warm_batches.restore(host["data"]),
                             host_state=self._host_state)
        if self.is_main:
            if any(r["phase"] == "eval" for r in history):
                plot_success(history, os.path.join(self.workdir, "success.png"), twin=twin)
                print(write_summary(self.workdir, history, twin))
        return records

    def _history(self) -> list[dict]:
        """Every record of the run's metrics.jsonl, those written before a resume included."""
        return [line.value for line in check_metrics_file(os.path.join(self.workdir, "metrics.jsonl"))]

    def _sft_update(self, step: int) -> dict:
        """One SFT update on the next warm-start batch at schedule step `step` (the warm start's, then the twin's)."""
        start = time.perf_counter()
        host_batch = next(self.warm_batches)
        batch = self.state.put_batch(host_batch, keys=BATCH_KEYS, rows=self.settings.data.batch_size)
        phase = "warm-start" if step < self.warm_steps else "SFT twin"
        metrics, _ = self.read_metrics(self.state.update(ASSISTANT_ROLE, self.sft_step, batch, step),
                                       where=f"{phase} step {step + 1} (update index {step})")
        tokens = int(np.count_nonzero(host_batch["segment_ids"]))
        step_s = time.perf_counter() - start
        return {"phase": "sft", "iteration": 0, "loss": metrics["loss"], "grad_norm": metrics["grad_norm"],
                "tokens_per_s": tokens / max(step_s, 1e-9), "step_s": step_s}

    def _iteration(self) -> dict:
        c = self.cmat
        start = time.perf_counter()
        rollouts = self._rollouts()
        solved = sum(any(t.correct for t in rollouts.trajectories if t.task_id == task.task_id)
                     for task in rollouts.tasks)
        rollout_s = time.perf_counter() - start

        start = time.perf_counter()
        record = {"phase": "rl", "iteration": self.iteration + 1,
                  **episode_lib.rollout_metrics(rollouts.trajectories, c.rl.format_penalty),
                  "reflections": episode_lib.reflections_used(rollouts.trajectories),
                  "pass_rate": solved / len(rollouts.tasks)}  # tasks some sample solved (pass@G)
        tokens = 0
        for role in self.trained_roles:
            segments, report = episode_lib.training_segments(rollouts.kept, role, c.rl.format_penalty,
                                                             self.estimators[role], positive_only=c.rl.positive_only,
                                                             reinforced_only=c.rl.reinforced_only)
            if rollouts.report:  # dynamic sampling: zero_adv_frac is the kept groups'; before, every group played
                report["zero_adv_frac_before"] = episode_lib.zero_adv_frac(
                    rollouts.trajectories, role, c.rl.format_penalty, self.estimators[role])
            batches = pack_segments(segments, rows=c.rl.rows, seq_len=c.rl.seq_len, pad_id=self._pad_id())
            means = self._update(role, batches)
            tokens += sum(int(np.count_nonzero(b["segment_ids"])) for b in batches) * c.rl.update_epochs
            prefix = "" if role == ASSISTANT_ROLE else f"{role}_"
            record.update({f"{prefix}{k}": v for k, v in {**report, **means}.items()})
        record.update(rollouts.report)
        update_s = time.perf_counter() - start
        self.iteration += 1
        self.step = self.warm_steps + self.iteration
        record.update(rollout_s=rollout_s, update_s=update_s, tokens_per_s=tokens / max(update_s, 1e-9),
                      skipped=float(self.skipped_steps))
        return record

    def _rollouts(self) -> Rollouts:
        """The iteration's episodes: one round of rollout.tasks_per_iteration tasks, or with rl.groups_per_update
        as many rounds as fill it (rl/dynamic_sampling.py). Every task's outcomes go to the User's curriculum."""
        c = self.cmat
        key = jax.random.fold_in(jax.random.key(self.settings.seed), self.iteration)

        def play(tasks):
            trajectories = self.train_engine.run(tasks, group_size=c.rollout.group_size, key=key,
                                                 weights=self._weights(), memory=self.memory, user=self.user)
            for task in tasks:
                self.user.record(task.task_id, [t.correct for t in trajectories if t.task_id == task.task_id])
            if c.rl.grounded_reward:
                withhold_luck(trajectories)
            if c.rl.statement_credit:
                add_statement_credit(trajectories, c.rl.statement_credit)
            return trajectories

        informative = lambda played: episode_lib.signal_tasks(  # noqa: E731
            played, c.rl.format_penalty, self.estimators[ASSISTANT_ROLE])
        return play_rounds(lambda count, exclude: self.user.draw(count, exclude=exclude), play, informative,
                           tasks_per_round=c.rollout.tasks_per_iteration, groups_per_update=c.rl.groups_per_update,
                           max_rounds=c.rl.max_sampling_rounds)

    def _update(self, role: str, batches: list[dict]) -> dict:
        """rl.update_epochs passes over `batches`; token-weighted means of the step's metrics."""
        sums: dict[str, float] = {}
        weight = 0.0
        for _ in range(self.cmat.rl.update_epochs):
            for host_batch in batches:
                batch = self.state.put_batch(host_batch, keys=RL_BATCH_KEYS, rows=self.cmat.rl.rows,
                                             rows_field="rl.rows")
                metrics, _ = self.read_metrics(self.state.update(role, self.rl_step, batch, self.updates),
                                               where=f"the {role}'s RL update {self.updates} (iteration "
                                               f"{self.iteration + 1})", learning_rate_field="rl.learning_rate")
                self.updates += 1
                n = metrics.pop("loss_tokens")
                weight += n
                for k in METRIC_MEANS:
                    if k in metrics:
                        sums[k] = sums.get(k, 0.0) + metrics[k] * n
        return {k: v / weight for k, v in sums.items()} if weight else {k: 0.0 for k in METRIC_MEANS}

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        return int(pad or 0)

    def _evaluate(self) -> dict:
        start = time.perf_counter()
        trajectories = self.eval_engine.run(self.eval_tasks, weights=self._weights(),
                                            memory=ReflectionMemory(self.cmat.reflection.omega), user=self.eval_user)
        finals = {}
        for t in trajectories:  # a task counts as solved if any of its trials is
            finals[t.task_id] = finals.get(t.task_id, False) or t.correct
        first_trials = [t for t in trajectories if t.trial == 0]
        record = {"phase": "eval", "iteration": self.iteration,
                  **episode_lib.rollout_metrics(first_trials, self.cmat.rl.format_penalty)}
        record["success_rate"] = sum(finals.values()) / max(len(finals), 1)
        record["reflections"] = episode_lib.reflections_used(trajectories)
        # DBBench's scores: over each task's last trial (any trial solved it), and over first trials alone
        # (DBBench's own single-attempt protocol).
        for prefix, outcomes in (("", final_trajectories(trajectories)), ("trial1_", first_trials)):
            dbbench = dbbench_metrics([t.final_info for t in outcomes])
            record.update({f"{prefix}{k}": dbbench[k] for k in DBBENCH_SCORES})
        record["eval_s"] = time.perf_counter() - start
        return record


    def close(self) -> None:
        self.twin.close()  # before the run's checkpointer, which releases the workdir's lock
        super().close()


def without_timings(records: list[dict]) -> list[dict]:
    """Records minus wall-clock measurements: what an interrupted and an uninterrupted run share."""
    return [{k: v for k, v in r.items() if k not in TIMING_METRICS} for r in records]
