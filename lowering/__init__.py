"""jaxtiny lowering: jaxpr -> op list -> blob, and the numpy reference kernels."""
