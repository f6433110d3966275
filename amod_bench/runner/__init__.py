"""Run a suite on Ray: one Ray Tune trial per cell, one Ray Train `TorchTrainer` per trial.

    python bench.py suites/quickstart.yaml                 # a local Ray instance, started and stopped here
    python bench.py run suites/transfer.yaml --address auto
    ray job submit --working-dir . -- python bench.py suites/transfer.yaml

Ray Tune only schedules: a trial waits for the cells it depends on (an earlier
stage's checkpoint, or a search stage's results), then fits one TorchTrainer
whose workers run `amod_bench.train.train_loop_per_worker` (with
`resources.prestart`, a cell that waits only for an earlier stage's checkpoint
fits as soon as that cell trains, and its workers do the rest of the waiting). Every report from
rank 0 reaches this driver process through Tune (the cell's controller posts it on
the suite's board actor, the cell's trial hands it to Tune), where `ResultsWriter`
turns it into the cell's result files; so results land on the machine that runs
`bench.py`, whichever nodes trained. Checkpoints live in Ray's storage (the
suite's `storage`), which must be a shared filesystem or an object store on a
multi-node cluster.

Rerunning a suite skips done cells, resumes unfinished ones from their last
checkpoint (Ray Train resumes a run given the same storage path and name), and
retries failed or diverged cells only with `--retry-failed`.

Modules, one concern each:
- `cli`: `bench.py run`'s options and main (the suite, then its analyses and report);
- `suite_run`: `run_suite`, the suite's cells as one Tune run, in the driver;
- `planning`: the cells to run or skip, their launch order, how many at once;
- `ray_session`: Ray's environment variables, the connection or local instance, its log;
- `ray_fast_path`: every use of Ray's private API, on the Ray versions it was tested on only;
- `ddp_backend`: the cell's process group, its rendezvous store on the node's own address (127.0.0.1 locally);
- `trial`: one cell's Tune trial and its TorchTrainer (on any node);
- `inputs`: a cell's dependencies and the values resolved from them (weights, a search's pick);
- `board`: the actor where trials and Train controllers meet;
- `writer`: `ResultsWriter`, the Tune callback that writes the result files;
- `tracking`: the suite's `tracking` section as Tune callbacks (MLflow, W&B, TensorBoard runs).
"""
from .cli import add_arguments, main
from .planning import RunError
from .ray_session import loopback_only, ray_env
from .suite_run import run_suite

__all__ = ["add_arguments", "main", "RunError", "run_suite", "loopback_only", "ray_env"]
