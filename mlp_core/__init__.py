"""mlp_core: an explicit TensorFlow 2 training system for MLPs on MNIST.

Data flows through the modules in this order:
data -> pipeline -> model -> optim -> step -> loop -> summaries -> analysis.
"""

import os
import sys

__version__ = "0.1.0"


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow without its C++ start-up noise, unless the user chose a log level.

    TF 2.21 logs before absl is initialised, so TF_CPP_MIN_LOG_LEVEL alone cannot silence it: the
    import and the platform probe run with file descriptor 2 pointed at /dev/null. Logical devices
    are not created here, so callers can still split the CPU into several.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
        tf.get_logger().setLevel("ERROR")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()
