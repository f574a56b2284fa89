"""saikei.viz (`sk.ts`): treescope integration for saikei types.

Importing this package registers saikei's public import paths with treescope
(so roundtrip renderings read `saikei.nn.Linear(...)`), and plugs the
renderers of Structs, layers, NamedArrays, variables, shape specs and
selections into the hooks their treescope methods call (saikei.core never
imports saikei.viz; see `saikei.core._viz_hooks`).

Example:
  >>> from saikei import viz as ts
  >>> from saikei import sk
  >>> ts.render_to_text(sk.nn.Identity())
  'Identity()'
"""

# --- treescope's own names, re-exported as penzai's `pz.ts` does ---
from treescope import Autovisualizer as Autovisualizer
from treescope import ChildAutovisualizer as ChildAutovisualizer
from treescope import IPythonVisualization as IPythonVisualization
from treescope import active_autovisualizer as active_autovisualizer
from treescope import active_expansion_strategy as active_expansion_strategy
from treescope import active_renderer as active_renderer
from treescope import default_diverging_colormap as default_diverging_colormap
from treescope import default_magic_autovisualizer as default_magic_autovisualizer
from treescope import default_sequential_colormap as default_sequential_colormap
from treescope import register_autovisualize_magic as register_autovisualize_magic
from treescope import register_context_manager_magic as register_context_manager_magic
from treescope import render_to_text as render_to_text
from treescope import using_expansion_strategy as using_expansion_strategy
from treescope.figures import bolded as bolded
from treescope.figures import indented as indented
from treescope.figures import inline as inline
from treescope.figures import styled as styled
from treescope.figures import with_color as with_color
from treescope.figures import with_font_size as with_font_size

# --- end of treescope re-exports ---
# --- Array rendering (owned by the arrays helper: names defined in _arrays_api) ---
from saikei.viz._arrays_api import ArrayAutovisualizer as ArrayAutovisualizer
from saikei.viz._arrays_api import integer_digitbox as integer_digitbox
from saikei.viz._arrays_api import render_array as render_array
from saikei.viz._arrays_api import render_array_sharding as render_array_sharding
from saikei.viz._arrays_api import text_on_color as text_on_color
from saikei.viz._arrays_api import vocab_autovisualizer as vocab_autovisualizer
from saikei.viz._core_hooks import register_core_hooks as _register_core_hooks

# --- end of array rendering section ---
from saikei.viz._data_array_rendering import array_preview_options as array_preview_options
from saikei.viz._figures import Figure as Figure
from saikei.viz._figures import attention_pattern as attention_pattern
from saikei.viz._figures import heatmap as heatmap
from saikei.viz._figures import render_to_html as render_to_html
from saikei.viz._setup import basic_interactive_setup as basic_interactive_setup
from saikei.viz._setup import disable_interactive_context as disable_interactive_context
from saikei.viz._setup import display as display
from saikei.viz._setup import enable_interactive_context as enable_interactive_context
from saikei.viz._setup import register_as_default as register_as_default
from saikei.viz._setup import show as show
from saikei.viz._struct_handlers import register_public_aliases as _register_public_aliases

_register_core_hooks()
_register_public_aliases()
