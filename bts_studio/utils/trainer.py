"""The trainer of every bts-studio method: nerfstudio's ``Trainer`` with atomic checkpoints, a resume that
survives a damaged checkpoint, and a stop on non-finite losses or gradients.

It is set as ``TrainerConfig._target`` in our method configs (``trainer_defaults.plugin_trainer_target``), so
``ns-train`` builds it and nerfstudio itself is not patched:

- ``save_checkpoint`` writes ``step-N.ckpt`` under a temporary name next to the run (``<base>/.step-N.ckpt.partial``,
  outside ``nerfstudio_models/`` so nerfstudio's own "newest checkpoint" listing never sees it), then renames it
  into place: a run killed while saving leaves the previous checkpoints intact.
- ``--load-dir`` without ``--load-step`` tries the checkpoints newest first and resumes from the newest one that
  loads, printing which ones were skipped and why (e.g. one truncated by an older, non-atomic save).
- Exact resume (one process): checkpoints also hold the random generators' states (torch's CPU generator, the
  training device's CUDA generator, NumPy's and Python's global ones), restored on load, so N steps and then M
  resumed steps draw the same batches as N + M steps in one go (nerfstudio re-seeds the generators at start-up,
  and the datamanagers draw pixels and input views from torch's global generator). A run stopped by the time
  budget (``--pipeline.max-train-seconds``) saves its last *trained* step: nerfstudio's loop has already advanced
  ``step`` to the next one when it sees the stop flag, and saving under that number made a resume skip a step
  index. Under DDP each rank has its own generators and only rank 0 writes, so a multi-GPU resume keeps the
  freshly seeded ones (as before).
- After each step, a non-finite loss or gradient ends the run with :class:`NonFiniteTrainingError`, naming the
  step, the loss terms, the parameters and the training images of the batch; nothing is saved after it, so no
  NaN checkpoint is written. (With ``--mixed-precision`` the gradient scaler already skips steps with inf
  gradients, so only the loss is checked.) Under DDP the check travels in the step's one agreed all-reduce
  (``StepAgreement``, with the logged losses and the time budget), so all ranks stop together.
- Draw-ahead (``--pipeline.draw-ahead``, on by default since an H200 run measured it; datamanagers that declare
  ``draws_depend_only_on_step``): after step N's work is queued and before its one host sync, the batch of step
  N+1 is drawn (on CUDA on a side stream), so its host work (group draw, patch sampling, ray generation,
  host->device copies and their syncs) overlaps step N's GPU work instead of following it with the GPU idle. The
  batch is the same as the one drawn at the start of step N+1 (it depends only on the step), so the losses are
  identical; step N is still checked and agreed before anything else happens (callbacks, logs, eval, save, the
  stop decision), and an error still names step N and its batch.
- Multi-GPU (``--machine.num-devices N``, ``docs/multi_gpu.md``): only rank 0 writes checkpoints, the training-curve
  CSV, ``dataparser_transforms.json`` and runs the in-training evaluation (nerfstudio already keeps the viewer and
  the loggers on rank 0). Checkpoints hold the model's keys without DDP's ``module.`` prefix, so a run resumes
  with ``--load-dir`` on any number of GPUs, and ns-eval / ns-render read it as a one-GPU checkpoint.
"""

import dataclasses
import os
import random
import re
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch
from nerfstudio.engine.trainer import Trainer
from nerfstudio.utils import comms
from nerfstudio.utils.rich_utils import CONSOLE

from bts_studio.data.checks import UserError
from bts_studio.methods.common.distributed import any_rank

CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.ckpt$")
DDP_MODEL_PREFIX = "_model.module."
NON_FINITE_FLAG = "non_finite"


class NonFiniteTrainingError(UserError):
    """A training step produced a NaN/inf loss or gradient; the run stops before anything is saved."""


class CheckpointError(UserError):
    """No checkpoint of ``--load-dir`` / ``--load-checkpoint`` can be loaded."""


def checkpoints_newest_first(folder: Path) -> List[Path]:
    """``step-N.ckpt`` files of ``folder``, highest step first (other files are ignored)."""
    found = [(int(m.group(1)), path) for path in folder.iterdir() if (m := CHECKPOINT_NAME.match(path.name))]
    return [path for _, path in sorted(found, reverse=True)]


