"""Your own GSNet components, registered from outside the package (README, "Your own component").

Import this module before building the model (e.g. at the top of your training script), then
select the components by name in the config:

    MODEL.SEM_SEG_HEAD.SPECIALIST_ENCODER ConvSpecialistEncoder
    MODEL.SEM_SEG_HEAD.DECODER_DINO_GUIDANCE_DIMS [0,0]
    MODEL.SEM_SEG_HEAD.DECODER_DINO_GUIDANCE_PROJ_DIMS [0,0]
    MODEL.SEM_SEG_HEAD.FUSION_TYPE MeanCostFusion
"""

from detectron2.layers import ShapeSpec
from torch import nn

from gsnet.modeling.encoder import Encoder
from gsnet.modeling.fusion import FUSION_REGISTRY, cost_volume
from gsnet.modeling.specialist import SPECIALIST_REGISTRY


@SPECIALIST_REGISTRY.register()
class ConvSpecialistEncoder(Encoder):
    """A two-layer convnet as the specialist: dense features on the cost-volume grid."""

    def __init__(self, cfg, cost_volume_shape: ShapeSpec):
        super().__init__()
        self.shape = cost_volume_shape  # channels D and the H x W grid to produce
        self.input_size = (8 * cost_volume_shape.height, 8 * cost_volume_shape.width)
        self.net = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=4, stride=4),
            nn.GELU(),
            nn.Conv2d(64, cost_volume_shape.channels, kernel_size=2, stride=2),
        )

    def output_shape(self):
        return {"dense": self.shape}

    def forward(self, images):
        return {"dense": self.net(images)}


@FUSION_REGISTRY.register()
class MeanCostFusion(nn.Module):
    """The mean of the two streams' cost volumes, embedded by one 3x3 convolution."""

    def __init__(self, cfg, *, feature_dim: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Conv2d(1, embed_dim, kernel_size=3, padding=1)

    def forward(self, generalist, specialist, text):
        volume = (cost_volume(generalist, text) + cost_volume(specialist, text)) / 2
        B, T, H, W = volume.shape
        return self.embed(volume.reshape(B * T, 1, H, W)).view(B, T, -1, H, W)
