"""The learner: the step's math in-process (``core``), several runs on one base model (``host``),
the Ray actor around them (``actor``) and the driver's blocking handle on it (``client``)."""