def checkpoint_step(path: Path) -> int:
    """The step ``N`` of a ``step-N.ckpt`` path."""
    match = CHECKPOINT_NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path} is not named step-N.ckpt")
    return int(match.group(1))


def try_load(
    path: Path, optimizer_groups: Optional[Iterable[str]] = None
) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """``(None, rng)`` if ``path`` loads as a nerfstudio checkpoint, with its random-generator entry (None in older
    checkpoints), else ``(why not, None)`` (one line): the check's load is the only one besides nerfstudio's.

    With ``optimizer_groups`` (this run's parameter-group names) a checkpoint whose optimizer groups differ is not
    loadable either: nerfstudio would fail on an unknown group, load a group's state into a group of other
    parameters (e.g. bts-density's ``decoder_param_group`` moves the decoder out of ``encoder``), or leave a new
    group fresh without saying so.
    """
    try:
        state = torch.load(path, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - any failure means "not loadable"; the reason is reported
        return f"{type(error).__name__}: {error}".splitlines()[0][:200] or type(error).__name__, None
    if not isinstance(state, dict) or not {"step", "pipeline", "optimizers"} <= set(state):
        return "not a nerfstudio checkpoint (no step/pipeline/optimizers)", None
    if optimizer_groups is not None and set(state["optimizers"]) != set(optimizer_groups):
        return (
            f"its optimizer parameter groups are {sorted(state['optimizers'])}, this run's are "
            f"{sorted(optimizer_groups)} (a training option that changes the groups differs)"
        ), None
    return None, state.get("rng")


def unwrapped_state(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A pipeline state dict with DDP's ``_model.module.`` keys renamed ``_model.`` (others unchanged)."""
    return {
        ("_model." + key[len(DDP_MODEL_PREFIX) :] if key.startswith(DDP_MODEL_PREFIX) else key): value
        for key, value in state.items()
    }


class BTSStudioTrainer(Trainer):
    """``Trainer`` with atomic checkpoints, a fall-back resume and a stop on non-finite steps (module docstring)."""

    _last_train_batch = None
    _last_trained_step: Optional[int] = None  # the last step whose train_iteration completed
    _drawn_ahead: Optional[Tuple[int, Any]] = None  # (step, batch) drawn during the previous step
    _draw_stream: Optional["torch.cuda.Stream"] = None

    def setup(self, test_mode="val") -> None:
        if str(self.device).startswith("cuda:"):
            # nerfstudio's launcher does not select each process's GPU; collectives made before DDP exists (the
            # datamanager's shared seed) and NCCL need it, or every rank would talk through GPU 0.
            torch.cuda.set_device(torch.device(self.device))
        if self.world_size > 1 and "OMP_NUM_THREADS" not in os.environ:
            # nerfstudio's launcher (torch.multiprocessing.spawn) leaves every process with a CPU thread pool as
            # large as the machine; N processes would then oversubscribe the cores with spinning threads. torchrun
            # avoids this by setting OMP_NUM_THREADS; here each process gets its share of the cores.
            torch.set_num_threads(max(1, torch.get_num_threads() // self.world_size))
        super().setup(test_mode=test_mode)
        datamanager = self.pipeline.datamanager
        next_train = self._draw_train_batch = datamanager.next_train

        def recording_next_train(step: int):
            batch = self._take_drawn_ahead(step)
            if batch is None:
                batch = next_train(step)
            self._last_train_batch = batch
            return batch

        datamanager.next_train = recording_next_train  # instance attribute: remembers the batch for error messages
        outputs = getattr(datamanager, "train_dataparser_outputs", None)
        if outputs is not None and not comms.is_main_process():
            # Trainer.train writes dataparser_transforms.json; the other ranks would write the same file at once.
            outputs.save_dataparser_transform = lambda path: None

    # ----------------------------------------------------------------------------------------- checkpoints
    def _load_checkpoint(self) -> None:
        config = self.config
        rng = None
        groups = list(self.optimizers.optimizers)
        if config.load_dir is not None and config.load_step is None:
            load_dir = Path(config.load_dir)
            if not load_dir.is_dir():
                raise CheckpointError(f"--load-dir {load_dir}: folder not found (expected a run's nerfstudio_models/)")
            candidates = checkpoints_newest_first(load_dir)
            if not candidates:
                raise CheckpointError(f"--load-dir {load_dir}: no step-N.ckpt checkpoint in it")
            skipped = []
            for path in candidates:
                problem, rng = try_load(path, groups)
                if problem is None:
                    if skipped:
                        CONSOLE.print(
                            f"[bold yellow]Resuming from {path.name}: the newer checkpoint(s) "
                            + "; ".join(f"{p.name} ({why})" for p, why in skipped)
                            + " cannot be loaded and were skipped."
                        )
                    config.load_step = checkpoint_step(path)
                    break
                skipped.append((path, problem))
            else:
                details = "; ".join(f"{p.name}: {why}" for p, why in skipped)
                raise CheckpointError(f"--load-dir {load_dir}: no checkpoint can be loaded ({details})")
        elif config.load_dir is not None:
            chosen = Path(config.load_dir) / f"step-{config.load_step:09d}.ckpt"
            problem, rng = try_load(chosen, groups) if chosen.is_file() else ("file not found", None)
            if problem is not None:
                raise CheckpointError(f"--load-step {config.load_step}: {chosen} cannot be loaded ({problem})")
        elif config.load_checkpoint is not None:
            problem, rng = try_load(Path(config.load_checkpoint), groups)
            if problem is not None:
                raise CheckpointError(f"--load-checkpoint {config.load_checkpoint}: cannot be loaded ({problem})")
        super()._load_checkpoint()
        if config.load_dir is not None or config.load_checkpoint is not None:
            self._restore_rng_state(rng)

    def _rng_state(self) -> Dict[str, Any]:
        """The global random generators' states, as tensors, strings and numbers (``weights_only`` loads them)."""
        kind, keys, position, has_gauss, cached = np.random.get_state()
        state: Dict[str, Any] = {
            "world_size": self.world_size,
            "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
            "python": random.getstate(),
        }
        if str(self.device).startswith("cuda"):
            state["cuda"] = torch.cuda.get_rng_state(torch.device(self.device))
        return state

    def _restore_rng_state(self, state: Optional[Dict[str, Any]]) -> None:
        """Set the generators to a checkpoint's ``rng`` entry (module docstring); a checkpoint without one (older
        runs) or of a multi-GPU run, or a multi-GPU resume, keeps the freshly seeded generators, saying so."""
        if state is None or state.get("world_size") != 1 or self.world_size != 1:
            CONSOLE.print(
                "Resume: the random generators start freshly seeded (the checkpoint holds no one-process generator "
                "state, or this run has several processes); the batches differ from an uninterrupted run's."
            )
            return
        torch.set_rng_state(state["torch"])
        kind, keys, position, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        random.setstate(state["python"])
        if "cuda" in state and str(self.device).startswith("cuda"):
            torch.cuda.set_rng_state(state["cuda"], torch.device(self.device))

    def _after_train(self) -> None:
        """nerfstudio's end of training (final checkpoint), under the last trained step's number: after a stop
        flag (time budget) nerfstudio's loop has already set ``self.step`` to the step it did not run."""
        if self.stop_training and self._last_trained_step is not None and self.step > self._last_trained_step:
            self.step = self._last_trained_step
        super()._after_train()

    def save_checkpoint(self, step: int) -> None:
        """Write ``step-N.ckpt`` atomically (temporary file, fsync, rename), then prune as nerfstudio does.

        Only rank 0 writes (as nerfstudio's own ``save_checkpoint``); DDP's ``module.`` prefix is dropped.
        """
        if not comms.is_main_process():
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        target = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        temporary = self.checkpoint_dir.parent / f".{target.name}.{os.getpid()}.partial"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        state = {
            "step": step,
            "pipeline": unwrapped_state(pipeline.state_dict()),  # type: ignore[union-attr]
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
            "rng": self._rng_state(),
        }
        try:
            with open(temporary, "wb") as stream:
                torch.save(state, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("*.ckpt"):
                if old != target:
                    old.unlink()

    # ---------------------------------------------------------------------------------------- finite steps
    def train_iteration(self, step: int):
        """nerfstudio's step, then the non-finite check, agreed by all ranks in the step's one collective.

        The check costs one host sync (a fused L1 norm per gradient instead of one ``isfinite().all()`` read-back
        per parameter); the per-term and per-parameter details are computed only when it fails. Under DDP the flag
        goes into the pipeline's :class:`~bts_studio.methods.common.distributed.StepAgreement` with the logged
        loss means and the time-budget flag, which is resolved here (one small all-reduce per step in all).
        """
        loss, loss_dict, metrics_dict = super().train_iteration(step)
        flag = self._non_finite_flag(loss, loss_dict)  # queued; read below
        if self._draws_ahead(step + 1):
            self._draw_ahead(step + 1)  # host work while the GPU still runs step `step`
        local = bool(flag)  # the step's one host sync
        agreement = getattr(self.pipeline, "step_agreement", None)
        if agreement is not None:
            agreement.add_flag(step, NON_FINITE_FLAG, local)
            non_finite = agreement.resolve(step)[1][NON_FINITE_FLAG]
        else:
            non_finite = any_rank(local)
        if non_finite:
            bad_terms = [name for name, value in loss_dict.items() if not torch.isfinite(value).all()]
            bad_parameters: List[str] = []
            if not self.mixed_precision:
                bad_parameters = [
                    name
                    for name, parameter in self.pipeline.named_parameters()
                    if parameter.grad is not None and not torch.isfinite(parameter.grad).all()
                ]
            message = self._non_finite_message(step, loss_dict, bad_terms, bad_parameters)
            if not local:
                message = "another process's loss was non-finite: " + message
            raise NonFiniteTrainingError(message)
        self._last_trained_step = step
        return loss, loss_dict, metrics_dict

    def _locally_non_finite(self, loss: torch.Tensor, loss_dict: Dict[str, torch.Tensor]) -> bool:
        """True when this process's loss, a loss term or (without mixed precision) a gradient is NaN/inf.

        One host sync: a gradient's L1 norm is non-finite exactly when one of its entries is (or, in float32,
        when it exceeds 3e38, which no trainable step survives either).
        """
        return bool(non_finite_flag(loss, loss_dict, None if self.mixed_precision else self.pipeline.parameters()))

    def _non_finite_flag(self, loss: torch.Tensor, loss_dict: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The check of :meth:`_locally_non_finite`, queued: a 0-d bool tensor, read later (no sync here)."""
        # with mixed precision the gradient scaler already skips steps with inf gradients
        return non_finite_flag(loss, loss_dict, None if self.mixed_precision else self.pipeline.parameters())

    # ----------------------------------------------------------------------------------------- draw-ahead
    def _draws_ahead(self, step: int) -> bool:
        """Whether to draw ``step``'s batch during the previous step (module docstring): the pipeline's
        ``draw_ahead``, a datamanager whose batch depends only on the step, and ``step`` within the run."""
        return (
            bool(getattr(getattr(self.pipeline, "config", None), "draw_ahead", False))
            and bool(getattr(self.pipeline.datamanager, "draws_depend_only_on_step", False))
            and step < self._start_step + self.config.max_num_iterations
        )

    def _draw_ahead(self, step: int) -> None:
        """Draw ``step``'s batch now. On CUDA on a side stream: the draw's own syncs (blocking host->device copies,
        ``.item()`` in ray generation) then wait only for the draw, not for the queued training step; it reads
        nothing the step writes (``draws_depend_only_on_step``)."""
        device_type = str(self.device).split(":")[0]
        # the autocast state that Trainer.train_iteration draws the batch under, so the batch is the same
        autocast = torch.autocast(
            device_type="cpu" if device_type == "mps" else device_type, enabled=self.mixed_precision
        )
        if device_type == "cuda":
            if self._draw_stream is None:
                self._draw_stream = torch.cuda.Stream(device=torch.device(self.device))
                self._draw_stream.wait_stream(torch.cuda.current_stream())  # once: setup's uploads are done
            with torch.cuda.stream(self._draw_stream), autocast:
                batch = self._draw_train_batch(step)
        else:
            with autocast:
                batch = self._draw_train_batch(step)
        self._drawn_ahead = (step, batch)

    def _take_drawn_ahead(self, step: int) -> Any:
        """The batch drawn ahead for ``step`` (None if there is none, or it was drawn for another step), ready for
        the current stream: it waits for the draw stream, and the caching allocator keeps the batch's memory until
        the current stream's work queued before the batch is freed is done (``record_stream``)."""
        drawn, self._drawn_ahead = self._drawn_ahead, None
        if drawn is None or drawn[0] != step:
            return None
        if self._draw_stream is not None:
            current = torch.cuda.current_stream()
            current.wait_stream(self._draw_stream)
            for tensor in _tensors(drawn[1]):
                if tensor.is_cuda:
                    tensor.record_stream(current)
        return drawn[1]

    def eval_iteration(self, step: int) -> None:
        """nerfstudio's in-training evaluation, on rank 0 only (it logs through rank-0 writers anyway)."""
        if comms.is_main_process():
            super().eval_iteration(step)

    def _non_finite_message(
        self, step: int, loss_dict: Dict[str, torch.Tensor], bad_terms: List[str], bad_parameters: List[str]
    ) -> str:
        terms = ", ".join(f"{name}={float(value.detach().float().mean()):.4g}" for name, value in loss_dict.items())
        parameters = ", ".join(bad_parameters[:5]) + (
            f" (+{len(bad_parameters) - 5} more)" if len(bad_parameters) > 5 else ""
        )
        files = self._batch_files()
        return (
            f"training step {step} produced a non-finite "
            + ("loss" if bad_terms else "gradient")
            + f" (loss terms: {terms}"
            + (f"; non-finite gradients in {parameters}" if bad_parameters else "")
            + f"). Batch images: {files}. The run stops here and saves nothing after step {step - 1}; "
            "check these images' cameras (intrinsics, poses) or lower the learning rate, then resume with --load-dir."
        )

    def _batch_files(self) -> str:
        """The training images the last batch was drawn from, as far as the batch tells."""
        batch = self._last_train_batch
        datamanager = self.pipeline.datamanager
        outputs = getattr(datamanager, "train_dataparser_outputs", None)
        names = list(getattr(outputs, "image_filenames", []) or [])
        indices: List[int] = []
        for part in batch if isinstance(batch, tuple) else (batch,):
            camera_indices = getattr(part, "camera_indices", None)
            if isinstance(camera_indices, torch.Tensor):
                indices += camera_indices.reshape(-1).unique().tolist()
            if isinstance(part, dict):
                for key in ("image_idx", "image_indices", "group_images"):
                    value = part.get(key)
                    if isinstance(value, torch.Tensor) and not value.is_floating_point():
                        indices += [int(i) for i in value.reshape(-1).unique().tolist() if int(i) >= 0]
        indices = sorted(set(indices))
        if not indices:
            return "unknown (the batch does not record its images)"
        shown = [str(names[i]) if 0 <= i < len(names) else f"image #{i}" for i in indices[:8]]
        return ", ".join(shown) + (f" (+{len(indices) - 8} more)" if len(indices) > 8 else "")


def non_finite_flag(
    loss: torch.Tensor, loss_dict: Dict[str, torch.Tensor], parameters: Optional[Iterable[torch.nn.Parameter]]
) -> torch.Tensor:
    """0-d bool tensor, True when ``loss``, a loss term or a gradient of ``parameters`` (None: gradients are not
    checked) is NaN/inf. Queues the check without a host sync; reading it is the sync. A gradient's L1 norm is
    non-finite exactly when one of its entries is (or, in float32, when it exceeds 3e38, which no trainable step
    survives either), so all gradients cost one fused norm."""
    checks = [torch.isfinite(value.detach()).all() for value in (loss, *loss_dict.values())]
    grads = [parameter.grad for parameter in parameters or () if parameter.grad is not None]
    if grads:
        total = torch.nn.utils.get_total_norm(grads, norm_type=1.0)
        checks.append(torch.isfinite(total).to(checks[0].device))
    return ~torch.stack(checks).all()


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a batch: tensors, and those inside dicts, lists, tuples and dataclasses (nerfstudio's
    ``RayBundle`` and our typed batches are dataclasses)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from _tensors(getattr(value, item.name))
