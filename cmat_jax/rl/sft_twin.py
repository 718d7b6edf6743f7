"""The SFT twin (`rl.sft_twin`): continued SFT on the warm start's demonstrations, for the iterations' time.

Every claim that the CMAT iterations help is made against this twin. It starts from the same
warm-start checkpoint (adapters, optimizer state, data position), keeps training on the same
demonstrations with the warm start's own step (its schedule has reached its end learning rate,
train.learning_rate * train.end_lr_ratio, and stays there), and stops when its SFT steps have taken
as long as the iterations' rollouts and updates (evaluations left out of both), or after
`rl.sft_twin_steps` steps when that is set. It is evaluated on the held-out tasks at the same shares
of its budget as the iterations were, so both curves share one axis: training seconds.

Files: the warm start is saved a second time to <workdir>/sft_twin/checkpoints (or, with
checkpoint.directory set, to that directory's sibling <directory>-sft_twin, which every host sees as
it sees the run's own), because the run's checkpoints keep only the last few, which the iterations
replace. The twin's records go to <workdir>/sft_twin/metrics.jsonl (phases 'sft' and 'eval',
`twin_step` counting its steps) with its TensorBoard events beside them.

Lifetime: the twin is built once the run holds its workdir's lock and has passed its start and resume
checks (training/driver.py), and closed before the lock is released. It runs after the last iteration.
A fresh run starts it empty: any twin files there were left by a run the workdir no longer holds (one
replaced with overwrite=true). A resume past the warm start needs the twin's copy of it and is refused,
before the model is built, when it is gone. A run killed during the twin replays it from the warm start
on resume; one that finished it, beside the run's last iteration, reads its records back.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

from cmat_jax import distributed, interrupts
from cmat_jax.settings.run import RunSettings
from cmat_jax.training.checkpoint import Checkpointer
from cmat_jax.training.metrics import METRICS_FILE, MetricsWriter, check_metrics_file, truncate_metrics_after
from cmat_jax.training.workdir import START_OVER

TWIN_DIR = "sft_twin"


def iteration_seconds(history: Sequence[dict]) -> list[tuple[int, float]]:
    """(iteration, rollout and update seconds so far) after each iteration of the run's records."""
    total, out = 0.0, []
    for record in history:
        if record["phase"] == "rl":
            total += float(record["rollout_s"]) + float(record["update_s"])
            out.append((int(record["iteration"]), total))
    return out


def budget_marks(history: Sequence[dict], budget: float) -> list[tuple[float, int]]:
    """(share of `budget`, iteration) pairs at which the twin is evaluated: where the iterations'
    evaluations fell on their own training time, each with the iteration it stands beside (the warm
    start's evaluation, at 0, is the twin's starting point too). The last is (budget, last iteration)."""
    seconds = iteration_seconds(history)
    if not seconds:
        return []
    total = seconds[-1][1]
    at = dict(seconds)
    evaluated = sorted({int(r["iteration"]) for r in history if r["phase"] == "eval"} & set(at))
    marks = {i: budget * min(1.0, at[i] / total) if total > 0 else budget for i in evaluated}
    marks[seconds[-1][0]] = budget
    return sorted((mark, i) for i, mark in marks.items())


