"""Layer 3: the callback system: training events, the handler that fires them, the Recorder,
annealing functions and the parameter scheduler."""
