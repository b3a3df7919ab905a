"""Text queries: class names -> prompt templates -> CLIP text embeddings.

Shapes: T classes, P prompt templates, D the CLIP joint width (512).

Each class name is formatted into every template; a name holding ", " (synonyms) uses its first
synonym only. Several templates are averaged per class over their L2-normalised embeddings
(CLIP's zero-shot recipe); the paper uses one template.

During training the text tower trains, so embeddings are recomputed at every step (once per
step, shared by all images of the batch). At inference they are cached per vocabulary; the
cache is keyed by the class list and cleared whenever the model's weights may change.
"""

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError

__all__ = ["PROMPT_TEMPLATES", "TextQueries"]

IMAGENET_SELECT_TEMPLATES = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
    "A photo of a {} in the scene",
]


def _imagenet_templates():
    import open_clip

    # CLIP's 80 ImageNet templates, in the published order.
    return [template("{}") for template in open_clip.OPENAI_IMAGENET_TEMPLATES]


PROMPT_TEMPLATES = {
    "single": lambda: ["A photo of a {} in the scene"],
    "imagenet_select": lambda: list(IMAGENET_SELECT_TEMPLATES),
    "imagenet": _imagenet_templates,
}


class TextQueries(nn.Module):
    """Turns a vocabulary into normalised text embeddings with a CLIP text tower.

    Holds no parameters: the text tower is passed in (it belongs to the generalist's CLIP).
    """

    def __init__(self, *, prompt_ensemble_type: str = "single", context_length: int = 77):
        """
        Args:
            prompt_ensemble_type: a key of ``PROMPT_TEMPLATES``.
            context_length: CLIP's token context (77).
        """
        super().__init__()
        import open_clip

        if prompt_ensemble_type not in PROMPT_TEMPLATES:
            raise ConfigError(
                f"Unknown prompt ensemble type {prompt_ensemble_type!r} "
                f"(MODEL.PROMPT_ENSEMBLE_TYPE); choose one of {sorted(PROMPT_TEMPLATES)}."
            )
        self.templates = PROMPT_TEMPLATES[prompt_ensemble_type]()
        self.context_length = context_length
        self.tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}

    def clear_cache(self):
        self._cache.clear()

    def prompts(self, class_names: list[str]) -> list[str]:
        """The T * P prompt texts, class-major."""
        return [
            template.format(name.split(", ")[0])
            for name in class_names
            for template in self.templates
        ]

    def check_lengths(self, class_names: list[str]):
        """Raise a ConfigError naming the first class name whose prompt does not fit CLIP's
        token context (start and end tokens included; the published tokenizer raised too)."""
        for name in class_names:
            for text in self.prompts([name]):
                length = len(self.tokenizer.encode(text)) + 2
                if length > self.context_length:
                    raise ConfigError(
                        f"Class name {name!r} is too long for the text encoder: its prompt "
                        f"{text!r} takes {length} tokens, over CLIP's {self.context_length}-token "
                        "context: shorten the name."
                    )

    def tokenize(self, class_names: list[str]) -> torch.Tensor:
        """(T * P, context_length) token ids, class-major. Raises on a name too long for CLIP."""
        self.check_lengths(class_names)
        return self.tokenizer(self.prompts(class_names))

    def forward(self, class_names, text_encoder, *, device, use_cache: bool) -> torch.Tensor:
        """
        Args:
            class_names: the vocabulary (T names).
            text_encoder: callable (N, context_length) token ids -> (N, D) embeddings.
            device: where the token ids go (the text encoder's device).
            use_cache: serve and store embeddings per vocabulary (inference only).
        Returns:
            (T, D) L2-normalised text embeddings.
        """
        key = tuple(class_names)
        if use_cache and key in self._cache:
            return self._cache[key]
        tokens = self.tokenize(list(class_names)).to(device)
        embeddings = F.normalize(text_encoder(tokens), dim=-1)
        if len(self.templates) > 1:
            embeddings = embeddings.view(len(class_names), len(self.templates), -1).mean(dim=1)
            embeddings = F.normalize(embeddings, dim=-1)
        if use_cache:
            self._cache[key] = embeddings
        return embeddings
