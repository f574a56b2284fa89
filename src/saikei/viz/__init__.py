"""saikei.viz (`sk.ts`): treescope integration for saikei types.

Importing this package registers saikei's public import paths with treescope
(so roundtrip renderings read `saikei.nn.Linear(...)`). Structs, layers,
variables and selections render through their own `__treescope_repr__`
methods, which import their handlers from here lazily.

Example:
  >>> from saikei import viz as ts
  >>> from saikei import sk
  >>> ts.render_to_text(sk.nn.Identity())
  'Identity()'
"""

from treescope import render_to_text as render_to_text
from treescope import using_expansion_strategy as using_expansion_strategy

# --- Array rendering (owned by the arrays helper: names defined in _arrays_api) ---
from saikei.viz._arrays_api import ArrayAutovisualizer as ArrayAutovisualizer
from saikei.viz._arrays_api import integer_digitbox as integer_digitbox
from saikei.viz._arrays_api import render_array as render_array
from saikei.viz._arrays_api import render_array_sharding as render_array_sharding
from saikei.viz._arrays_api import text_on_color as text_on_color
from saikei.viz._arrays_api import vocab_autovisualizer as vocab_autovisualizer

# --- end of array rendering section ---
from saikei.viz._figures import Figure as Figure
from saikei.viz._figures import attention_pattern as attention_pattern
from saikei.viz._figures import heatmap as heatmap
from saikei.viz._figures import render_to_html as render_to_html
from saikei.viz._setup import basic_interactive_setup as basic_interactive_setup
from saikei.viz._setup import display as display
from saikei.viz._setup import register_as_default as register_as_default
from saikei.viz._setup import show as show
from saikei.viz._struct_handlers import register_public_aliases as _register_public_aliases

_register_public_aliases()
