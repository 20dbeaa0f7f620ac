"""Exports one run (or a release) for serving: ONNX, or a jax.export file.

  python -m resnet_jax.export --workdir=resnet_jax/pretrained/resnet20 \
      --out=resnet20.onnx    # or --out=resnet20.jax

Both take uint8 images (N, H, W, C), any N, and return float32 logits
(N, classes): the normalisation is inside, as `inference.Loaded.logits`
computes them. The format follows --out's suffix (.onnx or .jax), or
--format. A .jax file (`jax.export`, StableHLO) loads only in the JAX
releases of about six months after the one that wrote it (jax.export's
compatibility window): it is for serving, not an archive; the release's
weights are. Refused in one line: an ensemble, an --out that exists, and
(ONNX only) a model computing in bfloat16.
"""

import os

from absl import flags
from absl import logging
import numpy as np

from resnet_jax import cli
from resnet_jax import utils
from resnet_jax.core import models
from resnet_jax.read import inference
from resnet_jax.run import workdir as workdir_lib

FORMATS = ('onnx', 'jax')
# Platforms a .jax file is lowered for (it runs on any of them): lowering
# needs no such device here.
JAX_PLATFORMS = ('cpu', 'cuda')
# ONNX operator set 17 (ONNX 1.12, 2022): every operator used here has had
# its current form since, so that older runtimes read the file too.
ONNX_OPSET = 17
ONNX_IR_VERSION = 8

FLAGS = flags.FLAGS


def jax_export(loaded: inference.Loaded) -> bytes:
  """`loaded`'s logits as a serialised `jax.export.Exported`, batch symbolic.

  The weights are constants inside: deserialize it and call it on images.
  """
  import jax  # pylint: disable=g-import-not-at-top
  variables = loaded.variables
  logits = jax.jit(lambda images: loaded.logits_fn(variables, images))
  batch, = jax.export.symbolic_shape('batch')
  exported = jax.export.export(logits, platforms=JAX_PLATFORMS)(
      jax.ShapeDtypeStruct((batch, *loaded.image_shape), np.uint8))
  return bytes(exported.serialize())


