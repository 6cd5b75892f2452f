"""A small CNN trained in fp32 on scikit-learn digits keeps its accuracy in int8."""

import numpy as np

import jaxtiny as jt
from jaxtiny import datasets, models, pretrain


def test_int8_accuracy_within_1_5_points_of_fp32():
  x_train, y_train, x_test, y_test = datasets.digits()
  model = models.DigitsCNN()
  variables = pretrain.fit_fp32(model, x_train, y_train, epochs=25)
  fp32 = pretrain.accuracy(model.apply(variables, x_test), y_test)
  assert fp32 > 0.93  # the float model itself has learned the task

  qm = jt.quantize(model, variables, x_train)
  # The layers the model is made of all made it into the int8 graph.
  assert [n.op for n in qm.nodes].count("conv2d") == 3
  assert qm.params["Conv_1"]["weight"].shape == (16, 3, 3, 1)  # depthwise, OHWI
  int8 = pretrain.accuracy(qm.apply(qm.quantize_input(x_test)), y_test)
  assert int8 >= fp32 - 0.015, (fp32, int8)
  # Logits of the int8 model track the float ones, not just the argmax.
  logits = qm.dequantize_output(qm.apply(qm.quantize_input(x_test)))
  ref = np.asarray(model.apply(variables, x_test))
  assert np.corrcoef(logits.ravel(), ref.ravel())[0, 1] > 0.98
