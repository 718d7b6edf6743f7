"""The SFT twin (`rl.sft_twin`): continued SFT on the warm start's demonstrations, for the iterations' time.

Every claim that the CMAT iterations help is made against this twin. It starts from the same
warm-start checkpoint (adapters, optimizer state, data position), keeps training on the same
demonstrations with the warm start's own step (its schedule has reached its end learning rate,
train.learning_rate * train.end_lr_ratio, and stays there), for as many steps as the warm start's
median step time fits in the iterations' rollouts and updates (evaluations left out of both), or
for `rl.sft_twin_steps` steps when that is set. The length is planned from the run's records before
the first step, so every process of a run takes the same number of steps and a replayed twin repeats
its records; its measured seconds are reported beside the iterations'. It is evaluated on the
held-out tasks at the same shares of its length as the iterations were, so both curves share one
axis: training time.

Files: the warm start is saved a second time to <workdir>/sft_twin/checkpoints (or, with
checkpoint.directory set, to that directory's sibling <directory>-sft_twin, which every host sees as
it sees the run's own), because the run's checkpoints keep only the last few, which the iterations
replace. The twin's end is saved there too, at step train.steps + its steps, and <workdir>/sft_twin
gets the run's config.json naming that directory: it is then a workdir like any run's, which
`python -m cmat_jax.evaluate --config.model.workdir=<workdir>/sft_twin`, tools/export_hf.py and
tools/check_parity.py read (its latest checkpoint is the twin's end). The twin's records go to
<workdir>/sft_twin/metrics.jsonl (phases 'sft' and 'eval', `twin_step` counting its steps) with its
TensorBoard events beside them.

Lifetime: the twin is built once the run holds its workdir's lock and has passed its start and resume
checks (training/driver.py), and closed before the lock is released. It runs after the last iteration.
A fresh run starts it empty: any twin files there were left by a run the workdir no longer holds (one
replaced with overwrite=true). A resume past the warm start needs the twin's copy of it and is refused,
before the model is built, when it is gone. A run killed during the twin replays it from the warm start
on resume; one that finished it, beside the run's last iteration, reads its records back.
"""

from __future__ import annotations

import json
import math
import os
from typing import Callable, Optional, Sequence

from cmat_jax import distributed, interrupts
from cmat_jax.fileio import write_text_atomic
from cmat_jax.settings.run import RunSettings
from cmat_jax.training.checkpoint import Checkpointer
from cmat_jax.training.metrics import METRICS_FILE, MetricsWriter, check_metrics_file, truncate_metrics_after
from cmat_jax.training.workdir import CONFIG_FILE, START_OVER, saved_config

TWIN_DIR = "sft_twin"


def iteration_seconds(history: Sequence[dict]) -> list[tuple[int, float]]:
    """(iteration, rollout and update seconds so far) after each iteration of the run's records."""
    total, out = 0.0, []
    for record in history:
        if record["phase"] == "rl":
            total += float(record["rollout_s"]) + float(record["update_s"])
            out.append((int(record["iteration"]), total))
    return out


