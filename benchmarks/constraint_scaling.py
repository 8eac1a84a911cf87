"""Thin wrapper: the benchmark lives in `pihc.bench.constraint_scaling` so `pihc bench constraint` can run it too."""

from pihc.bench.constraint_scaling import main

if __name__ == "__main__":
    main()
