"""Network building blocks: the WideResNet trunk and the task heads."""

from robust_ssl.models.heads import deconv_decoder, linear_head
from robust_ssl.models.wide_resnet import build_wide_resnet, check_depth, feature_dim

__all__ = ["build_wide_resnet", "check_depth", "deconv_decoder", "feature_dim", "linear_head"]
