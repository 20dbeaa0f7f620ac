"""Times our ResNet's train and eval steps in PyTorch: the comparison point.

  python -m experiments.torch_benchmark --depth=20 --batch_size=128
  python -m experiments.torch_benchmark --device=cuda --variants=eager_cl_f32,compiled_cl_bf16

The same network (torch_resnet.py, checked logit for logit against
models.py) and step as benchmark.py (SGD, momentum 0.9, L2 decay 1e-4) on
synthetic data already on the device. Each variant (eager NCHW/channels_last,
float32/bfloat16 autocast, torch.compile) reports its first step apart from
the median of the timed ones; a failing variant is reported with its error.
On a GPU cuDNN autotunes and float32 convolutions run in TF32, as in XLA.
The last line of the output is one JSON object.
"""

import argparse
import contextlib
import dataclasses
import gc
import json
import platform
import statistics
import sys
import time
import traceback

try:
  import torch
except ImportError:  # The optional extra: pip install -e '.[torch]'.
  if __name__ != '__main__':
    raise
  print("error: PyTorch is not installed; install the comparison's extra "
        "with pip install -e '.[torch]'", file=sys.stderr)
  sys.exit(1)
from torch.nn import functional as F  # pylint: disable=g-import-not-at-top

from experiments import torch_resnet


@dataclasses.dataclass(frozen=True)
class Variant:
  memory_format: str  # 'contiguous' (NCHW) or 'channels_last' (NHWC).
  dtype: str  # 'float32', or 'bfloat16' for autocast (parameters stay float32).
  compiled: bool


VARIANTS = {
    'eager_nchw_f32': Variant('contiguous', 'float32', False),
    'eager_cl_f32': Variant('channels_last', 'float32', False),
    'eager_cl_bf16': Variant('channels_last', 'bfloat16', False),
    'compiled_cl_f32': Variant('channels_last', 'float32', True),
    'compiled_cl_bf16': Variant('channels_last', 'bfloat16', True),
}
_MEMORY_FORMATS = {'contiguous': torch.contiguous_format,
                   'channels_last': torch.channels_last}


def _parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--depth', type=int, default=20, help='6n+2')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument(
      '--device', choices=('cpu', 'cuda'),
      default='cuda' if torch.cuda.is_available() else 'cpu')
  parser.add_argument('--variants', default=','.join(VARIANTS),
                      help=f'comma-separated, of: {", ".join(VARIANTS)}')
  parser.add_argument('--warmup_steps', type=int, default=3,
                      help='untimed steps after the first')
  parser.add_argument('--timed_steps', type=int, default=20)
  parser.add_argument(
      '--compile_mode', default='default',
      choices=('default', 'reduce-overhead', 'max-autotune',
               'max-autotune-no-cudagraphs'),
      help="torch.compile's mode ('reduce-overhead': CUDA graphs)")
  args = parser.parse_args(argv)
  args.variants = [v.strip() for v in args.variants.split(',') if v.strip()]
  unknown = [v for v in args.variants if v not in VARIANTS]
  if unknown:
    parser.error(f'unknown variants {unknown}; choose from {list(VARIANTS)}')
  if args.device == 'cuda' and not torch.cuda.is_available():
    parser.error('--device=cuda, but PyTorch sees no CUDA device')
  return args


def _device_name(device):
  if device.type == 'cuda':
    return torch.cuda.get_device_name(device)
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'cpu'


def _seconds(step, sync):
  start = time.perf_counter()
  step()
  sync()
  return time.perf_counter() - start


def _median_seconds(step, sync, num_steps):
  return statistics.median(_seconds(step, sync) for _ in range(num_steps))


