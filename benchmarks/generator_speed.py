"""Thin wrapper: the benchmark lives in `pihc.bench.generator_speed` so `pihc bench generator` can run it too."""

from pihc.bench.generator_speed import main

if __name__ == "__main__":
    main()
