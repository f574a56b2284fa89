"""saikei.nn (`sk.nn`): layers and combinators built on saikei.core.

Every layer is a `sk.Struct` following the `Layer` calling convention
`layer(argument, /, **side_inputs)`.
"""

from saikei.nn._attention import Attention as Attention
from saikei.nn._attention import KVCachingAttention as KVCachingAttention
from saikei.nn._attention_masks import ApplyCausalAttentionMask as ApplyCausalAttentionMask
from saikei.nn._attention_masks import (
    ApplyCausalSlidingWindowAttentionMask as ApplyCausalSlidingWindowAttentionMask,
)
from saikei.nn._attention_masks import ApplyExplicitAttentionMask as ApplyExplicitAttentionMask
from saikei.nn._basic_ops import CastToDType as CastToDType
from saikei.nn._basic_ops import Elementwise as Elementwise
from saikei.nn._basic_ops import Softmax as Softmax
from saikei.nn._basic_ops import TanhSoftCap as TanhSoftCap
from saikei.nn._combinators import BranchAndAddTogether as BranchAndAddTogether
from saikei.nn._combinators import BranchAndMultiplyTogether as BranchAndMultiplyTogether
from saikei.nn._combinators import Residual as Residual
from saikei.nn._dropout import DisabledDropout as DisabledDropout
from saikei.nn._dropout import StochasticDropout as StochasticDropout
from saikei.nn._dropout import maybe_dropout as maybe_dropout
from saikei.nn._einsum import NamedEinsum as NamedEinsum
from saikei.nn._embeddings import ApplyRoPE as ApplyRoPE
from saikei.nn._embeddings import ApplyRoPEToSubset as ApplyRoPEToSubset
from saikei.nn._embeddings import EmbeddingDecode as EmbeddingDecode
from saikei.nn._embeddings import EmbeddingLookup as EmbeddingLookup
from saikei.nn._embeddings import EmbeddingTable as EmbeddingTable
from saikei.nn._grouping import CheckedSequential as CheckedSequential
from saikei.nn._grouping import CheckStructure as CheckStructure
from saikei.nn._grouping import Identity as Identity
from saikei.nn._grouping import NamedGroup as NamedGroup
from saikei.nn._grouping import Sequential as Sequential
from saikei.nn._grouping import inline_anonymous_sequentials as inline_anonymous_sequentials
from saikei.nn._grouping import inline_groups as inline_groups
from saikei.nn._grouping import is_anonymous_sequential as is_anonymous_sequential
from saikei.nn._grouping import is_sequential_or_named as is_sequential_or_named
from saikei.nn._initializers import (
    LinearOperatorWeightInitializer as LinearOperatorWeightInitializer,
)
from saikei.nn._initializers import (
    check_unique_axis_names_for_initializer as check_unique_axis_names_for_initializer,
)
from saikei.nn._initializers import constant_initializer as constant_initializer
from saikei.nn._initializers import variance_scaling_initializer as variance_scaling_initializer
from saikei.nn._initializers import xavier_normal_initializer as xavier_normal_initializer
from saikei.nn._initializers import xavier_uniform_initializer as xavier_uniform_initializer
from saikei.nn._initializers import zero_initializer as zero_initializer
from saikei.nn._layer import Layer as Layer
from saikei.nn._layer_stack import LayerStack as LayerStack
from saikei.nn._layer_stack import LayerStackGetAttrKey as LayerStackGetAttrKey
from saikei.nn._layer_stack import layerstack_axes_from_keypath as layerstack_axes_from_keypath
from saikei.nn._layer_stack_types import LayerStackVarBehavior as LayerStackVarBehavior
from saikei.nn._linear import AddBias as AddBias
from saikei.nn._linear import Affine as Affine
from saikei.nn._linear import ConstantRescale as ConstantRescale
from saikei.nn._linear import Linear as Linear
from saikei.nn._linear import LinearInPlace as LinearInPlace
from saikei.nn._linear import RenameAxes as RenameAxes
from saikei.nn._linear import contract as contract
from saikei.nn._parameters import ParameterLike as ParameterLike
from saikei.nn._parameters import assert_no_parameter_slots as assert_no_parameter_slots
from saikei.nn._parameters import derive_param_key as derive_param_key
from saikei.nn._parameters import make_parameter as make_parameter
from saikei.nn._standardization import LayerNorm as LayerNorm
from saikei.nn._standardization import RMSLayerNorm as RMSLayerNorm
from saikei.nn._standardization import RMSStandardize as RMSStandardize
from saikei.nn._standardization import Standardize as Standardize