def warm_step_seconds(history: Sequence[dict]) -> float:
    """The median time of a warm-start SFT step (the median leaves the first steps' compilation out)."""
    seconds = sorted(float(r["step_s"]) for r in history if r["phase"] == "sft")
    if not seconds:
        raise ValueError("the run's records hold no warm-start step, so the SFT twin cannot match the iterations' "
                         "time; set rl.sft_twin_steps to a number of steps")
    return seconds[len(seconds) // 2]


def plan_twin(history: Sequence[dict], fixed_steps: int = 0) -> dict:
    """The twin's length and evaluations from the run's records: {"steps": K, "marks": [[step, iteration], ...]}.

    K is `fixed_steps`, or as many warm-start steps (at their median time) as fit in the iterations'
    rollout and update seconds. The twin is evaluated after the step whose share of K equals the share
    of the iterations' time at which each of their evaluations fell, and at K (beside the last iteration)."""
    seconds = iteration_seconds(history)
    if not seconds:
        return {"steps": 0, "marks": []}
    total = seconds[-1][1]
    steps = int(fixed_steps) or max(1, round(total / warm_step_seconds(history)))
    at = dict(seconds)
    evaluated = sorted({int(r["iteration"]) for r in history if r["phase"] == "eval"} & set(at))
    marks = {i: max(1, math.ceil(steps * at[i] / total - 1e-9)) if total > 0 else steps for i in evaluated}
    marks[seconds[-1][0]] = steps
    return {"steps": steps, "marks": sorted([min(step, steps), i] for i, step in marks.items())}


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
        self.workdir, own = settings.workdir, settings.checkpoint.directory
        self.own_directory = f"{own.rstrip('/')}-{TWIN_DIR}" if own else ""  # "": <workdir>/sft_twin/checkpoints
        path = self.own_directory or os.path.join(self.directory, "checkpoints")
        self.checkpointer = Checkpointer(path, every=1, keep=2, async_save=False)  # the warm start and the end
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
            if self.is_main and os.path.exists(os.path.join(self.directory, CONFIG_FILE)):
                os.remove(os.path.join(self.directory, CONFIG_FILE))  # it named an earlier run's twin
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
            evaluate: Callable[[], dict], restore_host: Callable[[dict], None],
            host_state: Callable[[], dict]) -> list[dict]:
        """Restores the warm start into `state`, trains with `train_step(step) -> record` (one SFT update
        at that schedule step) for the planned steps, evaluating with `evaluate()` at the marks, and saves
        its end (host items from `host_state()`); returns the twin's records. `run_history`: the run's
        records (process 0's, on every process, so every process plans the same twin); `restore_host`
        receives the warm start's host items (data position)."""
        seconds = iteration_seconds(run_history)
        if not self.enabled or not seconds:
            return []
        if self.finished(seconds[-1][0]):
            return self.history()
        from tqdm import tqdm

        plan = plan_twin(run_history, self.steps)
        self._drop_records()  # a twin killed part-way is replayed whole
        for step in self.checkpointer.all_steps():
            if step != self.warm_steps:
                self.checkpointer.delete(step)  # the end of a shorter twin, replayed now
        self._restore(state, restore_host)
        writer = MetricsWriter(self.directory, enabled=self.is_main, start_step=self.warm_steps)
        bar = tqdm(total=plan["steps"], desc="sft twin", unit="step", disable=not self.is_main,
                   dynamic_ncols=True)
        try:
            records = self._train(plan, train_step, evaluate, writer, bar)
        finally:
            bar.close()
            writer.close()
        state.save(self.warm_steps + plan["steps"], host_state(), force=True, checkpointer=self.checkpointer)
        self.checkpointer.wait()
        if self.is_main:
            self._write_config()
        return records

    def _write_config(self) -> None:
        """The run's config.json, naming the twin's checkpoints, so <workdir>/sft_twin reads as a workdir."""
        config = saved_config(self.workdir)
        config["checkpoint"]["directory"] = self.own_directory
        write_text_atomic(os.path.join(self.directory, CONFIG_FILE), json.dumps(config, indent=2))

    def _train(self, plan: dict, train_step: Callable[[int], dict], evaluate: Callable[[], dict],
               writer: MetricsWriter, bar) -> list[dict]:
        """The planned SFT steps, evaluating after each marked step."""
        records, marks = [], [tuple(m) for m in plan["marks"]]
        for done in range(1, plan["steps"] + 1):
            interrupts.check()  # a signal stops the twin between steps; a resume replays it
            record = train_step(self.warm_steps + done - 1)
            record.pop("iteration", None)
            record.update(twin_step=done)
            records.append(record)
            writer.write(self.warm_steps + done, record, group="twin_sft")
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            if marks and done >= marks[0][0]:
                beside = [m for m in marks if m[0] <= done][-1][1]
                marks = [m for m in marks if m[0] > done]
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
