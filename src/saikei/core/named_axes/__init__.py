"""Named axes (`sk.nx`): arrays whose axes have names, and `nmap` to compute with them.

A `NamedArray` wraps one array. Some of its axes have names, the others are
positional. Positional code (any `jax.numpy` function) runs on NamedArrays
through `nmap`, which vectorizes over every named axis: axes with the same name
are matched, whatever their position in memory. `untag` turns named axes into
positional ones for a function to see, and `tag` names them again.

saikei has a single NamedArray type: penzai's `NamedArray` and
`NamedArrayView` are both values of it (`NamedArrayBase` and `NamedArrayView`
are aliases kept for migration).

Example:
  >>> import jax.numpy as jnp
  >>> from saikei import sk
  >>> x = sk.nx.wrap(jnp.arange(6.0).reshape(2, 3), "batch", "features")
  >>> norms = sk.nx.nmap(jnp.linalg.norm)(x.untag("features"))
  >>> norms.named_shape
  {'batch': 2}
"""

from saikei.core.named_axes._axis_ops import concatenate as concatenate
from saikei.core.named_axes._axis_ops import order_like as order_like
from saikei.core.named_axes._axis_ops import scan as scan
from saikei.core.named_axes._axis_ops import stack as stack
from saikei.core.named_axes._axis_ops import unstack as unstack
from saikei.core.named_axes._constructors import arange as arange
from saikei.core.named_axes._constructors import full as full
from saikei.core.named_axes._constructors import ones as ones
from saikei.core.named_axes._constructors import random_split as random_split
from saikei.core.named_axes._constructors import zeros as zeros
from saikei.core.named_axes._named_array import AxisName as AxisName
from saikei.core.named_axes._named_array import (
    MislabeledNamedArrayError as MislabeledNamedArrayError,
)
from saikei.core.named_axes._named_array import NamedArray as NamedArray
from saikei.core.named_axes._named_array import NamedArrayBase as NamedArrayBase
from saikei.core.named_axes._named_array import NamedArrayView as NamedArrayView
from saikei.core.named_axes._named_array import TmpPosAxisMarker as TmpPosAxisMarker
from saikei.core.named_axes._named_array import is_namedarray as is_namedarray
from saikei.core.named_axes._named_array import wrap as wrap
from saikei.core.named_axes._nmap import nmap as nmap
