"""GSNet's Detectron2 trainer: what GSNet adds to ``DefaultTrainer`` and nothing else.

- optimizer parameter groups: LR x CLIP_MULTIPLIER for CLIP's parameters and
  x BACKBONE_MULTIPLIER for the specialist's (matched by module, not by name), weight decay 0
  for normalisation layers (WEIGHT_DECAY_NORM) and embeddings (WEIGHT_DECAY_EMBED);
- full-model gradient-norm clipping (SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model");
- a training step with optional autocast (fp16 with a gradient scaler on CUDA, bf16 on CPU/GPU);
- DistributedDataParallel on CPU (gloo) as on GPUs;
- the pretrained encoders loaded when training starts without MODEL.WEIGHTS;
- evaluation of every test set with its own vocabulary (the dataset's class JSON).
"""

import itertools
import logging
import time
import weakref
from collections import OrderedDict

import torch
from detectron2.data import MetadataCatalog, build_detection_train_loader
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import GSNetCheckpointer, load_pretrained_encoders
from .data import GSNetSemanticDatasetMapper, load_class_names
from .evaluation import GSNetSemSegEvaluator

__all__ = ["GSNetTrainer", "build_optimizer_param_groups"]

logger = logging.getLogger(__name__)

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
    clip_params = {id(p) for p in model.generalist.clip.parameters()}
    specialist = list(model.specialist.vit.parameters()) if model.specialist is not None else []
    specialist_params = {id(p) for p in specialist}
    if any(p.requires_grad for p in specialist) and solver.BACKBONE_MULTIPLIER == 0:
        raise ValueError(
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


class AutocastTrainLoop(SimpleTrainer):
    """SimpleTrainer with the forward pass under autocast: fp16 (CUDA, with a gradient scaler)
    or bf16 (CPU or CUDA, no scaler needed)."""

    def __init__(self, model, data_loader, optimizer, *, precision: torch.dtype, device_type):
        super().__init__(model, data_loader, optimizer)
        self.precision = precision
        self.device_type = device_type
        self.grad_scaler = torch.amp.GradScaler(device_type) if precision == torch.float16 else None

    def run_step(self):
        assert self.model.training, "[AutocastTrainLoop] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast(self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self):
        state = super().state_dict()
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


class GSNetTrainer(DefaultTrainer):
    """Detectron2's DefaultTrainer with GSNet's optimizer, data, checkpointing and evaluation."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__, with DDP that also works on CPU, GSNet's checkpointer and the
        # autocast training step.
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        if comm.get_world_size() > 1:
            on_gpu = next(model.parameters()).is_cuda
            model = DistributedDataParallel(
                model,
                device_ids=[comm.get_local_rank()] if on_gpu else None,
                broadcast_buffers=False,
                # Single-stream ablations leave trainable encoder parameters unused.
                find_unused_parameters=not unwrap(model).use_generalist_image,
            )
        if cfg.SOLVER.AMP.ENABLED:
            self._trainer = AutocastTrainLoop(
                model,
                data_loader,
                optimizer,
                precision=PRECISIONS[cfg.SOLVER.AMP.PRECISION],
                device_type=torch.device(cfg.MODEL.DEVICE).type,
            )
        else:
            self._trainer = SimpleTrainer(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = GSNetCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        """Resume from OUTPUT_DIR's last checkpoint, else load MODEL.WEIGHTS, else start from the
        pretrained encoders (CLIP_WEIGHTS, DINO_WEIGHTS)."""
        if not (resume and self.checkpointer.has_checkpoint()) and not self.cfg.MODEL.WEIGHTS:
            head = self.cfg.MODEL.SEM_SEG_HEAD
            load_pretrained_encoders(
                unwrap(self.model),
                clip_weights=head.CLIP_WEIGHTS,
                specialist_weights=head.DINO_WEIGHTS,
            )
        super().resume_or_load(resume=resume)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=GSNetSemanticDatasetMapper(cfg, True))

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
            raise ValueError(
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
