"""Thin wrapper: the benchmark lives in `pihc.bench.accuracy` so `pihc bench` can run it too."""

from pihc.bench.accuracy import main

if __name__ == "__main__":
    main()