class SftTwin:
    """The twin of one CMAT run; inert unless rl.sft_twin is true. `resume_at`: the checkpoint step the run
    resumes from (None: a fresh start)."""

    def __init__(self, settings: RunSettings, *, resume_at: Optional[int], is_main: bool = True):
        rl = settings.cmat.rl
        self.enabled, self.steps, self.warm_steps = rl.sft_twin, rl.sft_twin_steps, settings.train.steps
        self.directory = os.path.join(settings.workdir, TWIN_DIR)
        self.is_main = is_main
        self.checkpointer: Optional[Checkpointer] = None
        if not self.enabled:
            return
        own = settings.checkpoint.directory
        path = f"{own.rstrip('/')}-{TWIN_DIR}" if own else os.path.join(self.directory, "checkpoints")
        self.checkpointer = Checkpointer(path, every=1, keep=1, async_save=False)
        try:
            self._check_start(settings.workdir, resume_at)
        except BaseException:
            self.close()
            raise

    def _check_start(self, workdir: str, resume_at: Optional[int]) -> None:
        """A fresh run clears what an earlier run left of a twin; a resume past the warm start needs its copy."""
        if resume_at is None:
            for step in self.checkpointer.all_steps():
                self.checkpointer.delete(step)
            self._drop_records()
        elif resume_at >= self.warm_steps and self.warm_steps not in self.checkpointer.all_steps():
            raise FileNotFoundError(
                f"cannot resume {workdir} with rl.sft_twin: the twin starts from its copy of the warm start (step "
                f"{self.warm_steps}) in {self.checkpointer.directory}, which holds steps "
                f"{self.checkpointer.all_steps() or 'none'}; put that copy back, or {START_OVER}")

    def _drop_records(self) -> None:
        """Every record of the twin (they all follow the warm start): it is always replayed whole."""
        if self.is_main:
            truncate_metrics_after(os.path.join(self.directory, METRICS_FILE), -1)

    def save_warm_start(self, state, host: dict) -> None:
        """Keeps the warm start (call before the run's own save of it, so a resumed run always finds it)."""
        if self.enabled and self.warm_steps not in self.checkpointer.all_steps():
            state.save(self.warm_steps, host, force=True, checkpointer=self.checkpointer)

    def history(self) -> list[dict]:
        return [line.value for line in check_metrics_file(os.path.join(self.directory, METRICS_FILE))]

    def finished(self, last_iteration: int) -> bool:
        """The twin's records end in its final evaluation beside `last_iteration` (a run resumed with more
        iterations has a longer budget, and replays the twin). Process 0's records decide for every process."""
        return any(r.get("final") and r.get("beside_iteration") == last_iteration
                   for r in distributed.on_main(self.history))

    def run(self, state, run_history: Sequence[dict], *, train_step: Callable[[int], dict],
            evaluate: Callable[[], dict], restore_host: Callable[[dict], None]) -> list[dict]:
        """Restores the warm start into `state`, trains with `train_step(step) -> record` (one SFT update
        at that schedule step) until the budget is spent, evaluating with `evaluate()` at the marks;
        returns the twin's records. `run_history`: the run's records (process 0's, on every process);
        `restore_host` receives the warm start's host items (data position)."""
        seconds = iteration_seconds(run_history)
        if not self.enabled or not seconds:
            return []
        if self.finished(seconds[-1][0]):
            return self.history()
        from tqdm import tqdm

        self._drop_records()  # a twin killed part-way is replayed whole
        self._restore(state, restore_host)
        budget = float(self.steps) if self.steps else seconds[-1][1]
        writer = MetricsWriter(self.directory, enabled=self.is_main, start_step=self.warm_steps)
        bar = tqdm(total=1.0, desc="sft twin", unit="budget", disable=not self.is_main, dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {postfix}")
        try:
            return self._train(budget_marks(run_history, budget), budget, train_step, evaluate, writer, bar)
        finally:
            bar.close()
            writer.close()

    def _train(self, marks: list[tuple[float, int]], budget: float, train_step: Callable[[int], dict],
               evaluate: Callable[[], dict], writer: MetricsWriter, bar) -> list[dict]:
        """SFT steps until `budget` (steps, or seconds) is spent, evaluating at each of `marks`."""
        records, spent, done = [], 0.0, 0
        while marks:
            interrupts.check()  # a signal stops the twin between steps; a resume replays it
            record = train_step(self.warm_steps + done)
            done += 1
            # Process 0's step time: every process must take the same number of steps.
            spent += 1.0 if self.steps else distributed.on_main(lambda: float(record["step_s"]))
            record.pop("iteration", None)
            record.update(twin_step=done)
            records.append(record)
            writer.write(self.warm_steps + done, record, group="twin_sft")
            bar.n = min(spent / max(budget, 1e-9), 1.0)
            bar.set_postfix(step=done, loss=f"{record['loss']:.3f}")
            if spent >= marks[0][0] - 1e-9:
                while marks and spent >= marks[0][0] - 1e-9:
                    beside = marks.pop(0)[1]
                result = {k: v for k, v in evaluate().items() if k != "iteration"}
                result.update(twin_step=done, beside_iteration=beside, final=not marks,
                              train_s=sum(float(r["step_s"]) for r in records if r["phase"] == "sft"))
                records.append(result)
                writer.write(self.warm_steps + done, result, group="twin_eval")
        return records

    def _restore(self, state, restore_host: Callable[[dict], None]) -> None:
        restore_host(state.restore(self.warm_steps, checkpointer=self.checkpointer))

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.wait()
            self.checkpointer.close()
            self.checkpointer = None
