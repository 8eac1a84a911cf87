"""Data: generators (our own numerical solvers) and PDEBench-layout HDF5 files."""
