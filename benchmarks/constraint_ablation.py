"""Thin wrapper: the benchmark lives in `pihc.bench.constraint_ablation` so `pihc bench` can run it too."""

from pihc.bench.constraint_ablation import main

if __name__ == "__main__":
    main()
