import pytest

from jaxtiny.datasets import shared_models_dir


@pytest.fixture(scope="session")
def models_dir():
  d = shared_models_dir()
  if d is None:
    pytest.skip("the shared int8 models (../shared/models) are not beside this checkout")
  return d
