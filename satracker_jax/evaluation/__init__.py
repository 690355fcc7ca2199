"""Evaluation: raw result files (`results_io`), pytracking-exact metrics (`metrics`), plots and
the `satracker analyze` verb (`analyze`); the benchmark runner (`runner`) tracks and then calls
`analyze.analyze`. Submodules are imported explicitly so that reading results never pulls in
matplotlib or JAX unless needed."""
