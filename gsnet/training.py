"""GSNet's Detectron2 trainer: what GSNet adds to ``DefaultTrainer`` and nothing else.

- optimizer parameter groups: LR x CLIP_MULTIPLIER for CLIP's parameters and
  x BACKBONE_MULTIPLIER for the specialist's (matched by module, not by name), weight decay 0
  for normalisation layers (WEIGHT_DECAY_NORM) and embeddings (WEIGHT_DECAY_EMBED);
- full-model gradient-norm clipping (SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model");
- a training step with optional autocast (fp16 with a gradient scaler on CUDA, bf16 on CPU/GPU)
  that stops before the optimizer step when the loss is not finite;
- DistributedDataParallel on CPU (gloo) as on GPUs;
- the pretrained encoders loaded when training starts without MODEL.WEIGHTS;
- a resumable data stream (gsnet.data.sampling) and checkpoints that also hold every process's
  data position and RNG states, written crash-safely: a killed run resumes exactly;
- errors the user can fix reported as one message naming the last complete checkpoint;
- evaluation of every test set with its own vocabulary (the dataset's class JSON).
"""

import contextlib
import itertools
import logging
import os
import random
import tempfile
import time
import weakref
from collections import OrderedDict

import numpy as np
import torch
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import (
    DefaultTrainer,
    HookBase,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import GSNetCheckpointer, load_pretrained_encoders
from .data import (
    GSNET_DATASETS,
    GSNetSemanticDatasetMapper,
    GSNetTestDatasetMapper,
    ResumableTrainLoader,
    load_class_names,
)
from .errors import ConfigError, GSNetUserError, NonFiniteLossError, user_error_message
from .evaluation import GSNetSemSegEvaluator

__all__ = [
    "GSNetTrainLoop",
    "GSNetTrainer",
    "build_optimizer_param_groups",
    "capture_rng_states",
    "check_output_dir",
    "check_registered",
    "restore_rng_states",
]

logger = logging.getLogger(__name__)


class _UserErrorsWithoutTraceback(logging.Filter):
    """Logs "Exception during training:" (TrainerBase.train) with the message of a
    GSNetUserError instead of its traceback; the tool reports it as one line."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, GSNetUserError):
            record.msg = f"{record.getMessage()} {user_error_message(error)}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


logging.getLogger("detectron2.engine.train_loop").addFilter(_UserErrorsWithoutTraceback())

_NORM_TYPES = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.SyncBatchNorm,
    torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d,
    torch.nn.InstanceNorm3d,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
)
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def build_optimizer_param_groups(cfg, model):
    """Trainable parameters grouped by (learning rate, weight decay).

    Frozen parameters are left out. Each parameter takes the multiplier of the encoder it
    belongs to (by module identity) and the weight decay of the module that holds it.
    """
    solver = cfg.SOLVER
    if not solver.BASE_LR > 0:
        raise ConfigError(
            f"SOLVER.BASE_LR is {solver.BASE_LR}; it must be a positive learning rate (the "
            "paper uses 0.0002). To keep the weights as they are, evaluate with --eval-only."
        )
    clip_params = {id(p) for p in model.generalist.pretrained_module.parameters()}
    specialist = (
        list(model.specialist.pretrained_module.parameters())
        if model.specialist is not None
        else []
    )
    specialist_params = {id(p) for p in specialist}
    if any(p.requires_grad for p in specialist) and solver.BACKBONE_MULTIPLIER == 0:
        raise ConfigError(
            f"MODEL.SEM_SEG_HEAD.DINO_FINETUNE={cfg.MODEL.SEM_SEG_HEAD.DINO_FINETUNE!r} trains "
            "the specialist, but SOLVER.BACKBONE_MULTIPLIER is 0 (its LR would be 0). Set "
            "SOLVER.BACKBONE_MULTIPLIER (1.0 reproduces the published code, which applied no "
            "multiplier to the specialist)."
        )
    groups: dict[tuple[float, float], list] = {}
    seen = set()
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = solver.BASE_LR
            if id(param) in clip_params:
                lr *= solver.CLIP_MULTIPLIER
            elif id(param) in specialist_params:
                lr *= solver.BACKBONE_MULTIPLIER
            weight_decay = solver.WEIGHT_DECAY
            if isinstance(module, _NORM_TYPES):
                weight_decay = solver.WEIGHT_DECAY_NORM
            elif isinstance(module, torch.nn.Embedding):
                weight_decay = solver.WEIGHT_DECAY_EMBED
            groups.setdefault((lr, weight_decay), []).append(param)
    return [
        {"params": params, "lr": lr, "weight_decay": weight_decay}
        for (lr, weight_decay), params in groups.items()
    ]


def with_full_model_gradient_clipping(optimizer_class, max_norm: float):
    """An optimizer class that clips the L2 norm of all gradients together before stepping."""

    class FullModelGradientClippingOptimizer(optimizer_class):
        def step(self, closure=None):
            params = itertools.chain(*[group["params"] for group in self.param_groups])
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            return super().step(closure=closure)

    FullModelGradientClippingOptimizer.__name__ = f"FullModelClipped{optimizer_class.__name__}"
    return FullModelGradientClippingOptimizer


class GSNetTrainLoop(SimpleTrainer):
    """Detectron2's SimpleTrainer step, with optional autocast and a finite-loss check.

    - Autocast: fp16 (CUDA, with a gradient scaler) or bf16 (CPU or CUDA, no scaler needed);
      ``precision`` None trains in fp32.
    - A NaN or infinite loss on any process stops training with :class:`NonFiniteLossError`
      after the backward pass and before the optimizer step, so the bad gradients are never
      applied (Detectron2 raises a FloatingPointError on the main process only, which leaves
      the other processes of a distributed run to apply them).
    """

    def __init__(self, model, data_loader, optimizer, *, precision=None, device_type="cpu"):
        """
        Args:
            model, data_loader, optimizer: as for SimpleTrainer.
            precision (torch.dtype or None): the autocast dtype; None: no autocast.
            device_type (str): "cuda" or "cpu", for autocast and the gradient scaler.
        """
        super().__init__(model, data_loader, optimizer)
        self.precision = precision
        self.device_type = device_type
        self.grad_scaler = torch.amp.GradScaler(device_type) if precision == torch.float16 else None

    def run_step(self):
        assert self.model.training, "[GSNetTrainLoop] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        autocast = (
            contextlib.nullcontext()
            if self.precision is None
            else torch.autocast(self.device_type, dtype=self.precision)
        )
        with autocast:
            loss_dict = self.model(data)
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        self._check_finite(loss_dict)
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def _check_finite(self, loss_dict):
        """Raise NonFiniteLossError on every process when a loss of any process is not finite."""
        local_finite = torch.isfinite(
            torch.stack([v.detach().float() for v in loss_dict.values()])
        ).all()
        finite = local_finite.to(torch.int32)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if bool(finite):
            return
        terms = ", ".join(f"{name}={value.item():.4g}" for name, value in loss_dict.items())
        where = ""
        if comm.get_world_size() > 1:
            where = " on this process" if not bool(local_finite) else " on another process"
        raise NonFiniteLossError(
            f"the loss is not finite{where} ({terms}); the optimizer step was not applied. "
            "Common causes: a learning rate too high (SOLVER.BASE_LR; keep "
            "SOLVER.CLIP_GRADIENTS enabled), fp16 overflow (SOLVER.AMP.PRECISION bfloat16, or "
            "SOLVER.AMP.ENABLED False), or a corrupt sample."
        )

    def state_dict(self):
        state = super().state_dict()
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


def capture_rng_states():
    """The global random generators' states of this process: python, NumPy, torch (CPU) and the
    current CUDA device's (when CUDA is initialised), in types that ``torch.load`` reads with
    ``weights_only=True``."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng_states(states):
    """Restore what :func:`capture_rng_states` returned (CUDA's when CUDA is available)."""
    random.setstate(states["python"])
    numpy = states["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


class _GatherResumeStates(HookBase):
    """Before each checkpoint (PeriodicCheckpointer's schedule), gather the data-stream and RNG
    states of every process, so that the checkpoint the main process writes restores them all.

    It must run before PeriodicCheckpointer and at the same place on every process (it is a
    collective operation): it is inserted before the checkpointer and the evaluation hook.
    """

    def __init__(self, period):
        self.period = period

    def after_step(self):
        iteration = self.trainer.iter
        if (iteration + 1) % self.period == 0 or iteration >= self.trainer.max_iter - 1:
            states = comm.all_gather(self.trainer.process_resume_state())
            self.trainer.gathered_resume_states = (iteration, states)


def check_registered(dataset_names, key):
    """Raise ConfigError naming the config key when a dataset name is not registered."""
    unknown = [name for name in dataset_names if name not in DatasetCatalog.list()]
    if unknown:
        raise ConfigError(
            f"{key} names {unknown}, which {'is' if len(unknown) == 1 else 'are'} not registered. "
            f"GSNet's datasets: {', '.join(spec.name for spec in GSNET_DATASETS)}; a dataset "
            "of your own is registered from a descriptor file named in DATASETS.DESCRIPTORS."
        )


def check_output_dir(output_dir):
    """Make sure that files can be written in ``output_dir`` (created when missing), before
    anything is written there.

    Raises:
        ConfigError: the folder cannot be created or written; the message says why.
    """
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise ConfigError(
            f"OUTPUT_DIR {output_dir} cannot be written: {error.strerror or error}. Choose a "
            "folder you can write to (OUTPUT_DIR, or the OUTPUT_DIR argument of "
            "scripts/train.sh and scripts/eval.sh)."
        ) from error


class GSNetTrainer(DefaultTrainer):
    """Detectron2's DefaultTrainer with GSNet's optimizer, data, checkpointing and evaluation.

    Resuming (``resume_or_load(resume=True)``) restores the iteration, the model, the optimizer,
    the LR scheduler, the AMP gradient scaler, every process's data-stream position and its
    global RNG states, so that with a fixed SEED and deterministic kernels a run killed at any
    moment and resumed ends with the same weights as an uninterrupted one.
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with GSNet's training step and checkpointer, which it builds
        # without a build_* method to override, and DDP without device_ids for CPU (gloo) runs.
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(
            model,
            device_ids=[comm.get_local_rank()] if next(model.parameters()).is_cuda else None,
            broadcast_buffers=False,
            # Single-stream ablations leave trainable encoder parameters unused.
            find_unused_parameters=not model.use_generalist_image,
        )
        self._trainer = GSNetTrainLoop(
            model,
            data_loader,
            optimizer,
            precision=PRECISIONS[cfg.SOLVER.AMP.PRECISION] if cfg.SOLVER.AMP.ENABLED else None,
            device_type=torch.device(cfg.MODEL.DEVICE).type,
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = GSNetCheckpointer(
            model,
            cfg.OUTPUT_DIR,
            allow_unsafe_unpickling=cfg.MODEL.ALLOW_UNSAFE_UNPICKLING,
            trainer=weakref.proxy(self),
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        # (iteration, [state of each process]) gathered by _GatherResumeStates.
        self.gathered_resume_states = None
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        """Resume from OUTPUT_DIR's last checkpoint, else load MODEL.WEIGHTS, else start from the
        pretrained encoders (CLIP_WEIGHTS, DINO_WEIGHTS)."""
        if resume:
            self.checkpointer.remove_partial_files()
        if not (resume and self.checkpointer.has_checkpoint()) and not self.cfg.MODEL.WEIGHTS:
            head = self.cfg.MODEL.SEM_SEG_HEAD
            load_pretrained_encoders(
                unwrap(self.model),
                clip_weights=head.CLIP_WEIGHTS,
                specialist_weights=head.DINO_WEIGHTS,
                allow_unsafe_unpickling=self.cfg.MODEL.ALLOW_UNSAFE_UNPICKLING,
            )
        super().resume_or_load(resume=resume)

    def build_hooks(self):
        hook_list = super().build_hooks()
        if comm.get_world_size() > 1:
            first = next(
                i
                for i, hook in enumerate(hook_list)
                if isinstance(hook, (hooks.PeriodicCheckpointer, hooks.EvalHook))
            )
            hook_list.insert(first, _GatherResumeStates(self.cfg.SOLVER.CHECKPOINT_PERIOD))
        return hook_list

    def process_resume_state(self):
        """This process's data-stream state and global RNG states."""
        return {"data": self._trainer.data_loader.state_dict(), "rng": capture_rng_states()}

    def state_dict(self):
        state = super().state_dict()
        if comm.get_world_size() == 1:
            processes = [self.process_resume_state()]
        elif self.gathered_resume_states and self.gathered_resume_states[0] == self.iter:
            processes = self.gathered_resume_states[1]
        else:  # a save outside the checkpoint schedule: only the main process's state
            processes = [self.process_resume_state()]
        state["resume"] = {"processes": processes}
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        loader = self._trainer.data_loader
        processes = state_dict.get("resume", {}).get("processes", [])
        if len(processes) == comm.get_world_size():
            own = processes[comm.get_rank()]
            loader.load_state_dict(own["data"])
            restore_rng_states(own["rng"])
            return
        seed = processes[0]["data"]["seed"] if processes else loader.seed
        found = (
            f"the data-stream states of {len(processes)} process(es), this run has "
            f"{comm.get_world_size()}"
            if processes
            else "no data-stream state (an older checkpoint)"
        )
        logger.warning(
            "The checkpoint holds %s: the data continue after iteration %d with seed %d, but "
            "batches and augmentations differ from those of an uninterrupted run.",
            found,
            self.iter,
            seed,
        )
        loader.restart(seed, completed_batches=self.iter + 1)

    def train(self):
        """Run training (Detectron2's DefaultTrainer.train).

        A GSNetUserError (a bad sample reached by the data loader, a non-finite loss, a full
        disk) stops training with an error of the same type whose message also names the
        iteration and the last complete checkpoint. Other exceptions keep their traceback.

        Returns:
            OrderedDict of results, when TEST.EXPECTED_RESULTS asks for them to be verified.
        """
        try:
            return super().train()
        except GSNetUserError as error:
            message = f"Training stopped at iteration {self.iter}: {user_error_message(error)}"
            raise type(error)(f"{message}\n{self._resume_hint()}") from error

    def _resume_hint(self):
        if not self.checkpointer.has_checkpoint():
            return "No checkpoint was written yet: fix the problem and rerun the command."
        return (
            f"The last complete checkpoint is {self.checkpointer.get_checkpoint_file()}: fix the "
            "problem and rerun the same command with --resume to continue from it."
        )

    @classmethod
    def build_train_loader(cls, cfg, seed=None):
        """The resumable training stream (:class:`gsnet.data.ResumableTrainLoader`) of
        DATASETS.TRAIN, mapped by GSNetSemanticDatasetMapper, in batches of
        IMS_PER_BATCH / (number of processes).

        Args:
            seed (int or None): the seed of the shuffle and the augmentations; None: SEED, or,
                when SEED is negative, a random seed shared by all processes (checkpoints store
                it, so a resumed run keeps it).
        """
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            raise ConfigError(
                f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN!r} is not supported: "
                "GSNet trains with 'TrainingSampler' (an infinite shuffled stream)."
            )
        world_size = comm.get_world_size()
        if cfg.SOLVER.IMS_PER_BATCH % world_size:
            raise ConfigError(
                f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by the "
                f"{world_size} training processes; make it a multiple."
            )
        check_registered(cfg.DATASETS.TRAIN, "DATASETS.TRAIN")
        if seed is None:
            seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        dataset_dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
        return ResumableTrainLoader(
            dataset_dicts,
            GSNetSemanticDatasetMapper(cfg, True),
            batch_size=cfg.SOLVER.IMS_PER_BATCH // world_size,
            seed=int(seed),
            num_workers=cfg.DATALOADER.NUM_WORKERS,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            rank=comm.get_rank(),
            world_size=world_size,
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=GSNetTestDatasetMapper(cfg))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return GSNetSemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        param_groups = build_optimizer_param_groups(cfg, model)
        solver = cfg.SOLVER
        if solver.OPTIMIZER == "ADAMW":
            optimizer_class, kwargs = torch.optim.AdamW, {}
        elif solver.OPTIMIZER == "SGD":
            optimizer_class, kwargs = torch.optim.SGD, {"momentum": solver.MOMENTUM}
        else:
            raise ConfigError(
                f"Unknown SOLVER.OPTIMIZER {solver.OPTIMIZER!r}; choose 'ADAMW' or 'SGD'."
            )
        clipping = solver.CLIP_GRADIENTS
        if clipping.ENABLED and clipping.CLIP_TYPE == "full_model" and clipping.CLIP_VALUE > 0:
            optimizer_class = with_full_model_gradient_clipping(
                optimizer_class, clipping.CLIP_VALUE
            )
            return optimizer_class(param_groups, solver.BASE_LR, **kwargs)
        return maybe_add_gradient_clipping(cfg, optimizer_class)(
            param_groups, solver.BASE_LR, **kwargs
        )

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate every dataset of DATASETS.TEST with its own vocabulary.

        Returns:
            OrderedDict: dataset name -> results (also when there is a single dataset).
        """
        check_registered(cfg.DATASETS.TEST, "DATASETS.TEST")
        gsnet = unwrap(model)
        default_vocabulary = gsnet.test_class_names
        results = OrderedDict()
        try:
            for index, dataset_name in enumerate(cfg.DATASETS.TEST):
                metadata = MetadataCatalog.get(dataset_name)
                if hasattr(metadata, "class_json"):
                    gsnet.set_test_class_names(load_class_names(metadata.class_json))
                evaluator = (
                    evaluators[index]
                    if evaluators is not None
                    else cls.build_evaluator(cfg, dataset_name)
                )
                data_loader = cls.build_test_loader(cfg, dataset_name)
                results[dataset_name] = inference_on_dataset(model, data_loader, evaluator)
                if comm.is_main_process():
                    logger.info("Evaluation results for %s in csv format:", dataset_name)
                    print_csv_format(results[dataset_name])
        finally:
            gsnet.set_test_class_names(default_vocabulary)
        return results
