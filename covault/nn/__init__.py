"""Neural-network modules on secret tensors, with explicit forward and backward passes.

``Linear``, ``ReLU``, ``Sigmoid``, ``Softmax``, ``Sequential`` and the losses
``BCEWithLogitsLoss``, ``SoftmaxCrossEntropyLoss``, ``MSELoss``. A training step::

    logits = model(xb)
    grad = loss.backward(logits, yb)
    model.backward(grad, scale=loss.scale, input_grad=False)
    optimizer.step()
    optimizer.zero_grad()

Algorithms and costs: ``docs/ml.md``.
"""

from covault.nn.layers import Linear, ReLU, Sigmoid, Softmax, glorot_uniform
from covault.nn.losses import BCEWithLogitsLoss, Loss, MSELoss, SoftmaxCrossEntropyLoss
from covault.nn.module import Module, Parameter, Sequential

__all__ = [
    "BCEWithLogitsLoss",
    "Linear",
    "Loss",
    "MSELoss",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "SoftmaxCrossEntropyLoss",
    "glorot_uniform",
]