class _OnnxGraph:
  """The ONNX nodes and weights of one ResNet, added as models.py applies it.

  Written with the `onnx` package from the Flax parameters, not with
  jax2onnx: jax2onnx 0.17.1 (the newest) requires orbax-checkpoint<0.11.37,
  which this project's Orbax range excludes, and pulls in several unrelated
  packages; a CIFAR ResNet needs only nine ONNX operators.
  """

  def __init__(self, variables: dict):
    from onnx import helper  # pylint: disable=g-import-not-at-top
    self._helper = helper
    self.params = variables['params']
    self.stats = variables['batch_stats']
    self.nodes, self.weights = [], {}

  def _name(self, base: str) -> str:
    return f'{base}_{len(self.nodes)}'

  def weight(self, name: str, value) -> str:
    self.weights[name] = np.ascontiguousarray(value)
    return name

  def op(self, op_type: str, inputs, name: str, **attributes) -> str:
    out = self._name(name)
    self.nodes.append(self._helper.make_node(op_type, list(inputs), [out],
                                             name=out, **attributes))
    return out

  def conv(self, x, path, stride):
    kernel = np.asarray(_get(self.params, path)['kernel'])  # HWIO
    h, w = kernel.shape[:2]
    pad = [(h - 1) // 2, (w - 1) // 2] * 2  # models.py: 3x3 pad 1, 1x1 none.
    return self.op('Conv', [x, self.weight(
        '/'.join(path) + '/kernel', kernel.transpose(3, 2, 0, 1))],
                   '/'.join(path), strides=[stride, stride], pads=pad,
                   kernel_shape=[h, w])

  def bn(self, x, path, epsilon):
    name = '/'.join(path)
    p, s = _get(self.params, path), _get(self.stats, path)
    inputs = [self.weight(f'{name}/{key}', np.asarray(tree[key]))
              for tree, key in ((p, 'scale'), (p, 'bias'), (s, 'mean'),
                                (s, 'var'))]
    return self.op('BatchNormalization', [x, *inputs], name,
                   epsilon=float(epsilon))

  def relu(self, x):
    return self.op('Relu', [x], 'relu')

  def add(self, x, y):
    return self.op('Add', [x, y], 'add')

  def option_a(self, x, in_channels, out_channels, stride):
    """Shortcut option A (models.shortcut): subsample, zero-pad channels."""
    if stride != 1:
      x = self.op('Slice', [
          x, self.weight(self._name('starts'), np.array([0, 0], np.int64)),
          self.weight(self._name('ends'), np.array([2**62] * 2, np.int64)),
          self.weight(self._name('axes'), np.array([2, 3], np.int64)),
          self.weight(self._name('steps'), np.array([stride] * 2, np.int64))],
                  'subsample')
    extra = out_channels - in_channels
    pads = np.array([0, extra // 2, 0, 0, 0, extra - extra // 2, 0, 0],
                    np.int64)  # NCHW: begins, then ends.
    return self.op('Pad', [x, self.weight(self._name('pads'), pads)],
                   'pad_channels')


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _onnx_block(g: _OnnxGraph, x, name, model: models.ResNet, in_channels,
                planes, stride):
  """One block of models.py (its four kinds) in ONNX; returns its output and
  channels."""
  bottleneck = model.block == 'bottleneck'
  out = planes * (models.BOTTLENECK_EXPANSION if bottleneck else 1)
  eps = model.bn_epsilon
  changes_shape = stride != 1 or in_channels != out

  def shortcut(skip_in, with_bn):
    if not changes_shape:
      return skip_in
    if model.shortcut == 'B':
      y = g.conv(skip_in, (name, 'proj_conv'), stride)
      return g.bn(y, (name, 'proj_bn'), eps) if with_bn else y
    return g.option_a(skip_in, in_channels, out, stride)

  # Convolutions, their strides: basic 3x3 (stride), 3x3; bottleneck 1x1,
  # 3x3 (stride), 1x1.
  strides = (1, stride, 1) if bottleneck else (stride, 1)
  if model.preact:
    p = g.relu(g.bn(x, (name, 'bn1'), eps))
    y = p
    for i, s in enumerate(strides, start=1):
      if i > 1:
        y = g.relu(g.bn(y, (name, f'bn{i}'), eps))
      y = g.conv(y, (name, f'conv{i}'), s)
    return g.add(y, shortcut(p if changes_shape else x, False)), out
  y = x
  for i, s in enumerate(strides, start=1):
    y = g.bn(g.conv(y, (name, f'conv{i}'), s), (name, f'bn{i}'), eps)
    if i < len(strides):
      y = g.relu(y)
  return g.relu(g.add(y, shortcut(x, True))), out


def onnx_model(loaded: inference.Loaded):
  """`loaded`'s logits as an onnx.ModelProto: input 'images', uint8
  (N, H, W, C); output 'logits', float32 (N, classes)."""
  import onnx  # pylint: disable=g-import-not-at-top
  from onnx import helper  # pylint: disable=g-import-not-at-top
  from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  model = loaded.model
  if np.dtype(model.dtype) != np.float32:
    raise ValueError(
        f'the model computes in {np.dtype(model.dtype).name}: an ONNX export '
        'computes in float32 and would not give its logits; export it with '
        '--format=jax')
  g = _OnnxGraph(loaded.variables)
  x = g.op('Cast', ['images'], 'to_float', to=onnx.TensorProto.FLOAT)
  x = g.op('Sub', [x, g.weight('mean', np.asarray(loaded.mean, np.float32))],
           'sub_mean')
  x = g.op('Div', [x, g.weight('std', np.asarray(loaded.std, np.float32))],
           'div_std')
  x = g.op('Transpose', [x], 'to_nchw', perm=[0, 3, 1, 2])
  x = g.conv(x, ('stem_conv',), 1)
  if not model.preact:
    x = g.relu(g.bn(x, ('stem_bn',), model.bn_epsilon))
  n = models.blocks_per_stage(model.depth, model.block)
  channels = models.STEM_WIDTH
  for s, base in enumerate(model.stage_widths, start=1):
    for b in range(1, n + 1):
      x, channels = _onnx_block(g, x, f'stage{s}_block{b}', model, channels,
                                base * model.width,
                                2 if s > 1 and b == 1 else 1)
  if model.preact:
    x = g.relu(g.bn(x, ('final_bn',), model.bn_epsilon))
  x = g.op('GlobalAveragePool', [x], 'pool')
  x = g.op('Flatten', [x], 'flatten', axis=1)
  head = loaded.variables['params']['head']
  g.nodes.append(helper.make_node(
      'Gemm', [x, g.weight('head/kernel', np.asarray(head['kernel'])),
               g.weight('head/bias', np.asarray(head['bias']))], ['logits'],
      name='head'))
  height, width, depth = loaded.image_shape
  graph = helper.make_graph(
      g.nodes, f'resnet{model.depth}',
      [helper.make_tensor_value_info('images', onnx.TensorProto.UINT8,
                                     ['N', height, width, depth])],
      [helper.make_tensor_value_info('logits', onnx.TensorProto.FLOAT,
                                     ['N', model.num_classes])],
      initializer=[numpy_helper.from_array(np.asarray(v, v.dtype), k)
                   for k, v in g.weights.items()])
  proto = helper.make_model(
      graph, producer_name='resnet_jax', ir_version=ONNX_IR_VERSION,
      opset_imports=[helper.make_opsetid('', ONNX_OPSET)])
  onnx.checker.check_model(proto, full_check=True)
  return proto


def output_format(out: str, format_: str | None) -> str:
  """'onnx' or 'jax': `format_`, or else --out's suffix."""
  if format_:
    if format_ not in FORMATS:
      raise ValueError(f'--format={format_}: choose one of '
                       f'{", ".join(FORMATS)}')
    return format_
  suffix = os.path.splitext(out)[1].lstrip('.').lower()
  if suffix not in FORMATS:
    raise ValueError(f'--out={out}: name a .onnx or .jax file, or give '
                     '--format=onnx or --format=jax')
  return suffix


def export(workdir: str, out: str, checkpoint='latest', run: int = 0,
           format_: str | None = None) -> str:
  """Writes run `run` of `workdir` (a workdir or a release) to `out` (new);
  returns the format. Every failure is a one-line ValueError, with nothing
  written."""
  out = utils.expand_path(out)
  fmt = output_format(out, format_)
  if os.path.lexists(out):
    raise ValueError(f'--out={out} exists; name a new file')
  parent = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(parent):
    raise ValueError(f'--out={out}: the directory {parent} does not exist')
  if fmt == 'onnx':
    try:
      import onnx  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      raise ValueError("ONNX export needs the onnx package: pip install "
                       "'resnet_jax[export]'") from None
  loaded = inference.load(utils.expand_path(workdir), checkpoint, run=run)
  data = (onnx_model(loaded).SerializeToString() if fmt == 'onnx'
          else jax_export(loaded))
  workdir_lib.write_file(out, data)
  return fmt


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.quiet_start(logging.WARNING)
  selection = cli.selection_from_flags()
  fmt = export(**selection, out=FLAGS.out, format_=FLAGS.format)
  print(f'exported run {selection["run"]} of {selection["workdir"]} as '
        f'{"ONNX" if fmt == "onnx" else "jax.export"} into {FLAGS.out}: '
        f'{os.path.getsize(FLAGS.out) / 1e6:.2f} MB')


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  cli.define_selection_flags(ensemble=False)
  cli.define_path('out', None, 'The file to write: model.onnx (ONNX) or '
                  'model.jax (jax.export); it must not exist.')
  flags.DEFINE_enum('format', None, FORMATS, "'onnx' or 'jax'; default: "
                    "--out's suffix.")
  flags.mark_flag_as_required('out')


if __name__ == '__main__':
  define_flags()
  cli.start(main)
