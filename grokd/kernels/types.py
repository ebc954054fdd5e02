"""The kernel-level types a model names, in one public place: the records it builds to call an op
through ``Kernels`` (``ExpertWeights`` for ``moe``, ``DenseLayerWeights`` for ``decoder_layer``,
``GroupedInt8Weight`` for ``linear`` over the Grok release's int8 parameters), ``PackedWeight`` for
what ``weight_packer`` returns, and the step's ``AttentionMetadata``. Models import these from here
and every op from ``kernels.dispatch``, so which implementation runs is chosen in one place."""

from grokd.kernels.decoder_layer import DenseLayerWeights
from grokd.kernels.linear import PackedWeight
from grokd.kernels.metadata import AttentionMetadata
from grokd.kernels.moe import ExpertWeights
from grokd.kernels.quant import GroupedInt8Weight

__all__ = ["AttentionMetadata", "DenseLayerWeights", "ExpertWeights", "GroupedInt8Weight", "PackedWeight"]
