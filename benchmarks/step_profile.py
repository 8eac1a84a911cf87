"""Thin wrapper: the benchmark lives in `pihc.bench.step_profile` so `pihc bench` can run it too."""

from pihc.bench.step_profile import main

if __name__ == "__main__":
    main()
