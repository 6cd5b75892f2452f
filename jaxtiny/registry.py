"""The rule tables of jaxtiny's jaxpr interpreters (front end and lowering)."""

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def registrar(table: dict[str, Callable]) -> Callable[..., Callable[[F], F]]:
  """`rule = registrar(RULES)`; then `@rule("prim_a", "prim_b")` files a function under
  those primitive names, right after it is written."""

  def rule(*names: str) -> Callable[[F], F]:
    def register(f: F) -> F:
      for n in names:
        table[n] = f
      return f

    return register

  return rule
