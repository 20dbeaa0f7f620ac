"""The helpers every module shares (resnet_jax/utils.py): errors as one line,
nested dicts as dotted fields."""

from resnet_jax import utils


def test_an_error_is_one_line_cut_to_the_limit_and_named_if_asked():
  error = OSError('disk\n   full:\tno space')
  assert utils.one_line(error) == 'disk full: no space'
  assert utils.one_line(error, named=True) == 'OSError: disk full: no space'
  long = ValueError('x' * 300)
  assert utils.one_line(long, 200) == 'x' * 197 + '...'
  assert utils.one_line('short', 200) == 'short'


def test_nested_dicts_flatten_to_dotted_fields_with_empty_ones_as_leaves():
  assert utils.flatten({'a': 1, 'b': {'c': (2,), 'd': {'e': None}},
                        'f': {}}) == {'a': 1, 'b.c': (2,), 'b.d.e': None,
                                      'f': {}}
  assert utils.flatten({}) == {}