def run_variant(variant: Variant, args, device):
  """The timings of one variant; raises whatever building or running raises."""
  torch.manual_seed(0)
  memory_format = _MEMORY_FORMATS[variant.memory_format]
  model = torch_resnet.ResNet(depth=args.depth).to(
      device, memory_format=memory_format)
  images = torch.randn(args.batch_size, 3, 32, 32, device=device).to(
      memory_format=memory_format)
  labels = torch.randint(0, 10, (args.batch_size,), device=device)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                              nesterov=False, weight_decay=1e-4, foreach=True)

  def precision():
    if variant.dtype == 'bfloat16':
      return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()

  def loss_fn(images, labels):
    with precision():
      return F.cross_entropy(model(images), labels)

  def predict(images):
    with precision():
      return model(images)

  if variant.compiled:
    torch._dynamo.reset()  # pylint: disable=protected-access
    loss_fn = torch.compile(loss_fn, mode=args.compile_mode)
    predict = torch.compile(predict, mode=args.compile_mode)

  def train_step():
    optimizer.zero_grad(set_to_none=True)
    loss_fn(images, labels).backward()
    optimizer.step()

  def eval_step():
    with torch.no_grad():
      predict(images)

  if device.type == 'cuda':
    sync = lambda: torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
  else:
    sync = lambda: None

  model.train()
  compile_seconds = _seconds(train_step, sync)
  _median_seconds(train_step, sync, args.warmup_steps)
  train_s = _median_seconds(train_step, sync, args.timed_steps)
  peak = (torch.cuda.max_memory_allocated(device) / 2**20
          if device.type == 'cuda' else None)

  model.eval()
  eval_compile_seconds = _seconds(eval_step, sync)
  _median_seconds(eval_step, sync, args.warmup_steps)
  eval_s = _median_seconds(eval_step, sync, args.timed_steps)
  return {
      'train_images_per_second': round(args.batch_size / train_s, 1),
      'train_step_ms': round(1e3 * train_s, 2),
      'eval_images_per_second': round(args.batch_size / eval_s, 1),
      'eval_step_ms': round(1e3 * eval_s, 2),
      'compile_seconds': round(compile_seconds, 2),
      'eval_compile_seconds': round(eval_compile_seconds, 2),
      'peak_memory_mb': None if peak is None else round(peak, 1),
  }


_TIMINGS = ('train_images_per_second', 'train_step_ms',
            'eval_images_per_second', 'eval_step_ms', 'compile_seconds',
            'eval_compile_seconds', 'peak_memory_mb')


def _one_line(error):
  message = str(error).strip().splitlines()
  return f'{type(error).__name__}: {message[0] if message else ""}'[:300]


def _print_table(results):
  columns = [('variant', 'variant'), ('dtype', 'dtype'),
             ('memory_format', 'format'), ('compiled', 'compiled'),
             ('train_images_per_second', 'train img/s'),
             ('train_step_ms', 'train ms'),
             ('eval_images_per_second', 'eval img/s'),
             ('eval_step_ms', 'eval ms'), ('compile_seconds', 'first step s'),
             ('eval_compile_seconds', 'first eval s'),
             ('peak_memory_mb', 'peak MiB')]
  rows = [[header for _, header in columns]]
  for result in results:
    rows.append(['-' if result.get(key) is None else str(result[key])
                 for key, _ in columns])
  widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
  for i, row in enumerate(rows):
    print('  '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if i == 0:
      print('  '.join('-' * w for w in widths))
  for result in results:
    if result['error']:
      print(f'{result["variant"]} failed: {result["error"]}')


def main(argv=None):
  args = _parse_args(argv)
  device = torch.device(args.device)
  if device.type == 'cuda':
    torch.backends.cudnn.benchmark = True
  num_params = torch_resnet.num_params(torch_resnet.ResNet(depth=args.depth))
  print(f'PyTorch {torch.__version__}, {_device_name(device)}, '
        f'{torch.get_num_threads()} threads; ResNet-{args.depth} '
        f'({num_params:,} parameters), batch {args.batch_size}, '
        f'{args.warmup_steps} warm-up and {args.timed_steps} timed steps',
        flush=True)

  results = []
  for name in args.variants:
    variant = VARIANTS[name]
    result = {'variant': name, **dataclasses.asdict(variant)}
    result.update(dict.fromkeys(_TIMINGS))
    try:
      result.update(run_variant(variant, args, device))
      result['error'] = None
    except Exception as error:  # pylint: disable=broad-except
      # One variant's failure (torch.compile without a compiler, an operator
      # missing in bfloat16) must not hide the others' numbers.
      traceback.print_exc(file=sys.stderr)
      result['error'] = _one_line(error)
    results.append(result)
    print(f'{name}: {result["error"] or "done"}', file=sys.stderr, flush=True)
    gc.collect()
    if device.type == 'cuda':
      torch.cuda.empty_cache()

  _print_table(results)
  summary = {
      'framework': 'pytorch',
      'torch_version': torch.__version__,
      'device': _device_name(device),
      'platform': 'gpu' if device.type == 'cuda' else 'cpu',
      'model': f'resnet{args.depth}',
      'parameters': num_params,
      'batch_size': args.batch_size,
      'input': 'synthetic',
      'threads': torch.get_num_threads(),
      'warmup_steps': args.warmup_steps,
      'timed_steps': args.timed_steps,
      'compile_mode': args.compile_mode,
      'cudnn_allow_tf32': (torch.backends.cudnn.allow_tf32
                           if device.type == 'cuda' else None),
      'results': results,
  }
  print(json.dumps(summary), flush=True)


if __name__ == '__main__':
  main()
