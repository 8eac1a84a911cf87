"""Thin wrapper: the benchmark lives in `pihc.bench.step_cost` so `pihc bench` can run it too."""

from pihc.bench.step_cost import main

if __name__ == "__main__":
    main()
